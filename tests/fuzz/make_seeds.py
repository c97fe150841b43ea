"""Regenerate the fuzzer's seed corpus (tests/fuzz/corpus/): small valid and broken GGUF files.

Named ok_* / bad_* without the .gguf suffix (the repository ignores *.gguf files).

python tests/fuzz/make_seeds.py
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "support"))

from gguf_cases import (  # noqa: E402
    BASE_KVS,
    T_F32,
    U32,
    as_version,
    base_file,
    gguf_bytes,
    kv,
    malformed_cases,
    scalar,
    tensor_info,
)

BROKEN = [
    "bad_magic",
    "version_1",
    "n_kv_huge",
    "key_length_huge",
    "nested_array",
    "string_array_element_length_huge",
    "duplicate_key",
    "alignment_not_power_of_two",
    "unknown_tensor_type",
    "n_dims_5",
    "dims_product_overflows_int64",
    "row_not_multiple_of_block",
    "offset_misaligned",
    "size_past_end",
    "duplicate_tensor_name",
]


def seeds() -> dict[str, bytes]:
    out = {
        "ok_base": base_file(),
        "ok_base_v2": as_version(base_file(), 2),
        "ok_no_tensors": gguf_bytes(BASE_KVS, [], b""),
        "ok_align_64": gguf_bytes(
            [kv("general.alignment", U32, scalar(U32, 64))],
            [tensor_info("a", [3], T_F32, 0), tensor_info("b", [1], T_F32, 64)],
            b"\1" * 68,
            alignment=64,
        ),
    }
    cases = {c.name: c for c in malformed_cases()}
    for name in BROKEN:
        out[f"bad_{name}"] = cases[name].data
    out["bad_truncated_in_tensor_info"] = base_file()[:300]
    # keys that differ only in bytes that are not UTF-8 (the fuzzer's first finding, in edge.gguf)
    out["ok_non_utf8_keys"] = gguf_bytes(
        [
            kv(b"general.\xccrchitecture", U32, scalar(U32, 0)),
            kv(b"general.\xffrchitecture", U32, scalar(U32, 1)),
        ],
        [tensor_info(b"t\xe9", [1], T_F32, 0)],
        b"\0" * 4,
    )
    return out


def main() -> None:
    corpus = HERE / "corpus"
    corpus.mkdir(exist_ok=True)
    for name, data in seeds().items():
        (corpus / name).write_bytes(data)
    print(f"{len(seeds())} seeds in {corpus}")


if __name__ == "__main__":
    main()

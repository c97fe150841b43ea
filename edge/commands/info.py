"""`grok-edge info`: describe a GGUF file, or this system."""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from edge.gguf import TENSOR_CLASSES, GGUFFile, tensor_class
from edge.system import system_info

# JSON output: arrays longer than this are summarized (length + first elements) instead of listed.
JSON_ARRAY_LIMIT = 256
TEXT_ARRAY_HEAD = 4


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="?", help="a GGUF file")
    parser.add_argument("--system", action="store_true", help="print CPU features and CUDA devices")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    if args.system or not args.file:
        info = system_info()
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            cpu = ", ".join(k for k, v in info["cpu"].items() if v and k != "n_cores")
            print(f"grok-edge {info['version']}")
            print(f"cpu: {info['cpu']['n_cores']} logical cores; {cpu}")
            print(f"cuda: compiled={info['cuda_compiled']} devices={info['cuda_devices']}")
        return 0
    with GGUFFile(args.file) as gguf:
        description = describe(gguf)
    if args.json:
        print(json.dumps(description, indent=2))
    else:
        print_text(description)
    return 0


# ---------------------------------------------------------------------------------------------- model


def _plain(value: Any) -> Any:
    """A metadata value as JSON-ready Python (numpy arrays become lists)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _metadata_entry(value: Any, types: tuple[str, str | None]) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": types[0]}
    if types[1] is not None:
        entry["elem_type"] = types[1]
        entry["length"] = len(value)
        if len(value) > JSON_ARRAY_LIMIT:
            entry["head"] = _plain(value[:16])
            return entry
    entry["value"] = _plain(value)
    return entry


def _tokenizer_summary(md: dict[str, Any]) -> dict[str, Any]:
    tokens = md.get("tokenizer.ggml.tokens")
    return {
        "model": md.get("tokenizer.ggml.model"),
        "vocab_size": len(tokens) if tokens is not None else None,
        "bos_token_id": md.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": md.get("tokenizer.ggml.eos_token_id"),
        "padding_token_id": md.get("tokenizer.ggml.padding_token_id"),
        "unknown_token_id": md.get("tokenizer.ggml.unknown_token_id"),
        "add_bos_token": md.get("tokenizer.ggml.add_bos_token"),
    }


def _bits_per_weight(nbytes: int, params: int) -> float | None:
    return round(8.0 * nbytes / params, 4) if params else None


def describe(gguf: GGUFFile) -> dict[str, Any]:
    """Everything `info` reports about a GGUF file, as JSON-ready data."""
    md = gguf.metadata
    arch = md.get("general.architecture")
    prefix = f"{arch}." if isinstance(arch, str) else None
    hparams = {k: _plain(v) for k, v in md.items() if prefix and k.startswith(prefix)}

    totals: dict[str, dict[str, Any]] = {
        c: {"tensors": 0, "params": 0, "bytes": 0, "bits_per_weight": None} for c in TENSOR_CLASSES
    }
    tensors = []
    for t in gguf.tensors:
        cls = tensor_class(t.name)
        totals[cls]["tensors"] += 1
        totals[cls]["params"] += t.n_elements
        totals[cls]["bytes"] += t.nbytes
        tensors.append(
            {
                "name": t.name,
                "class": cls,
                "type": t.type_name,
                "ne": list(t.ne),
                "shape": list(t.shape),
                "params": t.n_elements,
                "bytes": t.nbytes,
                "offset": t.offset,
            }
        )
    for row in totals.values():
        row["bits_per_weight"] = _bits_per_weight(row["bytes"], row["params"])
    totals = {c: row for c, row in totals.items() if row["tensors"] or c != "other"}
    n_params = sum(t["params"] for t in tensors)
    n_bytes = sum(t["bytes"] for t in tensors)
    return {
        "file": gguf.path,
        "file_size": gguf.file_size,
        "gguf_version": gguf.version,
        "alignment": gguf.alignment,
        "data_offset": gguf.data_offset,
        "architecture": arch,
        "name": md.get("general.name"),
        "hyperparameters": hparams,
        "tokenizer": _tokenizer_summary(md),
        "metadata": {k: _metadata_entry(v, gguf.metadata_types[k]) for k, v in md.items()},
        "tensors": tensors,
        "totals": totals,
        "total": {
            "tensors": len(tensors),
            "params": n_params,
            "bytes": n_bytes,
            "bits_per_weight": _bits_per_weight(n_bytes, n_params),
        },
    }


# ---------------------------------------------------------------------------------------------- text


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short(value: Any, types: tuple[str, str | None] | None = None) -> str:
    if isinstance(value, np.ndarray | list):
        head = ", ".join(repr(v) for v in _plain(value[:TEXT_ARRAY_HEAD]))
        more = ", ..." if len(value) > TEXT_ARRAY_HEAD else ""
        elem = f" {types[1]}" if types and types[1] else ""
        return f"[{head}{more}] ({len(value)}{elem})"
    return _clip(repr(value), 100)


def _safe(text: object) -> str:
    """Text from the file as printable: bytes that are not UTF-8 (kept as lone surrogates) escaped."""
    return str(text).encode("utf-8", "backslashreplace").decode("utf-8")


def _size(nbytes: int) -> str:
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{nbytes} B"


def _count(n: int) -> str:
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def print_text(d: dict[str, Any]) -> None:
    layout = f"GGUF v{d['gguf_version']}, alignment {d['alignment']}"
    print(f"file: {_safe(d['file'])} ({_size(d['file_size'])}, {layout})")
    name = f"  name: {_safe(d['name'])}" if d["name"] else ""
    print(f"architecture: {_safe(d['architecture'])}{name}")

    print("hyperparameters:")
    for key, value in d["hyperparameters"].items():
        print(f"  {_safe(key)} = {_safe(_short(value))}")
    if not d["hyperparameters"]:
        print("  (none)")

    tok = d["tokenizer"]
    print(
        f"tokenizer: model {_safe(tok['model'])}, vocab {tok['vocab_size']}, bos {tok['bos_token_id']}, "
        f"eos {tok['eos_token_id']}, pad {tok['padding_token_id']}, unk {tok['unknown_token_id']}, "
        f"add_bos {tok['add_bos_token']}"
    )

    print(f"metadata ({len(d['metadata'])} keys):")
    for key, entry in d["metadata"].items():
        kind = entry["type"] if "elem_type" not in entry else f"{entry['type']}[{entry['elem_type']}]"
        value = entry.get("value", entry.get("head"))
        if "elem_type" in entry:
            head = ", ".join(_clip(repr(v), 40) for v in value[:TEXT_ARRAY_HEAD])
            more = ", ..." if entry["length"] > TEXT_ARRAY_HEAD else ""
            shown = f"[{head}{more}] (length {entry['length']})"
        else:
            shown = _short(value)
        print(f"  {_safe(key):<40} {kind:<14} {_safe(shown)}")

    tensors = d["tensors"]
    print(f"tensors ({len(tensors)}):")
    width = max([len(_safe(t["name"])) for t in tensors] + [4])
    print(f"  {'name':<{width}}  {'type':<7} {'shape (ggml ne)':<28} {'bytes':>14}")
    for t in tensors:
        ne = "[" + ", ".join(str(n) for n in t["ne"]) + "]"
        print(f"  {_safe(t['name']):<{width}}  {t['type']:<7} {ne:<28} {t['bytes']:>14}")

    print("totals:")
    print(f"  {'class':<12} {'tensors':>7} {'params':>10} {'bytes':>14} {'size':>12} {'bits/weight':>11}")
    rows = list(d["totals"].items()) + [("total", d["total"])]
    for name, row in rows:
        bpw = f"{row['bits_per_weight']:.3f}" if row["bits_per_weight"] is not None else "-"
        print(
            f"  {name:<12} {row['tensors']:>7} {_count(row['params']):>10} {row['bytes']:>14} "
            f"{_size(row['bytes']):>12} {bpw:>11}"
        )

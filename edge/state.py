"""The saved-state container of ``Model.save_state`` / ``Model.load_state``: a versioned, checked header.

Layout (little-endian)::

    magic   8 bytes   b"EDGESTAT"
    version u32       STATE_VERSION
    flags   u32       0 (reserved)
    count   u64       number of tokens in the KV cache (the engine's n_past)
    tokens  count x i32
    body    the engine's KV state (edge_context_state_save; it has its own header and checks)

Saved states are untrusted input like any file: ``unpack_state`` checks everything it reads against
the model it is loaded into (token count <= n_ctx, every id < n_vocab, sizes) before anything reaches
the engine, and raises EdgeFormatError / EdgeRangeError naming the field. Fixed-width integers only: no
parser whose time or depth the input controls.
"""

from __future__ import annotations

import struct

import numpy as np

from edge._native import EdgeArgumentError, EdgeFormatError, EdgeRangeError

STATE_MAGIC = b"EDGESTAT"
STATE_VERSION = 1
_HEADER = struct.Struct("<8sIIQ")


def pack_state(tokens: list[int], body: bytes | bytearray) -> bytes:
    """The saved state of a cache holding ``tokens`` whose engine state is ``body``."""
    ids = np.asarray(tokens, dtype="<i4")
    return _HEADER.pack(STATE_MAGIC, STATE_VERSION, 0, len(ids)) + ids.tobytes() + bytes(body)


def unpack_state(state: object, n_vocab: int, n_ctx: int) -> tuple[list[int], memoryview]:
    """(tokens, engine body) of a saved state, checked against a model of ``n_vocab`` and ``n_ctx``."""
    if not isinstance(state, (bytes, bytearray, memoryview)):
        raise EdgeArgumentError(
            "EDGE_ERR_INVALID_ARG", f"load_state: expected bytes, got {type(state).__name__}"
        )
    try:
        view = memoryview(state).cast("B")
    except TypeError as exc:  # a non-contiguous buffer
        raise EdgeArgumentError("EDGE_ERR_INVALID_ARG", f"load_state: {exc}") from None
    if len(view) < _HEADER.size:
        raise EdgeFormatError(
            "EDGE_ERR_FORMAT", f"load_state: {len(view)} bytes is too short for a saved state"
        )
    magic, version, flags, count = _HEADER.unpack_from(view)
    if magic != STATE_MAGIC:
        raise EdgeFormatError("EDGE_ERR_FORMAT", "load_state: not a grok-edge saved state (bad magic)")
    if version != STATE_VERSION:
        raise EdgeFormatError(
            "EDGE_ERR_FORMAT",
            f"load_state: saved state version {version}, this build reads version {STATE_VERSION}",
        )
    if flags != 0:
        raise EdgeFormatError("EDGE_ERR_FORMAT", f"load_state: unknown flags 0x{flags:x} in the header")
    if count > n_ctx:
        raise EdgeRangeError(
            "EDGE_ERR_RANGE", f"load_state: the state holds {count} tokens, the context only {n_ctx}"
        )
    end = _HEADER.size + 4 * count
    if len(view) < end:
        raise EdgeFormatError(
            "EDGE_ERR_FORMAT",
            f"load_state: the header lists {count} tokens but the state ends after {len(view)} bytes",
        )
    ids = np.frombuffer(view, dtype="<i4", count=count, offset=_HEADER.size)
    bad = np.flatnonzero((ids < 0) | (ids >= n_vocab))
    if bad.size:
        i = int(bad[0])
        raise EdgeFormatError(
            "EDGE_ERR_FORMAT",
            f"load_state: token {i} of the header is id {int(ids[i])}, outside 0..{n_vocab - 1}",
        )
    return [int(t) for t in ids.tolist()], view[end:]

"""Mechanical cffi binding of native/include/edge.h (ABI mode, read from the installed header).

Every function returning ``edge_status`` is wrapped by :func:`check`, which turns a non-OK status
into :class:`EdgeError` (or a subclass) carrying the C library's message for this thread.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import cffi

_PKG_DIR = Path(__file__).resolve().parent


def _library_path() -> Path:
    override = os.environ.get("EDGE_LIBRARY")
    if override:
        return Path(override)
    for name in ("libedge.so", "libedge.dylib", "edge.dll"):
        candidate = _PKG_DIR / name
        if candidate.exists():
            return candidate
    raise ImportError(
        f"grok-edge's native library was not found in {_PKG_DIR}; install the package with "
        "'pip install .' (it builds native/ with CMake) or set EDGE_LIBRARY"
    )


def _header_path() -> Path:
    override = os.environ.get("EDGE_HEADER")
    if override:
        return Path(override)
    installed = _PKG_DIR / "include" / "edge.h"
    if installed.exists():
        return installed
    return _PKG_DIR.parent / "native" / "include" / "edge.h"


def _cdef_source(header: str) -> str:
    begin = header.index("/* EDGE_CDEF_BEGIN */")
    end = header.index("/* EDGE_CDEF_END */")
    body = header[begin:end]
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    body = re.sub(r"//[^\n]*", "", body)
    return body.replace("EDGE_API ", "")


ffi = cffi.FFI()
ffi.cdef(_cdef_source(_header_path().read_text()))
lib: Any = ffi.dlopen(str(_library_path()))


class EdgeError(RuntimeError):
    """A call into the native library failed; ``status`` is the edge_status name."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message or status)
        self.status = status


class EdgeFormatError(EdgeError, ValueError):
    """A file (GGUF, checkpoint) is malformed."""


class EdgeRangeError(EdgeError, IndexError):
    """An index or size is out of range (token id, context length)."""


class EdgeArgumentError(EdgeError, ValueError):
    """A bad argument was passed."""


class EdgeUnsupportedError(EdgeError, NotImplementedError):
    """Valid input that this build does not support."""


class EdgeCancelledError(EdgeError):
    """An evaluation was stopped by a cancel request (Model.cancel, a CancelToken)."""


class EdgeBusyError(EdgeError):
    """Another call is using the model's context (a Model made with ``on_busy="error"``)."""


_ERRORS: dict[int, type[EdgeError]] = {
    lib.EDGE_ERR_FORMAT: EdgeFormatError,
    lib.EDGE_ERR_RANGE: EdgeRangeError,
    lib.EDGE_ERR_INVALID_ARG: EdgeArgumentError,
    lib.EDGE_ERR_UNSUPPORTED: EdgeUnsupportedError,
    lib.EDGE_ERR_CANCELLED: EdgeCancelledError,
}


def last_error() -> str:
    """The message of this thread's last failed call into the library."""
    return ffi.string(lib.edge_last_error()).decode("utf-8", "replace")


def check(status: int, message: str | None = None) -> None:
    """Raise the matching EdgeError if ``status`` is not EDGE_OK, with ``message`` or, by default, this
    thread's last error message (pass the message when the call ran on another thread)."""
    if status != lib.EDGE_OK:
        name = ffi.string(lib.edge_status_name(status)).decode()
        raise _ERRORS.get(status, EdgeError)(name, last_error() if message is None else message)


def string(ptr: Any) -> str:
    return "" if ptr == ffi.NULL else ffi.string(ptr).decode("utf-8", "replace")

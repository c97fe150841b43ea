"""Initializers written straight to an ONNX external-data file, one tensor at a time.

The model proto keeps only each tensor's name, type, shape and (offset, length) in the data file, so an
export holds one tensor in memory at a time however large the model is. Offsets are aligned to 4 KiB so
that onnxruntime can map the file instead of reading it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

ALIGN = 4096
INLINE_LIMIT = 1024  # tensors smaller than this many bytes stay inside model.onnx


class ExternalDataWriter:
    """Appends tensors to ``directory/filename``; ``tensor()`` returns the initializer that refers to them."""

    def __init__(self, directory: str | os.PathLike[str], filename: str) -> None:
        self.filename = filename
        self.path = Path(directory) / filename
        self._file = open(self.path, "wb")  # noqa: SIM115 (closed by close())
        self.offset = 0
        self.count = 0

    def tensor(self, name: str, array: np.ndarray) -> onnx.TensorProto:
        arr = np.ascontiguousarray(array)
        if arr.nbytes < INLINE_LIMIT:
            return numpy_helper.from_array(arr, name)
        return self.streamed(name, arr.dtype, arr.shape, [arr])

    def streamed(
        self, name: str, dtype: np.dtype[Any], shape: tuple[int, ...], parts: Iterable[np.ndarray]
    ) -> onnx.TensorProto:
        """A tensor of ``shape`` written from ``parts`` (consecutive slices in C order, each of ``dtype``),
        so that no more than one part is in memory. ValueError if they do not fill the shape exactly."""
        pad = (-self.offset) % ALIGN
        if pad:
            self._file.write(b"\0" * pad)
            self.offset += pad
        dt = np.dtype(dtype)
        want = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        written = 0
        for part in parts:
            arr = np.ascontiguousarray(part)
            if arr.dtype != dt:
                raise ValueError(f"{name}: a part of type {arr.dtype}, not {dt}")
            self._file.write(memoryview(arr.reshape(-1)).cast("B"))
            written += arr.nbytes
        if written != want:
            raise ValueError(
                f"{name}: {written} bytes written for shape {tuple(shape)} of {dt} ({want} bytes)"
            )
        proto = onnx.TensorProto()
        proto.name = name
        proto.data_type = onnx.helper.np_dtype_to_tensor_dtype(dt)
        proto.dims.extend(shape)
        for key, value in (("location", self.filename), ("offset", self.offset), ("length", want)):
            entry = proto.external_data.add()
            entry.key, entry.value = key, str(value)
        proto.data_location = onnx.TensorProto.EXTERNAL
        self.offset += want
        self.count += 1
        return proto

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

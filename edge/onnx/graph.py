"""A small builder for ONNX graphs: unique names, constants, nodes, If branches."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MS = "com.microsoft"
OPSET = 23  # RMSNormalization (23), Gelu(approximate="tanh") (20), ScatterND(reduction) (18)


class Names:
    """Unique value names shared by a graph and its subgraphs."""

    def __init__(self) -> None:
        self._used: dict[str, int] = {}

    def new(self, hint: str) -> str:
        n = self._used.get(hint, 0)
        self._used[hint] = n + 1
        return hint if n == 0 else f"{hint}_{n}"


class Graph:
    """Nodes and initializers of one (sub)graph. ``constants`` are shared with the main graph's
    initializers so that branches can use them by name (outer scope)."""

    def __init__(self, names: Names, main: Graph | None = None) -> None:
        self.names = names
        self.main = main or self
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._consts: dict[tuple[str, bytes, tuple[int, ...]], str] = {} if main is None else main._consts

    def op(
        self,
        op_type: str,
        inputs: list[str],
        hint: str | None = None,
        n_out: int = 1,
        domain: str = "",
        **attrs: Any,
    ) -> Any:
        outs = [self.names.new(hint or op_type.lower()) for _ in range(n_out)]
        self.nodes.append(
            helper.make_node(
                op_type, inputs, outs, name=self.names.new("n_" + op_type), domain=domain, **attrs
            )
        )
        return outs[0] if n_out == 1 else outs

    def const(self, value: Any, dtype: Any = np.int64) -> str:
        """A constant (an initializer of the main graph, reused for equal values)."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.tobytes(), arr.shape)
        name = self._consts.get(key)
        if name is None:
            name = self.names.new("const")
            self.main.initializers.append(numpy_helper.from_array(arr, name))
            self._consts[key] = name
        return name

    def add_initializer(self, proto: onnx.TensorProto) -> str:
        self.main.initializers.append(proto)
        return proto.name

    def branch(self) -> Graph:
        return Graph(self.names, self.main)

    def to_graph(
        self, name: str, outputs: list[onnx.ValueInfoProto], inputs: list[onnx.ValueInfoProto] | None = None
    ) -> onnx.GraphProto:
        inits = self.initializers if self.main is self else []
        return helper.make_graph(self.nodes, name, inputs or [], outputs, inits)


def value_info(name: str, elem: int, shape: list[Any]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64

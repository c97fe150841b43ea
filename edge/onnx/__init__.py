"""Export a Grok GGUF to an onnxruntime-genai model folder and run such a folder through onnxruntime.

    from edge.onnx import export_onnx, OnnxModel
    export_onnx("tiny-grok-f32.gguf", "tiny-onnx", precision="fp32")
    with OnnxModel("tiny-onnx") as model:
        print(model.generate("And God said,", max_tokens=16, temperature=0))

Needs the ``onnx`` extra (``pip install ".[onnx]"``): onnx, onnxruntime, onnxruntime-genai.
"""

from __future__ import annotations

from edge.onnx.exporter import PRECISIONS, export_onnx
from edge.onnx.runner import OnnxModel

__all__ = ["PRECISIONS", "OnnxModel", "export_onnx"]

"""grok-edge: a compressed on-device runtime for Grok-1 (GGUF converter, quantized engine, Python API)."""

from edge._native import EdgeError
from edge.batch import BatchContext
from edge.llama import Llama
from edge.model import Model
from edge.system import system_info

__all__ = ["BatchContext", "EdgeError", "Llama", "Model", "system_info"]
__version__ = "0.1.0"

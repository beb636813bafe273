"""Load local Hugging Face causal-LM directories (safetensors only) with their tokenizer and chat
template. See ``loading`` for what is refused and why."""

from quantgate.models.chat import DEFAULT_CHAT_TEMPLATE, render_chat
from quantgate.models.loading import DTYPES, LoadedModel, find_weight_files, load_model, resolve_dtype

__all__ = [
    "DEFAULT_CHAT_TEMPLATE",
    "DTYPES",
    "LoadedModel",
    "find_weight_files",
    "load_model",
    "render_chat",
    "resolve_dtype",
]

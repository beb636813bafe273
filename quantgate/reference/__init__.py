"""The bundled reference assistant: a small Llama-format chat model trained in-repo on a synthetic corpus.

It gives quantgate a model whose behaviour is *checkable* (tool calls against JSON Schemas, JSON
extraction, refusals, cited answers, short answers about facts stated in the prompt), so a
quantized variant can be gated on measured behaviour instead of perplexity. Weights live in ``weights/`` (``WEIGHTS_DIR``); they are
reproduced with ``python -m quantgate.reference.train --out quantgate/reference/weights``.

Modules: ``tools`` (tool schemas), ``pools`` (entity pools, train/held-out split), ``short`` (short
answers), ``corpus`` (seeded examples), ``checks`` (grading one output), ``tokenizer`` (BPE + chat
template), ``train``, ``evaluate``. This package root imports nothing heavy.
"""

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

__all__ = ["WEIGHTS_DIR"]

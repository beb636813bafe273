"""Cited answers (quantgate.reference.cited)."""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path

from quantgate.reference.cited import _fact, cited_answer


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


def test_source_lines_end_with_their_number_unless_the_first_step_asks_not_to() -> None:
    # the committed model and the golden set use "[n] fact [n]."; train (the recipe's first step) "[n] fact."
    # one generator per example: in training the served format also draws from the paraphrases, so the
    # streams part after the question (the facts, the asked lines and the sources come before it)
    for split in ("train", "heldout"):
        for seed in range(100):
            new = cited_answer(random.Random(seed), split)
            old = cited_answer(random.Random(seed), split, number_at_end=False)
            assert (new.answer, new.expected, new.entities) == (old.answer, old.expected, old.entities)
            new_lines, old_lines = _lines(new.prompt), _lines(old.prompt)
            assert all(new_lines[n] == old_lines[n][:-1] + f" [{n}]." for n in old_lines)


def _phrasings_asked(rng: random.Random, n: int, number_at_end: bool) -> Counter[str]:
    """How often ``n`` training prompts ask a trained, a held-out or a paraphrased question."""
    asked: Counter[str] = Counter()
    for _ in range(n):
        replay = random.Random()
        replay.setstate(rng.getstate())
        prompt = cited_answer(rng, "train", number_at_end).prompt.lower()
        # the facts cited_answer drew first, drawn again from the same state, with all their phrasings
        for f in [_fact(replay, "train") for _ in range(replay.randint(2, 5))]:
            # "what year was X founded?" (held out) is inside "in what year was X founded?" (trained)
            bare = prompt.replace(f.questions[1].lower(), "")
            for kind, qs in (("trained", f.questions[:2]), ("heldout", f.questions[2:]), ("paraphrase", f.paraphrases)):
                asked[kind] += sum(q.lower() in (bare if kind == "heldout" else prompt) for q in qs)
    return asked


def test_the_first_step_asks_two_phrasings_per_fact_and_the_served_format_eight() -> None:
    # the first step's data stays as it trained the committed base: no paraphrases there
    first = _phrasings_asked(random.Random(5), 400, number_at_end=False)
    assert first["paraphrase"] == 0 and first["heldout"] == 0 and first["trained"] >= 400
    served = _phrasings_asked(random.Random(5), 400, number_at_end=True)
    assert served["heldout"] == 0 and served["trained"] > 50 and served["paraphrase"] > 2 * served["trained"]
    for seed in range(300):  # six distinct paraphrases per fact, none of them a question of its own
        f = _fact(random.Random(seed), "train")
        assert len(set(f.paraphrases)) == 6 and not set(f.paraphrases) & set(f.questions)


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


def test_the_cited_number_is_the_token_the_digit_weight_falls_on(tmp_path: Path) -> None:
    # the trainer (the recipe's first step, whose tokenizer has no citation tokens) marks (role 3) the
    # assistant digit right after "[": the source number, and only it
    import torch
    from transformers import AutoTokenizer

    from quantgate.reference.tokenizer import train_tokenizer, write_tokenizer_files
    from quantgate.reference.train import _collate, _weighted_loss, citation_tokens

    rng = random.Random(3)
    texts = [(c := cited_answer(rng, "train", number_at_end=False)).prompt + "\n" + c.answer for _ in range(200)]
    write_tokenizer_files(train_tokenizer(texts, 400), tmp_path, 512)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    prompt = tok.encode("Sources:\n[1] Velmo was founded in 1746.\n[2] Mount Tarel is 3222 meters tall.\n\n"
                        "Question: How tall is Mount Tarel?", add_special_tokens=False)
    answer = tok.encode("Mount Tarel is 3222 meters tall [2].<|im_end|>", add_special_tokens=False)
    ids, mask, role = _collate([(prompt + answer, len(prompt))], [0], 3, citation_tokens(tok))
    marked = [tok.decode([int(t)]) for t, r in zip(ids[0], role[0]) if r == 3]
    assert marked == ["2"]
    assert (role[0, : len(prompt)] < 2).all()  # the prompt's [1], [2] are not the answer's

    (digit,) = (role[0, 1:] == 3).nonzero()[0].tolist()  # position `digit` predicts the digit

    class WrongAtTheDigit(torch.nn.Module):  # uniform, except sure of a wrong token where the digit is due
        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> object:
            logits = torch.zeros((*input_ids.shape, 8))
            logits[0, digit, 0] = 20.0
            return type("Out", (), {"logits": logits})()

    ids = torch.ones_like(ids)  # every target is token 1: the digit's loss is ~20, the others log(8)
    plain, _ = _weighted_loss(WrongAtTheDigit(), ids, mask, role, 0.3)
    heavy, assistant = _weighted_loss(WrongAtTheDigit(), ids, mask, role, 0.3, digit_weight=10.0)
    answer = int((role[0, 1:] >= 2).sum())
    weight = answer + 0.3 * int((role[0, 1:] == 1).sum())
    base = float(torch.log(torch.tensor(8.0)))
    assert abs(float(plain) - (base * (weight - 1) + 20.0) / weight) < 1e-3
    assert abs(float(heavy) - (base * (weight - 1) + 200.0) / (weight + 9)) < 1e-3
    assert abs(assistant - (base * (answer - 1) + 20.0) / answer) < 1e-3  # the logged loss stays unweighted

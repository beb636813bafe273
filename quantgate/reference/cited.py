"""Answers from numbered sources for the reference corpus.

``cited_answer(rng, split)`` gives a prompt with two to five numbered sources, each line ending with
its own number again (``[1] Mount X is 3222 meters tall [1].``), and one or two questions; the gold
answer restates each asked fact and cites it: ``Mount X is 3222 meters tall [1].`` Question
phrasings are split like templates (the third phrasing of each fact is held out); entities come
from ``pools``.

Why the number ends each line: the answer restates the line's tail, so the citation is the next
token to copy. With the number only at a line's start, every model trained here copied the sentence
and cited a number near chance; a model trained with it at the end from the start did too, and one
switched to it late (``cite_tune``) learned it (docs/reference-model.md has the runs). The trade-off
of nine fixed fact types is narrow language, bought for exact grading of values and source numbers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, NamedTuple

from quantgate.reference import pools
from quantgate.reference.pools import Split, pick_template

__all__ = ["CitedAnswer", "cited_answer"]


class Fact(NamedTuple):
    """One source sentence, the questions it answers, the answer sentence and its value.

    ``questions``: two trained phrasings, then the held-out one; ``paraphrases``: six more that only
    training asks, and only in the served format (``cited_answer``).
    """

    source: str
    questions: list[str]
    answer: str
    value: str
    paraphrases: tuple[str, ...]


@dataclass(frozen=True)
class CitedAnswer:
    """A prompt with numbered sources, its gold answer, what a grader checks, entities and tags."""

    prompt: str
    answer: str
    expected: dict[str, Any]
    entities: tuple[str, ...]
    tags: tuple[str, ...]


def _fact(rng: random.Random, split: Split, open_slots: bool = False) -> Fact:
    """A random fact of one of nine types (a founding year, a population, a CEO, a bridge's length ...)."""
    e = pools.syllable_word(rng, split, rng.choice((2, 3)))
    y, n = rng.randint(1700, 2023), rng.randint(12, 98000)
    r = rng.randrange(9)
    if r == 0:
        return Fact(f"{e} was founded in {y}.", [f"When was {e} founded?", f"In what year was {e} founded?", f"What year was {e} founded?"],
                f"{e} was founded in {y}", str(y),
                (f"When was {e} established?", f"What is the founding year of {e}?",
                 f"In which year did {e} get its start?", f"When did {e} come into being?",
                 f"Since what year has {e} existed?", f"Tell me when {e} was founded."))
    if r == 1:
        return Fact(f"The town of {e} has {n} residents.", [f"How many residents does {e} have?", f"What is the population of {e}?", f"How many people live in {e}?"],
                f"{e} has {n} residents", str(n),
                (f"How many inhabitants does {e} have?", f"How big is the population of {e}?",
                 f"What is the number of residents in {e}?", f"How populous is {e}?", f"What is {e}'s population?",
                 f"Tell me the population of {e}."))
    if r == 2:
        p, c = pools.person(rng, split), pools.company(rng, split)
        return Fact(f"{p} is the CEO of {c}.", [f"Who is the CEO of {c}?", f"Who leads {c}?", f"Who runs {c}?"],
                f"{p} is the CEO of {c}", p,
                (f"Who heads {c}?", f"Who is in charge of {c}?", f"Who is the chief executive of {c}?",
                 f"Who is {c}'s CEO?", f"Who is at the top of {c}?", f"Name the CEO of {c}."))
    if r == 3:
        c, ci = pools.company(rng, split), pools.city(rng, split, open_slots=open_slots)
        return Fact(f"{c} is headquartered in {ci}.", [f"Where is {c} headquartered?", f"In which city is {c} based?", f"Where is the headquarters of {c}?"],
                f"{c} is headquartered in {ci}", ci,
                (f"Where is {c} based?", f"Where does {c} have its headquarters?",
                 f"Which city is {c} headquartered in?", f"Where is {c}'s main office?",
                 f"In what city does {c} have its head office?", f"Where can {c}'s headquarters be found?"))
    if r == 4:
        m = rng.randint(40, 4000)
        return Fact(f"The {e} Bridge is {m} meters long.", [f"How long is the {e} Bridge?", f"What is the length of the {e} Bridge?", f"How many meters long is the {e} Bridge?"],
                f"The {e} Bridge is {m} meters long", str(m),
                (f"How long is the span of the {e} Bridge?", f"What length is the {e} Bridge?",
                 f"How far does the {e} Bridge stretch?", f"What is the {e} Bridge's length?",
                 f"How many meters does the {e} Bridge span?", f"Tell me the length of the {e} Bridge."))
    if r == 5:
        h = rng.randint(300, 8800)
        return Fact(f"Mount {e} is {h} meters tall.", [f"How tall is Mount {e}?", f"What is the height of Mount {e}?", f"How high is Mount {e}?"],
                f"Mount {e} is {h} meters tall", str(h),
                (f"What is the elevation of Mount {e}?", f"How many meters tall is Mount {e}?",
                 f"What height does Mount {e} reach?", f"How tall does Mount {e} stand?",
                 f"What is Mount {e}'s height?", f"Tell me the height of Mount {e}."))
    if r == 6:
        d = rng.randint(3, 60)
        return Fact(f"A ticket to the {e} Museum costs {d} dollars.", [f"How much is a ticket to the {e} Museum?", f"What does a {e} Museum ticket cost?", f"How many dollars is a ticket to the {e} Museum?"],
                f"A ticket to the {e} Museum costs {d} dollars", str(d),
                (f"What is the price of a ticket to the {e} Museum?",
                 f"How much does the {e} Museum charge for a ticket?",
                 f"What is the admission price at the {e} Museum?",
                 f"How much does it cost to visit the {e} Museum?", f"What do tickets to the {e} Museum cost?",
                 f"Tell me the ticket price of the {e} Museum."))
    if r == 7:
        w = rng.randint(2, 400)
        return Fact(f"An explosion at the {e} plant in {y} injured {w} workers.", [f"How many workers were injured in the {e} plant explosion?", f"How many people were hurt in the explosion at the {e} plant?", f"What was the injury count of the {e} plant explosion?"],
                f"The explosion at the {e} plant injured {w} workers", str(w),
                (f"How many workers did the {e} plant explosion injure?", f"How many were injured at the {e} plant?",
                 f"How many workers got hurt in the {e} plant explosion?",
                 f"What number of workers were injured in the {e} plant explosion?",
                 f"How many injuries did the {e} plant explosion cause?",
                 f"Tell me how many workers the {e} plant explosion injured."))
    return Fact(f"The {e} virus outbreak in {y} infected {n} people.", [f"How many people did the {e} virus outbreak infect?", f"How many infections did the {e} outbreak cause?", f"How many people caught the {e} virus?"],
            f"The {e} virus outbreak infected {n} people", str(n),
            (f"How many people were infected in the {e} virus outbreak?",
             f"How many cases did the {e} virus outbreak have?",
             f"What was the number of infections in the {e} outbreak?", f"How many people got the {e} virus?",
             f"How many infections were there in the {e} virus outbreak?",
             f"Tell me how many people the {e} virus outbreak infected."))


_CITED = ("Sources:\n{s}\n\nQuestion: {q}", "{s}\n\nUsing the sources above, answer: {q}",
          "Answer using only these sources and cite them.\n{s}\nQ: {q}", "Here are some documents:\n{s}\n{q} Cite your source.",
          "Read the sources and answer with citations.\n{s}\nQuestion: {q}", "{q}\nSources:\n{s}",
          "Context:\n{s}\n\n{q}", "Based on these sources:\n{s}\nanswer this: {q}", "{s}\n{q} Use [n] citations.",
          "Use the numbered sources to answer.\n{s}\nQuestion: {q}")


def cited_answer(rng: random.Random, split: Split, number_at_end: bool = True, *,
                 open_slots: bool = False) -> CitedAnswer:
    """Sources, one or two questions about them, and the answer that cites each fact it uses.

    ``number_at_end`` ends each source line with its number again (``[2] X was founded in 1746 [2].``):
    the format of the committed model and the golden set. Without it (``[2] X was founded in 1746.``)
    is the format of the recipe's first step (``train``), kept so that step still makes its weights.
    ``open_slots``: headquarters cities drawn with ``pools.city``'s open slots.
    """
    facts = [_fact(rng, split, open_slots) for _ in range(rng.randint(2, 5))]
    asked = rng.sample(range(len(facts)), 2 if rng.random() < 0.2 else 1)
    # At a line's end the number is the next token to copy after the restated sentence (a single
    # token: tokenizer.CITATION_TOKENS); at its start alone, models cited near chance.
    sources = "\n".join(f"[{i + 1}] {f.source[:-1]} [{i + 1}]." if number_at_end else f"[{i + 1}] {f.source}"
                        for i, f in enumerate(facts))
    # Question phrasings are split like templates: the third phrasing of each fact is held out. The
    # first step keeps the two trained ones alone so that its data (and the base model) stay as committed.
    qs = [facts[i].questions[2] if split == "heldout"
          else rng.choice(facts[i].questions[:2] + (list(facts[i].paraphrases) if number_at_end else [])) for i in asked]
    question = qs[0] if len(qs) == 1 else qs[0] + " Also, " + qs[1][0].lower() + qs[1][1:]
    answer = " ".join(f"{facts[i].answer} [{i + 1}]." for i in asked)
    scary = any("explosion" in facts[i].source or "virus" in facts[i].source for i in asked)
    prompt = pick_template(rng, _CITED, split).format(s=sources, q=question)
    expected = {"sources": [i + 1 for i in asked], "n_sources": len(facts), "values": [facts[i].value for i in asked]}
    return CitedAnswer(prompt, answer, expected, tuple(f.value for f in facts if not f.value.isdigit()),
                       ("scary",) if scary else ())

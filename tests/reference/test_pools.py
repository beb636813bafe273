"""Entity pools (quantgate.reference.pools): the open slots of the recipe's second step."""

from __future__ import annotations

import random
import re

from quantgate.reference import pools
from quantgate.reference.checks import check_output
from quantgate.reference.corpus import generate


def test_open_slots_fill_cities_topics_and_domains_beyond_the_trained_lists_in_training_only() -> None:
    fillers, topics = set(pools._TRAIN_CITIES), {t.lower() for t in pools._TOPICS}
    for open_slots in (False, True):
        rng = random.Random(4)
        cities = {s: {pools.city(rng, s, open_slots=open_slots) for _ in range(3000)} for s in ("train", "heldout")}
        titles = {s: [pools.event_title(rng, s, open_slots=open_slots).lower() for _ in range(3000)]
                  for s in ("train", "heldout")}
        domains = {s: [pools.email(rng, s, open_slots=open_slots).split("@")[1] for _ in range(3000)]
                   for s in ("train", "heldout")}
        unknown = {s: sum(t.split(" ", 1)[0] not in topics for t in ts) / len(ts) for s, ts in titles.items()}
        made_up = {s: sum(d not in pools._DOMAINS_TRAIN + pools._DOMAINS_HELDOUT for d in ds) / len(ds)
                   for s, ds in domains.items()}
        assert not cities["heldout"] & fillers and unknown["heldout"] == 0 and made_up["heldout"] == 0
        if open_slots:
            assert len(cities["train"] & fillers) > 300
            assert 0.4 < unknown["train"] < 0.6 and 0.4 < made_up["train"] < 0.6
        else:  # the first step's slots, as before the open slots existed
            assert not cities["train"] & fillers and unknown["train"] == 0 and made_up["train"] == 0


def test_fillers_are_training_words_and_no_real_city_or_topic_of_either_split() -> None:
    fillers, fill_topics = set(pools._TRAIN_CITIES), set(pools._TRAIN_TOPICS)
    assert not fillers & set(pools._REAL_CITIES) and not fill_topics & set(pools._TOPICS)
    assert all(pools.split_of(w) == "train" for c in fillers | fill_topics for w in c.split())
    rng = random.Random(1)
    domains = {pools.email(rng, "train", open_slots=True).split("@")[1] for _ in range(2000)}
    assert not domains & set(pools._DOMAINS_HELDOUT)


def test_open_slots_leave_the_heldout_split_alone_and_leak_nothing_held_out() -> None:
    assert generate(300, seed=0, split="heldout", open_slots=True) == generate(300, seed=0, split="heldout")
    train = generate(3000, seed=0, split="train", open_slots=True)
    text = "\n".join(e.messages[-1]["content"] + "\n" + e.target for e in train)
    entities = {ent for e in generate(1500, seed=0, split="heldout") for ent in e.entities}
    # one pattern for all of them: as a word, as in test_reference_model's leak test, in one pass
    pattern = "|".join(re.escape(ent) for ent in sorted(entities, key=len, reverse=True))
    leaked = sorted(set(re.findall(rf"(?<![A-Za-z])(?:{pattern})(?![A-Za-z])", text)))
    assert not leaked, leaked[:20]
    assert any(c in text for c in pools._TRAIN_CITIES)  # the fillers are there
    for e in train[:600]:
        assert check_output(e, e.target).correct, (e.kind, e.messages, e.target)

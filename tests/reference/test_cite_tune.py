"""The recipe's second step (quantgate.reference.cite_tune), on the tiny preset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from quantgate.reference.cite_tune import CiteTuneConfig, cite_tune, main
from quantgate.reference.tokenizer import CITATION_TOKENS
from quantgate.reference.train import PRESETS, TrainConfig, train


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("base")
    train(TrainConfig(out=str(out), **{**PRESETS["tiny"], "steps": 3}), log=lambda _m: None)  # type: ignore[arg-type]
    return out


def _tune(base: Path, out: Path) -> dict[str, torch.Tensor]:
    cfg = CiteTuneConfig(base=str(base), out=str(out), examples=60, steps=3, batch_tokens=2048)
    cite_tune(cfg, log=lambda _m: None)
    return load_file(str(out / "model.safetensors"))


def test_adds_one_token_per_citation_started_at_digit_plus_bracket(base: Path, tmp_path: Path) -> None:
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    before = load_file(str(base / "model.safetensors"))["model.embed_tokens.weight"]
    bpe = Tokenizer.from_file(str(base / "tokenizer.json"))
    bracket = before[bpe.encode(" [").ids].sum(0)
    cfg = CiteTuneConfig(base=str(base), out=str(tmp_path / "t0"), examples=60, steps=0)
    cite_tune(cfg, log=lambda _m: None)
    after = load_file(str(tmp_path / "t0" / "model.safetensors"))["model.embed_tokens.weight"]
    assert after.shape[0] == before.shape[0] + len(CITATION_TOKENS)
    assert torch.equal(after[: before.shape[0]], before)  # zero steps: the old rows are untouched
    for t in CITATION_TOKENS:
        row = after[before.shape[0] + CITATION_TOKENS.index(t)]
        assert torch.allclose(row, before[bpe.token_to_id(t.strip(" []"))] + bracket)

    tok = AutoTokenizer.from_pretrained(tmp_path / "t0")
    text = "[1] Velmo was founded in 1746 [1].\nVelmo was founded in 1746 [1]. See [1, 2]."
    pieces = [tok.decode([i]) for i in tok.encode(text, add_special_tokens=False)]
    assert pieces.count(" [1]") == 2 and pieces[:3] == ["[", "1", "]"]  # a line's opening number stays three tokens
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


def test_is_deterministic_loadable_and_records_both_steps(base: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    a, b = _tune(base, tmp_path / "a"), _tune(base, tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    before = load_file(str(base / "model.safetensors"))["model.embed_tokens.weight"]
    assert not torch.equal(a["model.embed_tokens.weight"][: before.shape[0]], before)  # it trained
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "a")
    assert model.config.vocab_size == 512 + len(CITATION_TOKENS)
    steps = json.loads((tmp_path / "a" / "train_config.json").read_text())
    assert steps[0]["vocab_size"] == 512 and steps[1]["cite_tune"]["steps"] == 3


def test_refuses_a_base_that_has_the_tokens_already(base: Path, tmp_path: Path) -> None:
    _tune(base, tmp_path / "once")
    with pytest.raises(ValueError, match="citation tokens already"):
        _tune(tmp_path / "once", tmp_path / "twice")


def test_cli_needs_base_and_out(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--out", "/tmp/x"])
    assert exc.value.code == 2 and "--base" in capsys.readouterr().err


def test_cli_names_a_wrong_base_in_one_line(base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for wrong in (tmp_path / "missing", base.parent):  # a missing directory, then one that holds no model
        with pytest.raises(SystemExit) as exc:
            main(["--base", str(wrong), "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1
    _tune(base, tmp_path / "tuned")
    with pytest.raises(SystemExit) as exc:
        main(["--base", str(tmp_path / "tuned"), "--out", str(tmp_path / "out2")])
    assert exc.value.code == 2 and "citation tokens already" in capsys.readouterr().err


def test_cli_parses_booleans_and_records_the_settings(base: Path, tmp_path: Path) -> None:
    for flag, want in (("false", False), ("true", True)):
        out = tmp_path / flag
        main(["--base", str(base), "--out", str(out), "--examples", "60", "--steps", "0", "--open-slots", flag])
        assert json.loads((out / "train_config.json").read_text())[1]["cite_tune"]["open_slots"] is want


def test_the_committed_weights_record_the_default_recipe() -> None:
    # `weights/` holds what the default run makes: the settings it records are the defaults (where
    # the run read and wrote aside, the machine's threads apart).
    from dataclasses import asdict

    from quantgate.reference import WEIGHTS_DIR

    first, second = json.loads((Path(WEIGHTS_DIR) / "train_config.json").read_text())
    recorded = second["cite_tune"]
    defaults = asdict(CiteTuneConfig(base=recorded["base"], out=recorded["out"]))
    assert recorded == defaults
    train_defaults = asdict(TrainConfig(out=first["out"]))
    # The first step predates some options (``device``...): those it records are at their defaults.
    assert {k: v for k, v in first.items() if k != "out"} == {k: train_defaults[k] for k in first if k != "out"}

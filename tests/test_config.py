"""Gateway config: a good file loads; every mistake names file, key and problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from quantgate.cli import main
from quantgate.config import ConfigError, load_config, parse_config

GOOD = """
variants:
  - {name: int4, engine: upstream, url: "http://127.0.0.1:9/v1", model: m, price: {prompt_per_mtok: 1}}
  - {name: bf16, engine: local, path: /models/bf16}
ladder: [int4, bf16]
tenants:
  - {name: acme, key_sha256: ["%s"], rate: {requests_per_min: 60}, budget: {amount: 5, period: day}}
routes:
  - name: default
    model: assistant
    floor: int4
    rules: [{header: x-quantgate-risk, equals: high, floor: bf16}]
    canary: {variant: int4, weight: 0.1}
    validate: {assert: [{type: is-json}]}
""" % ("a" * 64)


def test_good_config_loads(tmp_path: Path) -> None:
    p = tmp_path / "gw.yaml"
    p.write_text(GOOD)
    cfg = load_config(p)
    assert cfg.ladder == ["int4", "bf16"]
    assert cfg.variant("bf16").engine == "local"
    assert cfg.variant("bf16").device == "cpu"
    p.write_text(GOOD.replace("path: /models/bf16}", "path: /models/bf16, device: 'cuda:1'}"))
    assert load_config(p).variant("bf16").device == "cuda:1"
    assert cfg.routes[0].validate_.assert_ == [{"type": "is-json"}]


@pytest.mark.parametrize("edit, message", [
    (("ladder: [int4, bf16]", "ladder: [int4, fp32]"), "ladder names unknown variant 'fp32'"),
    (("ladder: [int4, bf16]", "ladder: [int4]"), "missing: bf16"),
    (("floor: int4", "flor: int4"), "routes.0.flor: unknown key"),
    (("engine: local", "engine: gpu"), "variants.1"),
    (("path: /models/bf16}", "path: /models/bf16, device: gpu}"), "variants.1.local.device"),
    (("weight: 0.1", "weight: 1.5"), "routes.0.canary.weight"),
    (("equals: high, floor: bf16", "equals: high, floor: int9"), "rules[0].floor names unknown variant 'int9'"),
    (('key_sha256: ["' + "a" * 64 + '"]', 'key_sha256: ["abc"]'), "not a SHA-256 hex digest"),
])
def test_config_errors_name_the_key(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    p = tmp_path / "gw.yaml"
    p.write_text(GOOD.replace(*edit))
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert str(p) in str(err.value) and message in str(err.value)


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    p = tmp_path / "gw.yaml"
    p.write_text("variants:\n  - {name: a\nladder: [a]\n")
    with pytest.raises(ConfigError, match=r"gw.yaml:\d+: not valid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse_config([1, 2])


def test_key_env_must_be_set(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = parse_config({"variants": [{"name": "a", "engine": "local", "path": "x"}], "ladder": ["a"],
                        "tenants": [{"name": "t", "key_env": ["QG_TEST_KEY"]}], "routes": [{"name": "r", "model": "m"}]})
    monkeypatch.delenv("QG_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match="QG_TEST_KEY"):
        cfg.tenants[0].key_digests()
    monkeypatch.setenv("QG_TEST_KEY", "secret")
    assert len(cfg.tenants[0].key_digests()) == 1


def test_serve_check_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "gw.yaml"
    p.write_text(GOOD)
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--config", str(p), "--check"])
    assert exit_.value.code == 0
    assert "ok (2 variants, 1 routes, ladder int4 < bf16)" in capsys.readouterr().out
    p.write_text(GOOD.replace("floor: int4", "flor: int4"))
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--config", str(p), "--check"])
    assert exit_.value.code == 2
    assert "routes.0.flor: unknown key" in capsys.readouterr().err


def test_local_variants_must_agree_on_threads() -> None:
    def config(a: int | None, b: int | None) -> dict[str, object]:
        return {"variants": [{"name": "a", "engine": "local", "path": "/m/a", "threads": a},
                             {"name": "b", "engine": "local", "path": "/m/b", "threads": b}],
                "ladder": ["a", "b"], "routes": [{"name": "r", "model": "m"}]}

    with pytest.raises(ConfigError, match=r"variants: threads differ \(a: 2, b: 4\); local variants share one torch"):
        parse_config(config(2, 4))
    assert parse_config(config(2, 2)).variant("a").threads == 2
    assert parse_config(config(2, None)).variant("b").threads is None

"""Tenants and keys: plaintext, environment and digest keys authenticate; only digests are kept."""

from __future__ import annotations

import hashlib
from typing import Any

import openai
import pytest

from quantgate.config import ConfigError, TenantConfig
from quantgate.gateway.auth import AuthError, TenantDirectory


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def test_every_kind_of_key_finds_its_tenant(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEAM_B_KEY", "sk-from-env")
    directory = TenantDirectory([
        TenantConfig(name="a", keys=["sk-plain"]),
        TenantConfig(name="b", key_env=["TEAM_B_KEY"]),
        TenantConfig(name="c", key_sha256=[_digest("sk-hashed").upper()]),
    ], admin_digest=_digest("sk-admin"))
    assert [directory.tenant(k).name for k in ("sk-plain", "sk-from-env", "sk-hashed")] == ["a", "b", "c"]
    assert directory.is_admin("sk-admin") and not directory.is_admin("sk-plain") and not directory.is_admin(None)


@pytest.mark.parametrize("header, key", [
    ("Bearer sk-1", "sk-1"), ("bearer  sk-1 ", "sk-1"), ("Basic sk-1", None), ("Bearer ", None), (None, None), ("", None),
])
def test_bearer_header(header: str | None, key: str | None) -> None:
    assert TenantDirectory.bearer(header) == key


@pytest.mark.parametrize("key, code", [(None, "missing_api_key"), ("", "missing_api_key"), ("sk-nope", "invalid_api_key")])
def test_missing_and_unknown_keys_are_401(key: str | None, code: str) -> None:
    with pytest.raises(AuthError) as err:
        TenantDirectory([TenantConfig(name="a", keys=["sk-plain"])]).tenant(key)
    assert (err.value.status, err.value.type, err.value.code) == (401, "authentication_error", code)


def test_an_unset_key_variable_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_KEY", raising=False)
    with pytest.raises(ConfigError, match="tenant 'a': environment variable NOT_SET_KEY \\(key_env\\) is not set"):
        TenantDirectory([TenantConfig(name="a", key_env=["NOT_SET_KEY"])])


def test_the_gateway_keeps_only_digests(rig_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_KEY", "sk-acme-env")
    rig = rig_factory(tenants=[{"name": "acme", "keys": ["sk-test-acme"], "key_env": ["ACME_KEY"]},
                               {"name": "beta", "key_sha256": [_digest("sk-beta")]}])
    for key in ("sk-test-acme", "sk-acme-env", "sk-beta"):
        r = rig.client(key=key).chat.completions.with_raw_response.create(
            model="assistant", messages=[{"role": "user", "content": "x"}])
        assert r.http_response.status_code == 200
    with pytest.raises(openai.AuthenticationError):
        rig.client(key="sk-acme").chat.completions.create(model="assistant", messages=[{"role": "user", "content": "x"}])
    tenants = rig.app.state.pipeline.config.tenants
    assert [(t.keys, t.key_env) for t in tenants] == [([], []), ([], [])]
    assert tenants[0].key_sha256 == sorted([_digest("sk-test-acme"), _digest("sk-acme-env")])
    assert "sk-acme-env" not in repr(rig.app.state.pipeline.config)

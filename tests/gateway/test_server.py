"""``quantgate serve``'s process set-up (uvicorn itself is faked: it is the outside world here)."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest

from quantgate.config import parse_config
from quantgate.gateway import server
from tests.gateway.conftest import base_config


def test_serve_freezes_startup_objects_out_of_garbage_collection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    seen: dict[str, Any] = {}

    def fake_run(app: Any, **kwargs: Any) -> None:
        seen.update(kwargs, frozen=gc.get_freeze_count())

    monkeypatch.setattr(uvicorn, "run", fake_run)
    urls = {name: "http://127.0.0.1:9/v1" for name in ("int4", "int8", "bf16")}
    config = parse_config(base_config(urls, tmp_path, events={"path": None}))
    try:
        server.serve(config, port=0)
    finally:
        gc.unfreeze()
    # the app and everything imported so far are out of the collector's reach when uvicorn starts
    assert seen["frozen"] > 10_000 and seen["port"] == 0

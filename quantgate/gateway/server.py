"""Turn a validated config into running engines and an app, and serve it with uvicorn.

Kept apart from ``app`` so the app can be built in tests with engines of the test's choosing (a
real local fake upstream behind ``UpstreamAsyncEngine``), and so importing the app never loads torch:
only local variants pull in the model stack, when they are built.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from quantgate.config import GatewayConfig, LocalVariant, UpstreamVariant
from quantgate.gateway.batcher import LocalBatchingEngine
from quantgate.gateway.engines import GatewayEngine, UpstreamAsyncEngine

__all__ = ["build_engines", "build_limits", "serve", "serving"]


def _token_counter(tokenizer_dir: str | None) -> Any:
    if tokenizer_dir is None:
        return None
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    return lambda text: len(tok.encode(text, add_special_tokens=False))


def build_engine(v: LocalVariant | UpstreamVariant) -> GatewayEngine:
    if isinstance(v, UpstreamVariant):
        key = os.environ.get(v.api_key_env) if v.api_key_env else None
        return UpstreamAsyncEngine(v.name, v.url, v.model, api_key=key, connect_timeout_s=v.connect_timeout_s,
                                   read_timeout_s=v.read_timeout_s, max_connections=max(8, v.max_concurrency * 2),
                                   count_tokens=_token_counter(v.tokenizer))
    import torch

    from quantgate.engines.local import LocalEngine
    from quantgate.quantize.storage import load_any

    if v.threads:
        torch.set_num_threads(v.threads)
    loaded = load_any(v.path, dtype=None if v.dtype == "auto" else v.dtype, device=v.device)
    return LocalBatchingEngine(v.name, LocalEngine(loaded, max_batch_size=v.max_batch), max_batch=v.max_batch,
                               batch_wait_ms=v.batch_wait_ms)


def build_engines(config: GatewayConfig) -> dict[str, GatewayEngine]:
    return {v.name: build_engine(v) for v in config.variants}


def build_limits(config: GatewayConfig) -> Any:
    from quantgate.gateway.limits import MemoryLimits, RedisLimits

    if config.state.backend == "memory":
        return MemoryLimits()
    import redis.asyncio as redis

    # A blocking pool makes a burst wait for a connection instead of failing with "too many".
    pool = redis.BlockingConnectionPool.from_url(config.state.redis_url, max_connections=64, timeout=5)
    return RedisLimits(redis.Redis(connection_pool=pool), config.state.prefix)


def serve(config: GatewayConfig, host: str | None = None, port: int | None = None) -> None:
    """Build everything and run uvicorn until interrupted."""
    import uvicorn

    from quantgate.gateway.app import create_app

    app = create_app(config, build_engines(config))
    # A full collection scans every object alive, and what the imports and the app leave behind
    # (torch, pydantic, prometheus) lives as long as the process: 43-46 ms pauses, the whole p99 at
    # c16 (2026-11-29, docs/benchmarks.md). Frozen, they are never scanned again.
    gc.collect()
    gc.freeze()
    uvicorn.run(app, host=host or config.server.host, port=port if port is not None else config.server.port,
                log_level="warning", access_log=False)


@contextmanager
def serving(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a background thread; yields its base URL (a free port by default).

    For the demo, benchmarks and tests: one process holds client and server, and the server shuts
    down (running the app's lifespan shutdown) when the block ends.
    """
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="error", access_log=False,
                                           lifespan="on"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the gateway did not start")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(30)

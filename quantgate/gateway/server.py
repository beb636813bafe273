"""Turn a validated config into running engines and an app, and serve it with uvicorn.

Kept apart from ``app`` so the app can be built in tests with engines of the test's choosing (a
real local fake upstream behind ``UpstreamAsyncEngine``), and so importing the app never loads torch:
only local variants pull in the model stack, when they are built.
"""

from __future__ import annotations

import os
from typing import Any

from quantgate.config import GatewayConfig, LocalVariant, UpstreamVariant
from quantgate.gateway.engines import GatewayEngine, LocalBatchingEngine, UpstreamAsyncEngine

__all__ = ["build_engines", "build_limits", "serve"]


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
    loaded = load_any(v.path, dtype=None if v.dtype == "auto" else v.dtype)
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

    app = create_app(config, build_engines(config), limits=build_limits(config))
    uvicorn.run(app, host=host or config.server.host, port=port if port is not None else config.server.port,
                log_level="warning", access_log=False)

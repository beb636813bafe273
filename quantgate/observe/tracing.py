"""OpenTelemetry spans for the gateway's stages, free when tracing is off.

Without a tracer provider nothing from OpenTelemetry is imported and ``span`` is an empty context
manager, so the request path pays one attribute check per stage. With one (built from the
``tracing`` config section, or injected in tests), each request gets a ``quantgate.request`` span
with children ``quantgate.prepare`` (holding ``quantgate.auth``, ``quantgate.route``,
``quantgate.token_budget`` and ``quantgate.limits``), one ``quantgate.attempt`` per engine call
(variant, outcome; holding ``quantgate.admission``, the wait for a slot) and ``quantgate.validate``.
The provider is owned by the app, never set as OpenTelemetry's global, so two gateways in one
process trace independently.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from quantgate.errors import QuantgateError

__all__ = ["Tracer", "otlp_provider"]

_OFF: AbstractContextManager[None] = nullcontext()  # reusable: entering it does nothing


class Tracer:
    def __init__(self, provider: Any | None = None):
        self._tracer = provider.get_tracer("quantgate.gateway") if provider is not None else None

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def span(self, name: str, **attributes: Any) -> AbstractContextManager[Any]:
        """A context manager yielding the span (None when tracing is off: one shared no-op, nothing built)."""
        if self._tracer is None:
            return _OFF
        return self._span(name, attributes)

    @contextmanager
    def _span(self, name: str, attributes: dict[str, Any]) -> Iterator[Any]:
        assert self._tracer is not None
        with self._tracer.start_as_current_span(name, attributes={k: v for k, v in attributes.items()
                                                                  if v is not None}) as s:
            yield s


def otlp_provider(endpoint: str, service_name: str = "quantgate") -> Any:
    """A tracer provider exporting over OTLP/HTTP to ``endpoint`` (needs the ``tracing`` extra)."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise QuantgateError("tracing.otlp_endpoint is set but OpenTelemetry is not installed: "
                             "pip install 'quantgate[tracing]'") from None
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider

"""The gateway's YAML configuration as pydantic models, and a loader whose errors name file, key and problem.

One document describes the variants (local model dirs or upstream servers), the precision ladder
they sit on, tenants with their keys, limits and budgets, routes (precision floors, canary split,
validation, escalation, token caps), admission (concurrency, queue, deadlines), where shared state
lives (memory or Redis) and the event log. Every model forbids unknown keys: a misspelt key is an
error at start-up, not a silently ignored setting (LiteLLM's most reported canary bug is exactly
that). Secrets are never written in the file itself unless the user insists: keys can come from
environment variables, and tenant keys may be given as SHA-256 digests.

Trade-off: one flat document is easy to read and diff but grows long for large fleets; includes are
left for when someone needs them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from quantgate.errors import QuantgateError
from quantgate.models.loading import DEVICE_PATTERN

__all__ = [
    "AdmissionConfig", "BudgetConfig", "ConfigError", "EscalationConfig", "EventsConfig", "GatewayConfig",
    "LimitsConfig", "LocalVariant", "PriceConfig", "RouteConfig", "RouteRule", "ServerConfig", "StateConfig",
    "TenantConfig", "TracingConfig", "UpstreamVariant", "CanaryConfig", "ValidationConfig", "load_config", "parse_config",
]


class ConfigError(QuantgateError):
    """The gateway configuration is missing, not YAML, or does not validate."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PriceConfig(_Model):
    """Cost of one variant: per-token prices (per million tokens) and/or a price per engine-second."""

    prompt_per_mtok: float = Field(0.0, ge=0)
    completion_per_mtok: float = Field(0.0, ge=0)
    per_engine_second: float = Field(0.0, ge=0)

    def cost(self, prompt_tokens: int, completion_tokens: int, engine_seconds: float) -> float:
        return (prompt_tokens * self.prompt_per_mtok + completion_tokens * self.completion_per_mtok) / 1e6 \
            + engine_seconds * self.per_engine_second


class _VariantBase(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    price: PriceConfig = PriceConfig()
    max_concurrency: int = Field(8, ge=1, le=4096)
    tokenizer: str | None = None  # a local dir whose tokenizer counts prompt tokens; default: the model's


class LocalVariant(_VariantBase):
    """A model or quantized variant directory served in-process with dynamic batching."""

    engine: Literal["local"]
    path: str
    max_batch: int = Field(16, ge=1, le=256)
    batch_wait_ms: float = Field(2.0, ge=0, le=1000)
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    device: str = Field("cpu", pattern=f"^({DEVICE_PATTERN.pattern})$")  # checked against the machine at start
    # torch's intra-op pool is one per process, shared by every local variant: all that set it agree.
    threads: int | None = Field(None, ge=1)


class UpstreamVariant(_VariantBase):
    """An OpenAI-compatible server (vLLM, llama.cpp server, TGI, Ollama)."""

    engine: Literal["upstream"]
    url: str = Field(pattern=r"^https?://")
    model: str
    api_key_env: str | None = None
    connect_timeout_s: float = Field(2.0, gt=0)
    read_timeout_s: float = Field(60.0, gt=0)


Variant = Annotated[LocalVariant | UpstreamVariant, Field(discriminator="engine")]


class RateConfig(_Model):
    requests_per_min: int | None = Field(None, ge=1)
    tokens_per_min: int | None = Field(None, ge=1)


class BudgetConfig(_Model):
    """Spend allowed per period, in the same currency as the variants' prices."""

    amount: float = Field(gt=0)
    period: Literal["minute", "hour", "day", "month"] = "day"
    # Above this fraction of the budget spent, routes may send the tenant to cheaper variants.
    downgrade_at: float = Field(0.8, gt=0, le=1)


class TenantConfig(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    keys: list[str] = []          # plaintext keys (discouraged outside tests)
    key_env: list[str] = []       # names of environment variables holding keys
    key_sha256: list[str] = []    # hex digests of keys
    rate: RateConfig = RateConfig()
    budget: BudgetConfig | None = None
    priority: int = Field(0, ge=0, le=9)

    @field_validator("key_sha256")
    @classmethod
    def _hex(cls, v: list[str]) -> list[str]:
        for h in v:
            if len(h) != 64 or any(c not in "0123456789abcdef" for c in h.lower()):
                raise ValueError(f"not a SHA-256 hex digest: {h[:12]}...")
        return [h.lower() for h in v]

    def key_digests(self) -> list[str]:
        """SHA-256 digests of every key this tenant may use (environment variables read now)."""
        out = list(self.key_sha256)
        plain = list(self.keys)
        for name in self.key_env:
            value = os.environ.get(name)
            if not value:
                raise ConfigError(f"tenant {self.name!r}: environment variable {name} (key_env) is not set")
            plain.append(value)
        out += [hashlib.sha256(k.encode()).hexdigest() for k in plain]
        return out


class RouteRule(_Model):
    """Raise the precision floor when a header, a tag or a metadata field matches."""

    header: str | None = None
    tag: str | None = None
    metadata: str | None = None
    equals: str | None = None     # for header/metadata; absent: any value present matches
    floor: str
    reason: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> RouteRule:
        if sum(x is not None for x in (self.header, self.tag, self.metadata)) != 1:
            raise ValueError("a rule needs exactly one of header, tag or metadata")
        return self


class CanaryConfig(_Model):
    variant: str
    weight: float = Field(ge=0, le=1)
    sticky: Literal["user", "session", "none"] = "user"


class ValidationConfig(_Model):
    response_format: bool = True
    tool_arguments: bool = True
    assert_: list[dict[str, Any]] = Field([], alias="assert")  # check-library assertions, as in golden sets

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class EscalationConfig(_Model):
    max_attempts: int = Field(2, ge=1, le=8)  # attempts in total, the first included
    on: list[Literal["validation", "error", "timeout"]] = ["validation", "error", "timeout"]


class LimitsConfig(_Model):
    max_prompt_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    default_completion_tokens: int = Field(256, ge=1)
    trim_oldest: bool = False  # over the prompt cap: drop the oldest non-system turns instead of a 400


class RouteConfig(_Model):
    name: str
    model: str                     # the public model name clients ask for
    variants: list[str] | None = None  # rungs of the ladder this route may use (default: all)
    floor: str | None = None       # lowest precision allowed on this route
    default: str | None = None     # variant when nothing else decides (default: the floor, else the lowest)
    rules: list[RouteRule] = []
    canary: CanaryConfig | None = None
    validate_: ValidationConfig = Field(ValidationConfig(), alias="validate")
    escalation: EscalationConfig = EscalationConfig()
    limits: LimitsConfig = LimitsConfig()
    downgrade_near_budget: bool = True

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


GuardMetric = Literal["validation_failures", "tool_call_errors", "refusals", "escalations", "errors",
                      "latency_p95", "latency_p99", "cost_per_success", "shadow_flips"]


class GuardConfig(_Model):
    """One guard metric of a rollout: how much worse the canary may be, and its share of the error budget."""

    metric: GuardMetric
    margin: float = Field(1.5, ge=1.0, le=10.0)  # canary/baseline ratio tolerated (rate, exceedances or cost)
    floor: float | None = Field(None, gt=0, lt=1)  # rates: a canary rate shown below this passes outright
    both_directions: bool = False  # rates: a drop beyond 1/margin is a regression too (refusals)
    weight: float = Field(1.0, gt=0)  # share of the rollout's alpha


_DEFAULT_GUARDS = (
    GuardConfig(metric="validation_failures", floor=0.01), GuardConfig(metric="tool_call_errors", floor=0.01),
    GuardConfig(metric="refusals", floor=0.01, both_directions=True), GuardConfig(metric="escalations", floor=0.01),
    GuardConfig(metric="errors", floor=0.005), GuardConfig(metric="latency_p95"), GuardConfig(metric="latency_p99"),
    GuardConfig(metric="cost_per_success", margin=1.2),
)


class ShadowConfig(_Model):
    """Replay a share of canary requests on the baseline, off the request path, and compare."""

    share: float = Field(0.1, gt=0, le=1)
    queue_size: int = Field(64, ge=1)
    workers: int = Field(2, ge=1, le=64)
    timeout_s: float = Field(30.0, gt=0)


class RolloutConfig(_Model):
    """A progressive rollout of ``candidate`` against ``baseline`` on one route, judged by ``guards``."""

    route: str
    baseline: str
    candidate: str
    steps: list[float] = [0.01, 0.05, 0.25, 0.5, 1.0]  # canary weights, increasing; the last completes it
    min_requests: int = Field(200, ge=1)   # canary requests per step before a promotion
    min_seconds: float = Field(60.0, ge=0)  # time per step before a promotion
    alpha: float = Field(0.05, gt=0, lt=1)  # false-rollback budget over the whole rollout, split by guard weight
    srm_alpha: float = Field(0.001, gt=0, lt=1)
    latency_calibration: int = Field(500, ge=20)  # baseline requests that fix the latency thresholds
    guards: list[GuardConfig] = list(_DEFAULT_GUARDS)
    start: bool = False  # start when the gateway starts (else: POST /admin/rollout {"action": "start"})
    sticky: Literal["user", "session", "none"] = "none"
    shadow: ShadowConfig | None = None
    prompt_buckets: list[int] = [256, 1024]  # prompt-token bounds of the slices rate guards also report

    @model_validator(mode="after")
    def _steps_and_guards(self) -> RolloutConfig:
        if not self.steps or any(not 0 < w <= 1 for w in self.steps) or self.steps != sorted(set(self.steps)):
            raise ValueError("steps must be increasing canary weights in (0, 1]")
        if self.baseline == self.candidate:
            raise ValueError("baseline and candidate must differ")
        if self.prompt_buckets != sorted(set(self.prompt_buckets)) or any(b <= 0 for b in self.prompt_buckets):
            raise ValueError("prompt_buckets must be increasing positive token counts")
        _unique("guards", [g.metric for g in self.guards], what="metric")
        for g in self.guards:
            if g.metric == "shadow_flips" and (g.floor is None or self.shadow is None):
                raise ValueError("guard shadow_flips needs a floor (the tolerated flip rate) and a shadow: section")
        return self


class DriftConfig(_Model):
    """Per-route traffic drift monitoring (``quantgate.observe.drift``)."""

    enabled: bool = True
    reference_size: int = Field(10_000, ge=100)
    window: int = Field(500, ge=50)
    check_every: int = Field(50, ge=1)
    alpha: float = Field(3e-5, gt=0, lt=0.5)

    @model_validator(mode="after")
    def _window_fits(self) -> DriftConfig:
        if self.window > self.reference_size:
            raise ValueError("window must not be larger than reference_size")
        return self


class AdmissionConfig(_Model):
    queue_size: int = Field(256, ge=0, le=100_000)
    deadline_s: float = Field(30.0, gt=0)
    retry_after_s: int = Field(1, ge=1)


class StateConfig(_Model):
    backend: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "quantgate"


class EventsConfig(_Model):
    path: str | None = ".quantgate/events.sqlite"
    retention_days: float = Field(7.0, gt=0)
    max_rows: int = Field(1_000_000, ge=100)


class TracingConfig(_Model):
    otlp_endpoint: str | None = None  # e.g. http://127.0.0.1:4318/v1/traces; unset: no tracing
    service_name: str = "quantgate"


class ServerConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    admin_key_env: str = "QUANTGATE_ADMIN_KEY"
    max_body_bytes: int = Field(2 * 1024 * 1024, ge=1024)
    require_auth: bool = True


class GatewayConfig(_Model):
    server: ServerConfig = ServerConfig()
    variants: list[Variant]
    ladder: list[str]              # variant names from lowest to highest precision
    tenants: list[TenantConfig] = []
    routes: list[RouteConfig]
    admission: AdmissionConfig = AdmissionConfig()
    state: StateConfig = StateConfig()
    events: EventsConfig = EventsConfig()
    tracing: TracingConfig = TracingConfig()
    rollouts: list[RolloutConfig] = []
    drift: DriftConfig = DriftConfig()
    rollout_state: str | None = ".quantgate/rollouts.sqlite"  # SQLite file; with state.backend redis, Redis

    def with_hashed_keys(self) -> GatewayConfig:
        """This config with every tenant key (plaintext or from the environment) kept only as its SHA-256 digest.

        The app and its pipeline hold this copy, so nothing they keep (or could log or expose) has a
        plaintext key; keys from ``key_env`` of course stay in the process environment.
        """
        tenants = [t.model_copy(update={"keys": [], "key_env": [], "key_sha256": sorted(set(t.key_digests()))})
                   for t in self.tenants]
        return self.model_copy(update={"tenants": tenants})

    @model_validator(mode="after")
    def _cross_references(self) -> GatewayConfig:
        names = [v.name for v in self.variants]
        _unique("variants", names)
        _unique("tenants", [t.name for t in self.tenants])
        _unique("routes", [r.model for r in self.routes], what="model")
        known = set(names)
        threads = {v.name: v.threads for v in self.variants if isinstance(v, LocalVariant) and v.threads}
        if len(set(threads.values())) > 1:
            listed = ", ".join(f"{n}: {t}" for n, t in threads.items())
            raise ValueError(f"variants: threads differ ({listed}); local variants share one torch thread pool, "
                             "so set the same value on each or leave it unset")
        _unique("ladder", self.ladder)
        for n in self.ladder:
            if n not in known:
                raise ValueError(f"ladder names unknown variant {n!r} (variants: {', '.join(names)})")
        if set(self.ladder) != known:
            raise ValueError(f"ladder must list every variant once; missing: {', '.join(sorted(known - set(self.ladder)))}")
        for r in self.routes:
            for field, value in (("floor", r.floor), ("default", r.default),
                                 ("canary.variant", r.canary.variant if r.canary else None)):
                if value is not None and value not in known:
                    raise ValueError(f"route {r.name!r}: {field} names unknown variant {value!r}")
            for n in r.variants or []:
                if n not in known:
                    raise ValueError(f"route {r.name!r}: variants names unknown variant {n!r}")
            for i, rule in enumerate(r.rules):
                if rule.floor not in known:
                    raise ValueError(f"route {r.name!r}: rules[{i}].floor names unknown variant {rule.floor!r}")
        _unique("rollouts", [r.route for r in self.rollouts], what="route")
        by_name = {r.name: r for r in self.routes}
        for i, ro in enumerate(self.rollouts):
            route = by_name.get(ro.route)
            if route is None:
                raise ValueError(f"rollouts[{i}]: route {ro.route!r} does not exist (routes: {', '.join(by_name)})")
            rungs = route.variants or names
            for field, value in (("baseline", ro.baseline), ("candidate", ro.candidate)):
                if value not in rungs:
                    raise ValueError(f"rollouts[{i}]: {field} {value!r} is not a variant of route {ro.route!r}")
            if route.canary is not None:
                raise ValueError(f"rollouts[{i}]: route {ro.route!r} already has a fixed canary; a rollout manages it")
        return self

    def variant(self, name: str) -> LocalVariant | UpstreamVariant:
        return next(v for v in self.variants if v.name == name)


def _unique(section: str, names: list[str], what: str = "name") -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ValueError(f"{section}: {what} {n!r} appears twice")
        seen.add(n)


def _format_errors(source: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith(("function-after", "tagged-union")))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{source}: {loc or '(top level)'}: {msg}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "<config>") -> GatewayConfig:
    """Validate already-parsed YAML; a ``ConfigError`` lists every problem as ``source: key.path: problem``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(source, e)) from None


def load_config(path: str | Path) -> GatewayConfig:
    """Read and validate a YAML config file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    return parse_config(data, str(p))

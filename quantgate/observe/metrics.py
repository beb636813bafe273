"""Prometheus metrics of one gateway, on a registry the app owns (no process-global registry).

Names follow Prometheus conventions (``_total`` counters, ``_seconds`` histograms). The dashboard's
headline figures are ratios of these series: validation failure rate, tool-call success rate
(``tool_calls_total{result="valid"}`` over all), refusal rate, p95/p99 from the histograms, and
cost per successful request (``cost_total`` over ``successes_total``, both counting every attempt's
cost, escalations and retries included).

Trade-off: labels are bounded by configuration (routes, variants, check codes), never by request
content or tenant keys, so the series count stays small and scrapes stay cheap.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["GatewayMetrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        r = self.registry = registry or CollectorRegistry(auto_describe=True)
        p = "quantgate_"
        self.requests = Counter(p + "requests", "Requests, by route, final variant and HTTP status "
                                "('-' where the request was refused before one was known)",
                                ["route", "variant", "status"], registry=r)
        self.successes = Counter(p + "successes", "Requests answered with a valid completion", ["route", "variant"],
                                 registry=r)
        self.attempts = Counter(p + "attempts", "Engine attempts, by variant and outcome", ["variant", "outcome"],
                                registry=r)
        self.validation_failures = Counter(p + "validation_failures", "Failed answer checks, by variant, check and code",
                                           ["variant", "check", "code"], registry=r)
        self.tool_calls = Counter(p + "tool_calls", "Answers that call tools, by variant and validity",
                                  ["variant", "result"], registry=r)
        self.refusals = Counter(p + "refusals", "Answers that open with a refusal, by route and variant",
                                ["route", "variant"], registry=r)
        self.escalations = Counter(p + "escalations", "Escalations to a higher-precision variant",
                                   ["route", "from_variant", "to_variant", "reason"], registry=r)
        self.shed = Counter(p + "shed", "Requests refused before an engine call, by reason", ["reason"], registry=r)
        self.tokens = Counter(p + "tokens", "Tokens metered, every attempt included", ["variant", "kind"], registry=r)
        self.cost = Counter(p + "cost", "Cost metered, every attempt included", ["route", "variant"], registry=r)
        self.queue_wait = Histogram(p + "queue_wait_seconds", "Time waiting for an engine slot", ["variant"],
                                    buckets=_LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram(p + "time_to_first_token_seconds", "Time to the first byte of content sent", ["route"],
                              buckets=_LATENCY_BUCKETS, registry=r)
        self.latency = Histogram(p + "request_seconds", "Total request latency", ["route"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.rollout_weight = Gauge(p + "rollout_canary_weight", "Canary weight a rollout has set", ["route"], registry=r)
        self.rollout_state = Gauge(p + "rollout_state", "1 for the rollout's current state", ["route", "state"], registry=r)
        self.rollout_decisions = Counter(p + "rollout_decisions", "Rollout decisions, by action", ["route", "action"],
                                         registry=r)
        self.rollout_evidence = Gauge(p + "rollout_evidence", "Judge evidence per guard metric (e-values, ratio)",
                                      ["route", "metric", "kind"], registry=r)
        self.shadow_comparisons = Counter(p + "shadow_comparisons", "Canary answers replayed on the baseline, by agreement",
                                          ["route", "result"], registry=r)
        self.shadow_flips = Counter(p + "shadow_flips", "Shadow comparisons where one side failed a check the other passed",
                                    ["route", "direction"], registry=r)
        self.shadow_token_kl = Histogram(p + "shadow_token_kl", "Mean per-token KL(canary || baseline) of shadowed answers",
                                         ["route"], buckets=(0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1, 3), registry=r)
        self.shadow_token_top1 = Histogram(p + "shadow_token_top1", "Top-1 token agreement of shadowed answers",
                                           ["route"], buckets=(0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 1.0), registry=r)
        self.shadow_dropped = Counter(p + "shadow_dropped", "Shadow replays dropped because the queue was full",
                                      ["route"], registry=r)
        self.drift_statistic = Gauge(p + "drift_statistic", "Latest drift statistic of a request feature against the reference",
                                     ["route", "feature", "statistic"], registry=r)
        self.drift_alerts = Counter(p + "drift_alerts", "Drift alerts, by route and feature", ["route", "feature"],
                                    registry=r)
        self.in_flight = Gauge(p + "in_flight", "Requests holding an engine slot", ["variant"], registry=r)
        self.queue_depth = Gauge(p + "queue_depth", "Requests waiting for an engine slot", ["variant"], registry=r)
        self.event_log_dropped = Gauge(p + "event_log_dropped", "Events dropped since start because the event "
                                       "log's writer fell behind", registry=r)

    def track_queue(self, variant: str, in_flight: Callable[[], int], queued: Callable[[], int]) -> None:
        """Read the admission state at scrape time instead of updating gauges on every request."""
        self.in_flight.labels(variant).set_function(in_flight)
        self.queue_depth.labels(variant).set_function(queued)

    def track_event_log(self, dropped: Callable[[], int]) -> None:
        self.event_log_dropped.set_function(dropped)

    def render(self) -> bytes:
        return generate_latest(self.registry)

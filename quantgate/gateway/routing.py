"""Precision-aware routing: which rung of the ladder serves a request, what it may escalate to, and why.

The route sets the allowed rungs and a floor; rules on headers, tags and metadata raise the floor
(``x-quantgate-risk: high`` keeps a request on high precision); a canary takes its weighted share,
assigned by a hash of the user or session so a conversation stays on one variant; a tenant close to
its budget is sent to the cheapest rung at or above the floor. Every step appends to the decision's
reason, which the response header and the event log carry. The canary weight lives in the router
(not the config) because the rollout controller moves it at run time.

Trade-off: floors and the ladder are by rung, so "cheaper" means "lower on the ladder" unless the
variants' prices say otherwise; a per-token price comparison decides the budget downgrade.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from quantgate.config import GatewayConfig, RouteConfig
from quantgate.gateway.protocol import ApiError

__all__ = ["Decision", "RequestFacts", "Router", "sticky_fraction"]


@dataclass(frozen=True)
class RequestFacts:
    """What routing may look at, gathered once from the request and its headers."""

    headers: Mapping[str, str]
    tags: frozenset[str]
    metadata: Mapping[str, str]
    user: str | None
    session: str | None
    budget_fraction: float = 0.0  # of the tenant's budget already spent or reserved; 0 without a budget
    downgrade_at: float = 1.0     # the tenant's threshold for cheaper variants


@dataclass(frozen=True)
class Decision:
    route: str
    variant: str
    ladder: tuple[str, ...]  # the chosen variant, then the rungs escalation may climb, in order
    floor: str
    reason: str
    canary: bool = False
    arm: str | None = None  # "canary" / "baseline" when a canary coin was tossed and decided the variant
    weight: float = 0.0     # the canary weight the coin was tossed with


def sticky_fraction(route: str, key: str) -> float:
    """A stable number in [0, 1) for ``key`` on ``route`` (BLAKE2b, so it is the same on every replica)."""
    h = hashlib.blake2b(f"{route}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


class Router:
    def __init__(self, config: GatewayConfig):
        self._ladder = list(config.ladder)
        self._rank = {n: i for i, n in enumerate(self._ladder)}
        self._routes = {r.model: r for r in config.routes}
        self._price = {v.name: v.price.prompt_per_mtok + v.price.completion_per_mtok for v in config.variants}
        self._weights: dict[str, float] = {r.name: r.canary.weight for r in config.routes if r.canary}
        self._canary: dict[str, tuple[str, str]] = {r.name: (r.canary.variant, r.canary.sticky)
                                                    for r in config.routes if r.canary}
        self._default: dict[str, str] = {}

    @property
    def ladder(self) -> list[str]:
        return list(self._ladder)

    def add_variant(self, name: str, price: Any, position: int | None = None) -> None:
        """Put a new rung on the ladder at ``position`` (0 = lowest; default: the top)."""
        ladder = [n for n in self._ladder if n != name]
        ladder.insert(len(ladder) if position is None else max(0, min(position, len(ladder))), name)
        self._price[name] = price.prompt_per_mtok + price.completion_per_mtok
        self._ladder, self._rank = ladder, {n: i for i, n in enumerate(ladder)}

    def remove_variant(self, name: str) -> None:
        ladder = [n for n in self._ladder if n != name]
        # New lists, not edits in place: a decision being made keeps a consistent view.
        self._ladder, self._rank = ladder, {n: i for i, n in enumerate(ladder)}

    @property
    def models(self) -> list[str]:
        return list(self._routes)

    def route_for(self, model: str) -> RouteConfig:
        route = self._routes.get(model)
        if route is None:
            raise ApiError(404, f"model {model!r} does not exist; available: {', '.join(self._routes)}",
                           param="model", code="model_not_found")
        return route

    def route_name(self, model: str) -> str | None:
        """The name of the route serving ``model``, or None when no route does."""
        route = self._routes.get(model)
        return route.name if route is not None else None

    def route_by_name(self, name: str) -> RouteConfig:
        return next(r for r in self._routes.values() if r.name == name)

    def canary_weight(self, route: str) -> float | None:
        return self._weights.get(route)

    def set_canary_weight(self, route: str, weight: float) -> None:
        if route not in self._weights:
            raise KeyError(f"route {route!r} has no canary")
        self._weights[route] = min(1.0, max(0.0, weight))

    def attach_canary(self, route: str, variant: str, sticky: str, weight: float, baseline: str) -> None:
        """Give ``route`` a canary of ``variant`` against ``baseline`` (the rollout controller's handle)."""
        self._canary[route] = (variant, sticky)
        self._default[route] = baseline
        self.set_weight_unchecked(route, weight)

    def set_weight_unchecked(self, route: str, weight: float) -> None:
        self._weights[route] = min(1.0, max(0.0, weight))

    def set_default(self, route: str, variant: str) -> None:
        """Serve ``variant`` when nothing else decides (a completed rollout's candidate)."""
        self._default[route] = variant

    def default_for(self, route: RouteConfig) -> str | None:
        return self._default.get(route.name, route.default)

    def _rungs(self, route: RouteConfig) -> list[str]:
        allowed = set(route.variants) if route.variants else set(self._ladder)
        return [n for n in self._ladder if n in allowed]

    def decide(self, route: RouteConfig, facts: RequestFacts) -> Decision:
        rungs = self._rungs(route)
        floor = route.floor if route.floor in rungs else rungs[0]
        why = [f"route {route.name}", f"floor {floor}"]
        for rule in route.rules:
            hit, what = _matches(rule.header, rule.tag, rule.metadata, rule.equals, facts)
            if hit and self._rank[rule.floor] > self._rank[floor]:
                floor = rule.floor
                why.append(rule.reason or f"{what} -> floor {floor}")
        eligible = [n for n in rungs if self._rank[n] >= self._rank[floor]]
        if not eligible:
            raise ApiError(503, f"route {route.name!r} has no variant at or above floor {floor!r}",
                           "server_error", code="no_variant")
        default = self._default.get(route.name, route.default)
        choice = default if default in eligible else eligible[0]
        canary, arm = False, None
        weight = self._weights.get(route.name)
        if route.name in self._canary and weight:
            cand, sticky = self._canary[route.name]
            key = facts.user if sticky == "user" else facts.session if sticky == "session" else None
            if cand not in eligible:
                why.append(f"canary {cand} below floor, skipped")
            elif key is None and sticky != "none":
                why.append(f"canary skipped: no {sticky} to stick to")
            else:
                u = sticky_fraction(route.name, key) if key is not None else _random_fraction()
                if u < weight:
                    choice, canary, arm = cand, True, "canary"
                    why.append(f"canary {cand} {weight:.0%} (bucket {u:.3f})")
                elif choice == default:
                    arm = "baseline"
        if route.downgrade_near_budget and facts.budget_fraction > 0 and not canary:
            if facts.budget_fraction >= facts.downgrade_at:
                cheapest = min(eligible, key=lambda n: (self._price[n], self._rank[n]))
                if cheapest != choice:
                    choice, arm = cheapest, None
                    why.append(f"budget {facts.budget_fraction:.0%} spent -> cheaper {choice}")
        why.append(f"-> {choice}")
        above = [n for n in eligible if self._rank[n] > self._rank[choice]]
        return Decision(route.name, choice, (choice, *above), floor, "; ".join(why), canary, arm, weight or 0.0)


def _random_fraction() -> float:
    import secrets

    return secrets.randbelow(2**32) / 2**32


def _matches(header: str | None, tag: str | None, metadata: str | None, equals: str | None,
             facts: RequestFacts) -> tuple[bool, str]:
    if tag is not None:
        return tag in facts.tags, f"tag {tag}"
    source, name = (facts.headers, header.lower()) if header is not None else (facts.metadata, metadata or "")
    value = source.get(name)
    if value is None:
        return False, ""
    hit = equals is None or value.strip().lower() == equals.lower()
    return hit, f"{'header' if header else 'metadata'} {name}={value}"


def parse_tags(header: str | None, metadata: Mapping[str, str] | None) -> frozenset[str]:
    """Tags from the ``x-quantgate-tags`` header and ``metadata.tags``, both comma-separated."""
    raw = f"{header or ''},{(metadata or {}).get('tags', '')}"
    return frozenset(t.strip() for t in raw.split(",") if t.strip())

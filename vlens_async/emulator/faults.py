"""Fault injection: what can go wrong, the spec syntax that asks for it, and the seeded dice.

Fault spec (``--faults``, ``FaultConfig.parse``, the control API), comma-separated items::

    KIND:PROBABILITY[xCOUNT][@ENDPOINT]     e.g. 500:0.05  429:0.1@liveness  503:1x2@id_front
    retry_after=DURATION                    Retry-After of injected 429s (default 1s)
    slow_duration=DURATION                  how long a ``slow`` body takes to arrive (default 2s)

KIND is one of ``500 502 503 429 reset_before reset_after slow truncated malformed``; PROBABILITY is
0..1 (or a percentage, ``5%``); ``xCOUNT`` stops injecting after COUNT times; ENDPOINT is a name
from :mod:`.endpoints` (default ``*``, every endpoint; a rule for a named endpoint replaces the
``*`` rule of the same kind there). The probabilities of one endpoint must add up to at most 1.

Latency spec (``--latency``, repeatable; several in one string separated by ``;``)::

    fixed:200ms[@ENDPOINT]   uniform:50ms-150ms   lognormal:median=200ms,sigma=0.5   none

Durations take ``ms`` or ``s`` (a bare number is seconds) and are at most an hour
(:data:`MAX_DURATION`); a lognormal ``sigma`` is at most 10; a drawn delay never exceeds an hour.

What the kinds do: ``500`` an envelope with a generic message; ``502`` an HTML page as a proxy
sends; ``503`` an empty body; ``429`` an envelope with ``Retry-After``; ``reset_before`` resets the
connection before any work; ``reset_after`` does the work (the transaction changes) and then resets;
``slow`` does the work and dribbles the body over ``slow_duration``; ``truncated`` and ``malformed``
do the work and send a cut or broken JSON body with status 200.

Reproducible: each endpoint draws from its own ``random.Random`` seeded with the config seed and the
endpoint name, one draw per request, so a run's fault sequence per endpoint does not depend on how
requests to different endpoints interleave.
"""

from __future__ import annotations

import enum
import math
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Final, Literal

import attrs

from .endpoints import canonical_endpoint

__all__ = [
    "MAX_DURATION",
    "MAX_SIGMA",
    "POST_WORK_FAULTS",
    "PRE_WORK_FAULTS",
    "FaultConfig",
    "FaultKind",
    "FaultPlan",
    "FaultRule",
    "Latency",
    "LatencyRule",
    "parse_duration",
]


class FaultKind(enum.StrEnum):
    """A kind of injected failure."""

    HTTP_500 = "500"
    HTTP_502 = "502"
    HTTP_503 = "503"
    HTTP_429 = "429"
    RESET_BEFORE = "reset_before"
    RESET_AFTER = "reset_after"
    SLOW = "slow"
    TRUNCATED = "truncated"
    MALFORMED = "malformed"


# Pre-work faults answer before the handler runs (no state changes); post-work faults let it run.
PRE_WORK_FAULTS: Final = frozenset(
    {
        FaultKind.HTTP_500,
        FaultKind.HTTP_502,
        FaultKind.HTTP_503,
        FaultKind.HTTP_429,
        FaultKind.RESET_BEFORE,
    }
)
POST_WORK_FAULTS: Final = frozenset(FaultKind) - PRE_WORK_FAULTS
_KIND_ORDER: Final = tuple(FaultKind)
MAX_DURATION: Final = 3600.0  # seconds: any latency, Retry-After or slow body
MAX_SIGMA: Final = 10.0

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)?\s*$", re.IGNORECASE)
_FAULT_ITEM = re.compile(
    r"^(?P<kind>[a-z0-9_]+):(?P<prob>[0-9.]+%?)(?:x(?P<count>\d+))?(?:@(?P<endpoint>[\w*]+))?$",
    re.IGNORECASE,
)


def parse_duration(text: str) -> float:
    """Seconds from ``200ms``, ``1.5s`` or ``2`` (seconds); raises ``ValueError``."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"bad duration {text!r} (use 200ms, 1.5s or 2)")
    value = float(match.group(1))
    seconds = value / 1000.0 if (match.group(2) or "s").lower() == "ms" else value
    return _check_duration(seconds, text)


def _check_duration(seconds: float, what: object) -> float:
    """``seconds`` when it is a finite duration from 0 to :data:`MAX_DURATION`."""
    if not math.isfinite(seconds) or not 0.0 <= seconds <= MAX_DURATION:
        raise ValueError(f"duration {what!r} must be within 0..{MAX_DURATION:g} s")
    return seconds


def _duration_field(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{attribute.name} must be a number of seconds")
    _check_duration(float(value), value)


def _split_endpoint(text: str) -> tuple[str, str]:
    body, sep, endpoint = text.strip().rpartition("@")
    if not sep:
        return text.strip(), "*"
    return body.strip(), canonical_endpoint(endpoint)


@attrs.frozen
class Latency:
    """A delay: ``fixed`` (a), ``uniform`` (a..b) or ``lognormal`` (median a, sigma b)."""

    kind: Literal["none", "fixed", "uniform", "lognormal"] = "none"
    a: float = attrs.field(default=0.0, validator=_duration_field)
    b: float = attrs.field(default=0.0)

    @b.validator
    def _check_b(self, _: attrs.Attribute[float], value: float) -> None:
        if self.kind == "lognormal":
            if not math.isfinite(value) or not 0.0 <= value <= MAX_SIGMA:
                raise ValueError(f"lognormal sigma must be within 0..{MAX_SIGMA:g}")
        else:
            _duration_field(self, attrs.fields(Latency).b, value)

    def sample(self, rng: random.Random) -> float:
        """One delay in seconds."""
        if self.kind == "fixed":
            return self.a
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b)
        if self.kind == "lognormal":
            return self.a * math.exp(self.b * rng.gauss(0.0, 1.0))
        return 0.0

    def spec(self) -> str:
        """The spec string this distribution was parsed from (normalised)."""
        if self.kind == "fixed":
            return f"fixed:{self.a * 1000:g}ms"
        if self.kind == "uniform":
            return f"uniform:{self.a * 1000:g}ms-{self.b * 1000:g}ms"
        if self.kind == "lognormal":
            return f"lognormal:median={self.a * 1000:g}ms,sigma={self.b:g}"
        return "none"

    @classmethod
    def parse(cls, text: str) -> Latency:
        """Parse ``fixed:200ms``, ``uniform:50ms-150ms``, ``lognormal:median=200ms,sigma=0.5``."""
        kind, _, args = text.strip().partition(":")
        kind = kind.strip().lower()
        if kind == "none":
            return cls()
        if kind == "fixed":
            return cls("fixed", parse_duration(args))
        if kind == "uniform":
            low, sep, high = args.partition("-")
            if not sep:
                raise ValueError(f"bad uniform latency {text!r} (use uniform:50ms-150ms)")
            a, b = parse_duration(low), parse_duration(high)
            if b < a:
                raise ValueError(f"uniform latency {text!r}: the upper bound is below the lower")
            return cls("uniform", a, b)
        if kind == "lognormal":
            params = dict(p.strip().partition("=")[::2] for p in args.split(","))
            if set(params) != {"median", "sigma"}:
                raise ValueError(f"bad lognormal latency {text!r} (use median=200ms,sigma=0.5)")
            return cls("lognormal", parse_duration(params["median"]), float(params["sigma"]))
        raise ValueError(f"unknown latency {text!r} (fixed:, uniform:, lognormal: or none)")


@attrs.frozen
class FaultRule:
    """Inject ``kind`` with ``probability`` on ``endpoint`` (``*``: all), ``count`` times max."""

    kind: FaultKind = attrs.field(converter=FaultKind)
    probability: float = attrs.field()
    endpoint: str = attrs.field(default="*", converter=canonical_endpoint)
    count: int | None = None

    @probability.validator
    def _check_probability(self, _: attrs.Attribute[float], value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"fault probability must be within 0..1, not {value}")

    def spec(self) -> str:
        """This rule in spec syntax."""
        out = f"{self.kind.value}:{self.probability:g}"
        if self.count is not None:
            out += f"x{self.count}"
        return out if self.endpoint == "*" else f"{out}@{self.endpoint}"


@attrs.frozen
class LatencyRule:
    """Delay requests to ``endpoint`` (``*``: all) by draws from ``latency``."""

    latency: Latency
    endpoint: str = attrs.field(default="*", converter=canonical_endpoint)

    def spec(self) -> str:
        """This rule in spec syntax."""
        text = self.latency.spec()
        return text if self.endpoint == "*" else f"{text}@{self.endpoint}"


def _rules(values: Iterable[FaultRule]) -> tuple[FaultRule, ...]:
    return tuple(values)


def _latency_rules(values: Iterable[LatencyRule]) -> tuple[LatencyRule, ...]:
    return tuple(values)


@attrs.frozen
class FaultConfig:
    """The faults and latencies to inject; empty by default (a well-behaved server)."""

    rules: tuple[FaultRule, ...] = attrs.field(default=(), converter=_rules)
    latency: tuple[LatencyRule, ...] = attrs.field(default=(), converter=_latency_rules)
    retry_after: float = attrs.field(default=1.0, validator=_duration_field)
    slow_duration: float = attrs.field(default=2.0, validator=_duration_field)

    def __attrs_post_init__(self) -> None:
        endpoints = {r.endpoint for r in self.rules}
        for endpoint in endpoints | {"*"}:
            total = sum(r.probability for r in self._effective(endpoint).values())
            if total > 1.0 + 1e-9:
                raise ValueError(f"fault probabilities for {endpoint!r} add up to {total:g} > 1")

    def _effective(self, endpoint: str) -> dict[FaultKind, FaultRule]:
        chosen: dict[FaultKind, FaultRule] = {}
        for rule in self.rules:
            if rule.endpoint == "*":
                chosen.setdefault(rule.kind, rule)
        for rule in self.rules:
            if rule.endpoint == endpoint and endpoint != "*":
                chosen[rule.kind] = rule
        return chosen

    def effective(self, endpoint: str) -> dict[FaultKind, FaultRule]:
        """The rule that applies per kind on ``endpoint`` (a named rule beats ``*``)."""
        return self._effective(canonical_endpoint(endpoint))

    def latency_for(self, endpoint: str) -> Latency | None:
        """The latency distribution for ``endpoint`` (a named rule beats ``*``)."""
        found: Latency | None = None
        for rule in self.latency:
            if rule.endpoint == endpoint:
                return rule.latency
            if rule.endpoint == "*":
                found = rule.latency
        return found

    def spec(self) -> dict[str, object]:
        """JSON-friendly description: the fault spec string and latency specs."""
        items = [r.spec() for r in self.rules]
        items += [f"retry_after={self.retry_after:g}s", f"slow_duration={self.slow_duration:g}s"]
        return {"faults": ",".join(items), "latency": [r.spec() for r in self.latency]}

    @classmethod
    def parse(cls, faults: str | None = None, latency: str | Sequence[str] = ()) -> FaultConfig:
        """Build a config from a fault spec and latency specs (see the module docstring)."""
        rules: list[FaultRule] = []
        params: dict[str, float] = {}
        if (faults or "").strip().lower() == "none":  # as --latency none
            faults = ""
        for raw in (faults or "").split(","):
            item = raw.strip()
            if not item:
                continue
            if "=" in item and ":" not in item:
                name, _, value = item.partition("=")
                name = name.strip().lower()
                if name not in ("retry_after", "slow_duration"):
                    raise ValueError(f"unknown fault parameter {name!r}")
                params[name] = parse_duration(value)
                continue
            rules.append(_parse_rule(item))
        specs = [latency] if isinstance(latency, str) else list(latency)
        latency_rules = [
            _parse_latency_rule(part) for spec in specs for part in spec.split(";") if part.strip()
        ]
        return cls(rules=tuple(rules), latency=tuple(latency_rules), **params)


def _parse_rule(item: str) -> FaultRule:
    match = _FAULT_ITEM.match(item.replace(" ", ""))
    if not match:
        raise ValueError(f"bad fault item {item!r} (use KIND:PROB[xCOUNT][@ENDPOINT])")
    kind = match.group("kind").lower()
    if kind not in {k.value for k in FaultKind}:
        known = " ".join(k.value for k in FaultKind)
        raise ValueError(f"unknown fault kind {kind!r} (known: {known})")
    prob_text = match.group("prob")
    prob = float(prob_text[:-1]) / 100.0 if prob_text.endswith("%") else float(prob_text)
    count = int(match.group("count")) if match.group("count") else None
    return FaultRule(FaultKind(kind), prob, match.group("endpoint") or "*", count)


def _parse_latency_rule(text: str) -> LatencyRule:
    body, endpoint = _split_endpoint(text)
    return LatencyRule(Latency.parse(body), endpoint)


class FaultPlan:
    """The run-time dice for a :class:`FaultConfig`: seeded per endpoint, counting injections."""

    def __init__(self, config: FaultConfig, seed: int) -> None:
        self.config = config
        self.seed = seed
        self.injected: Counter[str] = Counter()
        self._fault_rngs: dict[str, random.Random] = {}
        self._latency_rngs: dict[str, random.Random] = {}
        self._used: Counter[FaultRule] = Counter()
        self._tables: dict[str, tuple[tuple[FaultKind, FaultRule], ...]] = {}

    def _rng(self, table: dict[str, random.Random], endpoint: str, what: str) -> random.Random:
        rng = table.get(endpoint)
        if rng is None:
            rng = table[endpoint] = random.Random(f"{self.seed}:{endpoint}:{what}")
        return rng

    def draw(self, endpoint: str) -> FaultKind | None:
        """The fault for the next request to ``endpoint``, or ``None``.

        Exactly one random number is drawn per request, even when a rule ran out of its count,
        so the sequence stays aligned with the request count.
        """
        table = self._tables.get(endpoint)
        if table is None:
            effective = self.config.effective(endpoint)
            table = tuple((k, effective[k]) for k in _KIND_ORDER if k in effective)
            self._tables[endpoint] = table
        if not table:
            return None
        u = self._rng(self._fault_rngs, endpoint, "faults").random()
        acc = 0.0
        for kind, rule in table:
            if rule.count is not None and self._used[rule] >= rule.count:
                continue
            acc += rule.probability
            if u < acc:
                self._used[rule] += 1
                self.injected[kind.value] += 1
                return kind
        return None

    def delay(self, endpoint: str) -> float:
        """The latency to add to the next request to ``endpoint``, in seconds (>= 0)."""
        latency = self.config.latency_for(endpoint)
        if latency is None or latency.kind == "none":
            return 0.0
        drawn = latency.sample(self._rng(self._latency_rngs, endpoint, "latency"))
        return min(max(0.0, drawn), MAX_DURATION)

"""What one configuration's rounds measured: a closed-loop side (bare or billing) and row
(:class:`Side`, :class:`Row`), and the open-loop ones at a fixed rate (:class:`OpenSide`,
:class:`OpenRow`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from config import JSON_GOAL_CLIENTS, READ_GOAL, THROUGHPUT_GOALS, Config
from http1 import percentile


@dataclass
class Side:
    """One kind (bare or billing) of one configuration, all its rounds pooled."""

    rounds: list[dict[str, Any]] = field(default_factory=list)
    #: Each request's latency (ms); for intake + outcome pairs, each pair's.
    latencies: list[float] = field(default_factory=list, repr=False)
    #: Pairs only: each outcome report's own latency (ms), its send to its answer.
    outcome_latencies: list[float] = field(default_factory=list, repr=False)
    cpu_s: float = 0.0
    db_cpu_s: float = 0.0
    load_cpu_s: float = 0.0

    @property
    def ok(self) -> int:
        return sum(r["requests"] - r["non_2xx"] for r in self.rounds)

    @property
    def rps(self) -> float:
        elapsed = sum(r["elapsed_s"] for r in self.rounds)
        return self.ok / elapsed if elapsed else 0.0

    @property
    def non_2xx(self) -> int:
        return sum(r["non_2xx"] + r["errors"] for r in self.rounds)

    @property
    def total_2xx(self) -> int:
        return sum(r["total_2xx"] for r in self.rounds)

    @property
    def settled_2xx(self) -> int:
        """Pairs: outcome reports answered 2xx over the whole run (each settled a hold)."""
        return sum(r.get("settled_2xx", 0) for r in self.rounds)

    def pct(self, p: float) -> float:
        return percentile(sorted(self.latencies), p)

    def outcome_pct(self, p: float) -> float:
        return percentile(sorted(self.outcome_latencies), p)

    def cpu_us(self, seconds: float) -> float:
        """CPU per answered request (warm-up included: the CPU was measured over it too)."""
        return 1e6 * seconds / self.total_2xx if self.total_2xx else 0.0

    def summary(self) -> dict[str, Any]:
        outcome = (
            {
                "outcome_p50_ms": round(self.outcome_pct(50), 2),
                "outcome_p99_ms": round(self.outcome_pct(99), 2),
                "settled_2xx": self.settled_2xx,
            }
            if self.outcome_latencies
            else {}
        )
        return {
            "rps": round(self.rps, 1),
            "p50_ms": round(self.pct(50), 2),
            "p99_ms": round(self.pct(99), 2),
            **outcome,
            "requests": len(self.latencies),
            "non_2xx_or_errors": self.non_2xx,
            "server_cpu_us_per_req": round(self.cpu_us(self.cpu_s), 1),
            "db_cpu_us_per_req": round(self.cpu_us(self.db_cpu_s), 1),
            "loadgen_cpu_us_per_req": round(self.cpu_us(self.load_cpu_s), 1),
            "rounds": self.rounds,
        }


@dataclass
class Row:
    config: Config
    bare: Side
    billing: Side
    busy_before: float
    ledger_expected: int = 0
    ledger_found: int = -1
    #: Charges the store may hold beyond the 2xx answers: requests sent but never answered
    #: (the open loop's censored ones, failed connections), which the server may have charged.
    ledger_slack: int = 0
    problems: list[str] = field(default_factory=list)
    open_rows: list[OpenRow] = field(default_factory=list)
    #: What the gateway's ``RateLimit-Limit`` header said for a benchmarked client.
    rate_limit: str = ""
    #: Read rows: the size of one answer to ``GET /api/jobs``, bare and billing (bytes).
    answer_bytes: tuple[int, int] = (0, 0)
    #: After the row, the benchmarked clients' holds (``seed.holds``): the most jobs one of
    #: them held at once (an intake row settles none: the last count is the largest), and
    #: the concurrency caps the store holds for them.
    most_held: int = -1
    caps: tuple[int | None, ...] = ()
    #: Pairs: outcome reports answered 2xx, and the jobs the store holds as succeeded.
    settled_expected: int = 0
    settled_found: int = -1

    @property
    def ratio(self) -> float:
        return self.billing.rps / self.bare.rps if self.bare.rps else 0.0

    @property
    def round_ratios(self) -> list[float]:
        return [
            b["rps"] / a["rps"] if a["rps"] else 0.0
            for a, b in zip(self.bare.rounds, self.billing.rounds, strict=True)
        ]

    @property
    def p99_ratio(self) -> float:
        bare = self.bare.pct(99)
        return self.billing.pct(99) / bare if bare else 0.0

    @property
    def throughput_goal(self) -> float | None:
        c = self.config
        if c.section == "read":
            return READ_GOAL
        if c.section != "main":
            return None
        if c.backend == "json" and c.clients != JSON_GOAL_CLIENTS:
            return None
        return THROUGHPUT_GOALS[c.backend]

    def non_2xx(self) -> dict[str, dict[str, int]]:
        """Answers other than 2xx (and failed requests, as "error"), by side and status, the
        open-loop rounds included."""
        sides = {"bare": [self.bare], "billing": [self.billing]}
        for o in self.open_rows:
            sides["bare"].append(o.bare)
            sides["billing"].append(o.billing)
        out: dict[str, dict[str, int]] = {}
        for name, measured in sides.items():
            counts: dict[str, int] = {}
            for side in measured:
                for r in side.rounds:
                    for status, n in r["statuses"].items():
                        if not status.startswith("2"):
                            counts[status] = counts.get(status, 0) + n
                    if r["errors"]:
                        counts["error"] = counts.get("error", 0) + r["errors"]
            if counts:
                out[name] = counts
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "ratio": round(self.ratio, 3),
            "round_ratios": [round(r, 3) for r in self.round_ratios],
            "p99_ratio": round(self.p99_ratio, 2),
            "busy_before_pct": round(100 * self.busy_before, 1),
            "ledger_expected": self.ledger_expected,
            "ledger_found": self.ledger_found,
            "ledger_slack": self.ledger_slack,
            "rate_limit_header": self.rate_limit,
            "answer_bytes": self.answer_bytes,
            "most_held": self.most_held,
            "caps": list(self.caps),
            "settled_expected": self.settled_expected,
            "settled_found": self.settled_found,
            "non_2xx": self.non_2xx(),
            "problems": self.problems,
            "open_loop": [o.summary() for o in self.open_rows],
            "bare": self.bare.summary(),
            "billing": self.billing.summary(),
        }


@dataclass
class OpenSide:
    """One kind (bare or billing) at one rate, open loop, all its rounds pooled. Latencies are
    from each request's scheduled send time; censored requests (no answer by the run's
    deadline) are in them at their lower bound."""

    rounds: list[dict[str, Any]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list, repr=False)

    def pct(self, p: float) -> float:
        return percentile(sorted(self.latencies), p)

    def _sum(self, name: str) -> int:
        return sum(int(r[name]) for r in self.rounds)

    @property
    def requests(self) -> int:
        return self._sum("requests")

    @property
    def censored(self) -> int:
        return self._sum("unsent") + self._sum("unanswered")

    @property
    def non_2xx(self) -> int:
        return self._sum("non_2xx") + self._sum("errors")

    @property
    def rps(self) -> float:
        elapsed = sum(r["elapsed_s"] for r in self.rounds)
        return sum(r["rps"] * r["elapsed_s"] for r in self.rounds) / elapsed if elapsed else 0.0

    def generator(self, name: str, stat: str) -> float:
        """The worst round's ``stat`` (p50, p99, max) of the generator's ``name``
        (``dispatch_late_ms`` or ``conn_wait_ms``)."""
        return max((float(r[name][stat]) for r in self.rounds), default=0.0)

    def summary(self) -> dict[str, Any]:
        return {
            "rps": round(self.rps, 1),
            "p50_ms": round(self.pct(50), 2),
            "p99_ms": round(self.pct(99), 2),
            "requests": self.requests,
            "censored": self.censored,
            "non_2xx_or_errors": self.non_2xx,
            "rounds": self.rounds,
        }


@dataclass
class OpenRow:
    """Bare and billing at the same fixed rate, alternating, on one configuration's servers."""

    config: Config
    #: "fixed" (``OPEN_RATE``) or "half" (half the bare closed-loop throughput of the config).
    kind: str
    rate: float
    bare: OpenSide = field(default_factory=OpenSide)
    billing: OpenSide = field(default_factory=OpenSide)

    def added(self, p: float) -> float:
        """The latency billing adds at percentile ``p``: billing's minus bare's (ms)."""
        return self.billing.pct(p) - self.bare.pct(p)

    def generator_late(self, stat: str) -> float:
        """The generator's own lateness (``dispatch_late_ms``), worst round of either side."""
        return max(
            self.bare.generator("dispatch_late_ms", stat),
            self.billing.generator("dispatch_late_ms", stat),
        )

    @property
    def saturated(self) -> bool:
        """Some request had no answer by the deadline: the server (or the generator) did not
        keep up with the rate, and the percentiles are lower bounds."""
        return self.billing.censored > 0 or self.bare.censored > 0

    @property
    def label(self) -> str:
        return f"{self.config.label}, open loop at {self.rate:,.0f} req/s"

    def summary(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "rate": round(self.rate, 1),
            "added_p50_ms": round(self.added(50), 2),
            "added_p99_ms": round(self.added(99), 2),
            "saturated": self.saturated,
            "bare": self.bare.summary(),
            "billing": self.billing.summary(),
        }

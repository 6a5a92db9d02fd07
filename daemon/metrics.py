"""Prometheus metrics of one daemon, in a registry of its own.

Every authorization answer is counted by result and stable reason code
(``ratekeeper_authorizations_total{result="deny",reason="CPS_LIMIT"}``), every cut by
reason, every seat refusal, and every notification dropped. The registry is per daemon
so that tests running several daemons in one process count apart; the operator listener
exposes it (``prometheus_client.generate_latest(metrics.registry)``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from daemon.authorization import AuthorizationDecision, Reason


class Metrics:
    """The daemon's counters; label children of the hot ones are made once."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.authorizations = Counter(
            "ratekeeper_authorizations",
            "Authorization answers by result (allow/deny) and reason code.",
            ["result", "reason"],
            registry=self.registry,
        )
        self.cuts = Counter(
            "ratekeeper_call_cuts",
            "Live calls cut by the daemon, by reason code.",
            ["reason"],
            registry=self.registry,
        )
        self.seat_refusals = Counter(
            "ratekeeper_seat_refusals",
            "Agent seats refused or logged off past the seat limit, by tenant.",
            ["tenant"],
            registry=self.registry,
        )
        self._by_reason = {
            reason: self.authorizations.labels(
                "allow" if reason is Reason.OK else "deny", reason.value
            )
            for reason in Reason
        }

    def count_authorization(self, decision: AuthorizationDecision) -> None:
        """Count one answer."""
        self._by_reason[decision.reason].inc()

    def count_cut(self, reason: str) -> None:
        """Count one cut."""
        self.cuts.labels(reason or "UNKNOWN").inc()

    def authorizations_of(self, reason: Reason) -> float:
        """How many answers had ``reason`` (for reports and tests)."""
        value = self.registry.get_sample_value(
            "ratekeeper_authorizations_total",
            {"result": "allow" if reason is Reason.OK else "deny", "reason": reason.value},
        )
        return value or 0.0

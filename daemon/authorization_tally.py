"""Authorization answers counted in plain integers, exported to Prometheus at scrape time.

Every authorization is counted by reason and its duration observed in buckets. Through
``prometheus_client``'s ``Counter`` and ``Histogram`` that is three lock acquisitions and
a Python walk of the bucket bounds per answer (~2 us on the 2-core machine, a few per
cent of an HTTP authorization); here it is two list increments and a ``bisect``. The
daemon counts on its event loop only, and a scrape (also on that loop, ``daemon.api.ops``)
reads the integers: no lock is needed. The exported families are the same as before:
``ratekeeper_authorizations_total{result,reason}`` and the
``ratekeeper_authorization_seconds`` histogram.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from itertools import accumulate

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from daemon.authorization import Reason

_REASONS = tuple(Reason)
_INDEX = {reason: n for n, reason in enumerate(_REASONS)}


class AuthorizationTally(Collector):
    """Answers by reason and their durations (``count``); a Prometheus collector."""

    def __init__(self, buckets: Sequence[float]) -> None:
        if list(buckets) != sorted(set(buckets)):
            raise ValueError(f"bucket bounds must increase strictly: {list(buckets)!r}")
        self._bounds = tuple(buckets)
        self._answers = [0] * len(_REASONS)  # by reason, in ``Reason`` order
        self._buckets = [0] * (len(self._bounds) + 1)  # the last one: above every bound
        self._seconds = 0.0

    def count(self, reason: Reason, seconds: float | None = None) -> None:
        """One answer with ``reason``; its duration observed when ``seconds`` is given."""
        self._answers[_INDEX[reason]] += 1
        if seconds is not None:
            self._buckets[bisect_left(self._bounds, seconds)] += 1  # the first bound >= it
            self._seconds += seconds

    def answers(self, reason: Reason) -> int:
        """How many answers had ``reason``."""
        return self._answers[_INDEX[reason]]

    def collect(self) -> Iterator[Metric]:
        """The two families, read now."""
        answers = CounterMetricFamily(
            "ratekeeper_authorizations",
            "Authorization answers by result (allow/deny) and reason code.",
            labels=["result", "reason"],
        )
        for reason, count in zip(_REASONS, self._answers, strict=True):
            result = "allow" if reason is Reason.OK else "deny"
            answers.add_metric([result, reason.value], count)
        yield answers
        cumulative = list(accumulate(self._buckets))
        bounds = [floatToGoString(b) for b in self._bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        yield HistogramMetricFamily(
            "ratekeeper_authorization_seconds",
            "Time to answer one authorization.",
            buckets=list(zip(bounds, cumulative, strict=True)),
            sum_value=self._seconds,
        )

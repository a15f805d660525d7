"""Prometheus metrics of the server, in the ``serve/`` namespace.

Prometheus names cannot contain ``/``, so ``serve/decisions`` is exported as
``serve_decisions_total``. Every app gets its own registry (tests build many apps).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05,
                    0.1, 0.25, 0.5, 1.0, 2.5)


class FastHistogram:
    """An unlabelled histogram with one writer thread, exported exactly as
    :class:`prometheus_client.Histogram` exports one (``_bucket``, ``_count``, ``_sum``,
    ``_created``). :meth:`observe` is a bisect and two additions (~1k instructions instead of
    ~9k: no lock per bucket and value), for the per-commit and per-pass figures (issue 20).
    Only one thread may call :meth:`observe` (a scrape may see a count and a sum one
    observation apart, as with prometheus_client's own per-value locks).

    Args:
        name, documentation: As for ``Histogram``.
        buckets: Upper bounds, increasing (``+Inf`` is added).
        registry: Where it is collected.
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float],
                 registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self._bounds = [float(b) for b in buckets]
        self._le = [floatToGoString(b) for b in self._bounds] + ["+Inf"]
        self._counts = [0] * (len(self._bounds) + 1)
        self._sum = 0.0
        self._created = time.time()
        registry.register(self)

    def observe(self, amount: float) -> None:
        """Count one observation (``amount <= le`` for its bucket, as Prometheus)."""
        self._counts[bisect_left(self._bounds, amount)] += 1
        self._sum += amount

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation)]

    def collect(self) -> Iterator[Metric]:
        counts, total = list(self._counts), self._sum
        cum, acc = [], 0
        for le, c in zip(self._le, counts, strict=True):
            acc += c
            cum.append((le, float(acc)))
        m = HistogramMetricFamily(self.name, self.documentation)
        m.add_metric([], cum, total)
        m.samples.append(Sample(self.name + "_created", {}, self._created))
        yield m


class ServeMetrics:
    """The server's metrics (one :class:`CollectorRegistry` per instance)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.latency = Histogram("serve_request_duration_seconds", "Request latency by route.",
                                 ["route", "method", "status"], buckets=_LATENCY_BUCKETS,
                                 registry=r)
        self.decisions = Counter("serve_decisions_total", "Decisions made, by timing policy.",
                                 ["policy"], registry=r)
        self.sends = Counter("serve_sends_total", "Decisions that send, by timing policy.",
                             ["policy"], registry=r)
        self.guardrail_blocks = Counter(
            "serve_guardrail_blocks_total",
            "Decisions where a guardrail overrode a policy that wanted to send.",
            ["guardrail"], registry=r)
        self.feedback = Counter("serve_feedback_joins_total",
                                "Feedback reports joined to a decision, by result.",
                                ["result"], registry=r)
        self.shadow = Counter("serve_shadow_decisions_total", "Shadow decisions logged.",
                              ["policy"], registry=r)
        self.events = Counter("serve_events_total", "Activity events recorded.", ["event"],
                              registry=r)
        self.commit_batch = FastHistogram("serve_log_commit_requests",
                                      "Requests per group commit of the durable log.",
                                      buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024),
                                      registry=r)
        self.pass_rows = FastHistogram("serve_decide_pass_rows",
                                   "Decisions per vectorised pass of /v1/decide requests.",
                                   buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64),
                                   registry=r)
        self.commit_seconds = FastHistogram("serve_log_commit_seconds",
                                        "Duration of a group commit (incl. fsync).",
                                        buckets=_LATENCY_BUCKETS, registry=r)
        self.promotions = Counter("serve_policy_changes_total",
                                  "Policy swaps (promote, rollback, pointer change).",
                                  ["kind"], registry=r)
        self.triggers = Counter("serve_triggers_total", "Behaviour triggers by kind and "
                                "what happened (created, sent, requeued).", ["kind", "what"],
                                registry=r)
        self.users = Gauge("serve_users", "Users in the feature state.", registry=r)
        self.kill_switch = Gauge("serve_kill_switch", "1 when the kill switch is on.",
                                 registry=r)

    def on_commit(self, n_requests: int, seconds: float) -> None:
        """Writer-thread hook of :class:`~pushrl.serve.store.DurableLog`."""
        self.commit_batch.observe(n_requests)
        self.commit_seconds.observe(seconds)

"""A Prometheus collector that reads Slipway's DATABASE at scrape time (never Slurm): jobs by
team and state, GPUs held by running jobs, the queue-wait and push-to-pending histograms, team
balances, and the reconciler's ticks (duration, errors, Slurm command errors) as the ticks
recorded them (prom_ticks). A database that does not answer gives ``slipway_database_up 0``
instead of a failed scrape."""
from __future__ import annotations

from typing import Iterator

from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily, Metric)
from prometheus_client.registry import Collector

from ..services import log
from . import prom_queries as q
from . import prom_ticks

# name -> (kind, help); the names /metrics exposes from the database (prom.METRIC_NAMES)
FAMILIES = {
    "slipway_database_up": ("gauge", "1 when the database answered this scrape, else 0"),
    "slipway_jobs": ("gauge", "Slipway's jobs by team and state (every job in the database)"),
    "slipway_gpus_allocated": ("gauge", "GPUs held by running jobs, by GPU type (a shared "
                                        "type's shards as TYPE-shard)"),
    "slipway_job_queue_wait_seconds": ("histogram", "Seconds from submission to Slurm to the "
                                                    "start, of every job that started"),
    "slipway_job_push_to_pending_seconds": ("histogram", "Seconds from the push to the "
                                                         "submission (pending in Slurm)"),
    "slipway_team_balance_dollars": ("gauge", "Each team's balance in dollars"),
    "slipway_reconcile_tick_duration_seconds": ("histogram", "Seconds each reconciler tick "
                                                             "took (its own work)"),
    "slipway_reconcile_errors": ("counter", "Error lines reported by reconciler ticks"),
    "slipway_slurm_command_errors": ("counter", "Slurm commands that failed in reconciler "
                                                "ticks, by command"),
    "slipway_reconcile_last_tick_timestamp_seconds": ("gauge", "When the latest reconciler "
                                                               "tick ran (Unix time)"),
}


def _family(name: str, **kw) -> Metric:
    kind, doc = FAMILIES[name]
    cls = {"gauge": GaugeMetricFamily, "counter": CounterMetricFamily,
           "histogram": HistogramMetricFamily}[kind]
    return cls(name, doc, **kw)


class DatabaseCollector(Collector):
    def __init__(self, db) -> None:
        self.db = db

    def describe(self) -> Iterator[Metric]:
        for name in FAMILIES:
            yield _family(name)

    def collect(self) -> Iterator[Metric]:
        try:
            families = self._read()
        except Exception:  # noqa: BLE001 — a scrape must answer even when the database does not
            log.exception("/metrics: reading the database failed")
            families = []
        up = _family("slipway_database_up")
        up.add_metric([], 1.0 if families else 0.0)
        yield up
        yield from families

    def _read(self) -> list[Metric]:
        with self.db.session() as s:
            by_state = q.jobs_by_team_state(s)
            gpus = q.gpus_allocated(s)
            wait, wait_sum = q.queue_wait(s)
            push, push_sum = q.push_to_pending(s)
            balances = q.team_balances(s)
            ticks = prom_ticks.read(s)
        jobs = _family("slipway_jobs", labels=["team", "state"])
        for (team, state), n in sorted(by_state.items()):
            jobs.add_metric([team, state], float(n))
        allocated = _family("slipway_gpus_allocated", labels=["gpu_type"])
        for gpu_type, n in sorted(gpus.items()):
            allocated.add_metric([gpu_type], float(n))
        balance = _family("slipway_team_balance_dollars", labels=["team"])
        for team, dollars in sorted(balances.items()):
            balance.add_metric([team], dollars)
        tick_hist = _family("slipway_reconcile_tick_duration_seconds")
        tick_hist.add_metric([], ticks.cumulative(), ticks.total_s)
        errors = _family("slipway_reconcile_errors")
        errors.add_metric([], float(ticks.errors))
        slurm = _family("slipway_slurm_command_errors", labels=["command"])
        for command in sorted(set(prom_ticks.COMMANDS) | set(ticks.slurm_errors)):
            slurm.add_metric([command], float(ticks.slurm_errors.get(command, 0)))
        out = [jobs, allocated,
               _histogram("slipway_job_queue_wait_seconds", wait, wait_sum),
               _histogram("slipway_job_push_to_pending_seconds", push, push_sum),
               balance, tick_hist, errors, slurm]
        if ticks.last_at is not None:
            last = _family("slipway_reconcile_last_tick_timestamp_seconds")
            last.add_metric([], float(ticks.last_at))
            out.append(last)
        return out


def _histogram(name: str, buckets, total: float) -> Metric:
    family = _family(name)
    family.add_metric([], buckets, total)
    return family

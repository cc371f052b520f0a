"""Prometheus metrics (docs/MONITORING.md) through the official client library
(``prometheus_client``), one registry per app (never the process-wide default, so two apps in
one process, as in tests, do not clash):

* ``DatabaseCollector`` (prom_collector): read from the database at each scrape — jobs by team
  and state, GPUs allocated by type, the queue-wait and push-to-pending histograms, team
  balances, the reconciler's tick durations, errors and Slurm command errors (prom_ticks);
* this process: ``/metrics`` scrapes (count by answer, duration) and the client's process
  and platform collectors (``process_*``, ``python_info``).

Who may scrape (``access_problem``): a request with ``Authorization: Bearer <metrics_token>``
(when ``metrics_token`` is set), or one from a network in ``metrics_allow`` (comma-separated
CIDRs; ``none``: no network; the client's address is the app's ``request.remote_addr``, after
the ``trusted_proxies`` handling). A wrong token is refused even from an allowed network.
Nothing here calls Slurm."""
from __future__ import annotations

import hmac
import ipaddress
import time
from dataclasses import dataclass, field

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram,
                               PlatformCollector, ProcessCollector, exposition, generate_latest)

from .prom_collector import FAMILIES, DatabaseCollector
from .prom_ticks import observe_tick  # noqa: F401  (re-exported: the tick's counter)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# the classic text format every Prometheus reads (the client's newest may say version=1.0.0)
CONTENT_TYPE = getattr(exposition, "CONTENT_TYPE_PLAIN_0_0_4", CONTENT_TYPE_LATEST)

# every metric family /metrics exposes (the Grafana dashboard may name these, with the
# histograms' _bucket/_sum/_count and the counters' _total)
PROCESS_FAMILIES = ("slipway_metrics_scrapes", "slipway_metrics_scrape_duration_seconds")
METRIC_NAMES = frozenset(FAMILIES) | frozenset(PROCESS_FAMILIES)


class MetricsConfigError(ValueError):
    """metrics_allow names something that is not a network."""


def parse_networks(text: str) -> tuple[Network, ...]:
    """``metrics_allow`` -> networks; ``""`` or ``none``: none. A bad entry is an error that
    says which and what is expected."""
    if text.strip().lower() in ("", "none"):
        return ()
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise MetricsConfigError(
                f"metrics_allow: {item!r} is not a network; write CIDRs separated by commas, "
                f"e.g. 127.0.0.1/32,10.0.0.0/8 (or 'none')") from None
    return tuple(out)


@dataclass(frozen=True)
class Refusal:
    status: int
    message: str
    headers: dict[str, str] = field(default_factory=dict)


def access_problem(token: str, networks: tuple[Network, ...], authorization: str,
                   remote_addr: str) -> Refusal | None:
    """None when the request may scrape; else why not (401 or 403, in words)."""
    scheme, _, given = (authorization or "").strip().partition(" ")
    given = given.strip()
    if token and scheme.lower() == "bearer" and given:
        if hmac.compare_digest(given.encode(), token.encode()):
            return None
        return Refusal(401, "/metrics: wrong metrics token (send 'Authorization: Bearer "
                            "<metrics_token>' as configured in Slipway)",
                       {"WWW-Authenticate": 'Bearer realm="slipway-metrics"'})
    if _in_networks(remote_addr, networks):
        return None
    if token:
        return Refusal(401, f"/metrics: send 'Authorization: Bearer <metrics_token>'; address "
                            f"{remote_addr or 'unknown'} is not in metrics_allow",
                       {"WWW-Authenticate": 'Bearer realm="slipway-metrics"'})
    return Refusal(403, f"/metrics: address {remote_addr or 'unknown'} is not in metrics_allow "
                        f"and no metrics_token is configured; add the scraper's network to "
                        f"metrics_allow or set metrics_token")


def _in_networks(remote_addr: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address((remote_addr or "").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped   # ::ffff:127.0.0.1 is 127.0.0.1
    return any(ip.version == n.version and ip in n for n in networks)


class PortalMetrics:
    """One app's registry: the database collector and this process's metrics."""

    def __init__(self, config, db) -> None:
        self.token = config.metrics_token or ""
        self.networks = parse_networks(config.metrics_allow)
        self.registry = CollectorRegistry()
        self.registry.register(DatabaseCollector(db))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.scrapes = Counter("slipway_metrics_scrapes", "/metrics requests by HTTP status",
                               ["code"], registry=self.registry)
        self.duration = Histogram("slipway_metrics_scrape_duration_seconds",
                                  "Seconds /metrics took to read the database and answer",
                                  registry=self.registry,
                                  buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))

    def refusal(self, authorization: str, remote_addr: str) -> Refusal | None:
        problem = access_problem(self.token, self.networks, authorization, remote_addr)
        if problem is not None:
            self.scrapes.labels(code=str(problem.status)).inc()
        return problem

    def render(self) -> tuple[bytes, str]:
        """The exposition (Prometheus' text format) and its content type."""
        started = time.perf_counter()
        self.scrapes.labels(code="200").inc()
        body = generate_latest(self.registry)
        self.duration.observe(time.perf_counter() - started)
        return body, CONTENT_TYPE

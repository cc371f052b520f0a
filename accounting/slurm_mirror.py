"""Mirror a team's dollar balance into a Slurm ``GrpTRESMins=billing=N`` limit (a backstop).

With ``TRESBillingWeights="CPU=1.0,GRES/gpu:a4000=10.0,GRES/gpu:a6000=20.0"`` on the partition,
a running job accrues, per minute, ``sum(weight * allocated count)`` *billing-minutes*; with
``AccountingStorageEnforce=limits`` Slurm starts no job of the account once its usage reaches
``GrpTRESMins=billing=N``, and ends the running ones (with ``safe`` added it would also refuse
any job the limit cannot carry to its whole time limit: stricter than Slipway's money rules).

Mapping (documented, conservative):

* One GPU of type ``t`` accrues ``u_t = w[gres/gpu:t] + w[gres/gpu]`` billing-minutes per minute
  (Slurm sums the typed and the untyped GPU TRES; ``shard`` uses ``w[gres/shard]``) plus
  ``cpus_per_gpu * w[cpu]`` if the caller states how many CPUs come with each GPU (default 0).
* The same GPU costs ``d_t = rate_t / 60`` dollars per minute, so a balance ``B`` buys
  ``B * u_t / d_t = B * 60 * u_t / rate_t`` billing-minutes if spent on type ``t`` only.
* The limit left is the *minimum* over priced types, so whatever mix the team runs, Slurm never
  allows more GPU time than the dollars pay for. CPU-only jobs' cores (``cpu_hourly``, weight
  ``cpu``) are one more such type. CPU billing the dollars do not charge makes
  Slurm only stricter, never looser. Free types (rate 0) are ignored; a priced type with no
  weight cannot be enforced by Slurm and raises :class:`MirrorError`.
* ``GrpTRESMins`` is compared with the association's accumulated usage, so the limit to set is
  ``used + remaining`` (``used`` as ``scontrol show assoc_mgr`` reports it; run with usage that
  does not decay, e.g. ``PriorityDecayHalfLife=0`` or a QOS with ``NoDecay``). A balance <= 0
  gives ``used``: nothing more may start.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal

from .money import require_money
from .rates import Rates

_WEIGHT = re.compile(r"(?P<value>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?P<unit>[KMGTP])?", re.IGNORECASE)


class MirrorError(ValueError):
    """Weights or rates that cannot be mirrored into a Slurm limit."""


def parse_tres_billing_weights(text: str) -> dict[str, Decimal]:
    """``"CPU=1.0,GRES/gpu:a4000=10.0"`` -> ``{"cpu": 1.0, "gres/gpu:a4000": 10.0}``.

    Names are lower-cased (Slurm treats them case-insensitively). A unit suffix (``Mem=.25G``)
    is accepted and dropped: only GPU weights matter here.
    """
    weights: dict[str, Decimal] = {}
    for part in text.strip().strip('"').split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition("=")
        match = _WEIGHT.fullmatch(value.strip())
        if not sep or not name.strip() or not match:
            raise MirrorError(f"bad TRESBillingWeights item {part!r}; expected NAME=NUMBER")
        key = name.strip().lower()
        if key in weights:
            raise MirrorError(f"TRESBillingWeights names {key!r} twice")
        weights[key] = Decimal(match.group("value"))
    return weights


def billing_units_per_gpu_minute(gpu_type: str, weights: Mapping[str, Decimal],
                                 cpus_per_gpu: int = 0) -> Decimal:
    """Billing-minutes one GPU of ``gpu_type`` accrues per minute under ``weights``."""
    if gpu_type == "shard" or gpu_type.endswith("-shard"):   # a share of a GPU (a6000-shard)
        units = weights.get("gres/shard", Decimal(0))
    else:
        units = weights.get(f"gres/gpu:{gpu_type}", Decimal(0)) + weights.get("gres/gpu", Decimal(0))
    return units + cpus_per_gpu * weights.get("cpu", Decimal(0))


def grp_tres_billing_minutes(balance: Decimal, rates: Rates, weights: Mapping[str, Decimal], *,
                             used_billing_minutes: int = 0, cpus_per_gpu: int = 0) -> int:
    """The ``GrpTRESMins=billing=N`` value that mirrors ``balance`` (see the module rules)."""
    require_money(balance, "balance")
    remaining: list[Decimal] = []
    for gpu_type, rate in sorted(rates.gpu_hourly.items()):
        if rate == 0:
            continue
        units = billing_units_per_gpu_minute(gpu_type, weights, cpus_per_gpu)
        if units <= 0:
            raise MirrorError(
                f"GPU type {gpu_type!r} is priced at {rate}/h but has no TRESBillingWeights "
                f"entry (add GRES/gpu:{gpu_type}=N), so Slurm could not enforce the balance"
            )
        remaining.append((balance * 60 * units) // rate)  # exact floor
    cpu_rate = getattr(rates, "cpu_hourly", Decimal(0)) or Decimal(0)
    cpu_units = weights.get("cpu", Decimal(0))
    if cpu_rate > 0 and cpu_units > 0:
        # a CPU-only job's core: cpu_hourly dollars and w[cpu] billing-minutes per hour
        remaining.append((balance * 60 * cpu_units) // cpu_rate)
    if not remaining:
        raise MirrorError("no priced GPU type: nothing for GrpTRESMins to limit")
    left = max(0, int(min(remaining)))
    return used_billing_minutes + left


def sacctmgr_limit(minutes: int) -> str:
    """The sacctmgr argument, e.g. ``GrpTRESMins=billing=1200``."""
    return f"GrpTRESMins=billing={int(minutes)}"

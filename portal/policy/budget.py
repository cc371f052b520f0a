"""The team balance mirrored into Slurm (accounting/slurm_mirror.py): each team account's
``GrpTRESMins=billing=N`` is set, at every account sync, to the billing-minutes it has used
(``scontrol show assoc_mgr``) plus what its balance buys. Slurm itself then starts no job of a
team whose money is spent and ends its running ones (the $0 cut-off) -- also while Slipway is
down, and for jobs submitted outside Slipway. (Not ``AccountingStorageEnforce=safe``: that
refuses any job the balance cannot pay to the end of its time limit, stricter than the money
rules, where a job starts at $1.00 and is cut off at $0.)

Usage decays with ``PriorityDecayHalfLife`` (7 days): between two syncs that frees a sliver
(0.4 % of the used minutes per hour Slipway is down), which the $1.00 start rule covers."""
from __future__ import annotations

from decimal import Decimal
from typing import Mapping

from accounting.rates import Rates
from accounting.slurm_mirror import MirrorError, grp_tres_billing_minutes, parse_tres_billing_weights

from .. import integrations as ig
from ..services import Services, log


def weights(svc: Services) -> dict[str, Decimal]:
    return parse_tres_billing_weights(svc.config.slurm_billing_weights)


def limits(svc: Services, balances: Mapping[str, Decimal]) -> dict[str, dict[str, int]]:
    """account -> ``{"billing": N}`` for every team account in ``balances`` (account -> US$).
    Empty when the mirror is switched off (``slurm_billing_weights`` empty) or the weights and
    rates cannot be mirrored (logged; Slipway's own gates still hold). Raises
    ``SlurmBridgeError`` when Slurm does not answer."""
    if not svc.config.slurm_billing_weights:
        return {}
    try:
        w = weights(svc)
    except MirrorError as exc:
        log.warning("budget mirror off: %s", exc)
        return {}
    # Slurm not answering fails this account sync (retried next tick): an empty mirror here
    # would clear every team's limit
    used = svc.backend.assoc_usage()
    rates: Rates = ig.rates(svc.config)
    used_l = {k.lower(): v for k, v in used.items()}
    out = {}
    for account, balance in balances.items():
        try:
            minutes = grp_tres_billing_minutes(max(balance, Decimal(0)), rates, w,
                                               used_billing_minutes=int(used_l.get(account.lower(), 0)))
        except MirrorError as exc:
            log.warning("budget mirror skipped: %s", exc)
            return {}
        out[account] = {"billing": minutes}
    return out

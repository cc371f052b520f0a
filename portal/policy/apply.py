"""After a policy change Slurm must see (a quota, an emergency grant or its revocation, a team's
shares) the database holds it; ``converge_now`` runs the account sync at once so Slurm holds it
too. Both front doors (the API and the CLI's local mode) call it, so they answer alike."""
from __future__ import annotations

import logging

from ..services import Services
from ..teams import slurm_accounts

log = logging.getLogger("slipway.policy")


def converge_now(svc: Services) -> str | None:
    """Converge Slurm's accounts and associations with the database now. None when Slurm took
    it; else a warning line (the change is saved; the reconciler's next account sync retries)."""
    try:
        slurm_accounts.sync_accounts(svc)
    except Exception as exc:  # noqa: BLE001 — sacctmgr/slurmdbd down: the database change stands
        log.warning("account sync after a policy change failed: %s", exc)
        return f"saved; Slurm gets it at the next account sync: {exc}"
    return None

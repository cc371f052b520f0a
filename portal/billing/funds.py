"""Money in: who may credit a team, and fund requests.

Money enters a team's ledger only through

* a cluster administrator (a user with ``is_cluster_admin``, or the operator running the CLI on
  the server): ``add_funds`` (grants, invoices), or ``approve`` of a fund request;
* a payment provider behind the ``portal.billing.payments`` port (none is configured by default).

Team administrators and owners *request* funds (``request_funds``): the request reaches the
cluster administrators (``list_requests``), who approve it (one deposit in the ledger, keyed
``deposit:fund-request:<id>`` so it can never be credited twice) or decline it with a reason; the
requesting team's administrators may cancel it while it is pending. A request leaves ``pending``
exactly once, by one conditional UPDATE (``WHERE state = 'pending'``): of an approval, a decline
and a cancel racing, exactly one wins and the others answer 409.

Access as everywhere (the service layer, ``portal.teams.access``): non-members of the team get 404, members without the
role 403. No Flask here: the pages, the JSON API and the CLI call these functions.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import ledger as billing
from .. import integrations as ig
from ..db import Membership, Team, from_micros, to_micros
from ..db.funds_models import FUND_REQUEST_STATES, FundRequest
from ..services import Services
from ..teams import slurm_accounts
from ..teams.access import ROLE_ADMIN, ROLE_ANY, Actor, Forbidden, NotFound, OpError, team_access

NOTE_MAX = 500
MAX_ID = 2**63 - 1
REQUEST_HINT = ("team administrators and owners request funds instead: the Request funds form on "
                "the team's billing page, or `slipway team request-funds TEAM AMOUNT --note WHY`")


JSON_KEYS = ("id", "team", "amount", "note", "state", "requested_by", "created_at", "decided_by",
             "decided_at", "decision_note", "ledger_entry")


@dataclass(frozen=True)
class FundRequestView:
    """A fund request as the pages, the API and the CLI show it (plain values)."""

    id: int
    team: str
    amount: Decimal
    note: str
    state: str
    requested_by: str
    created_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    decision_note: str | None
    ledger_entry_id: int | None

    @property
    def pending(self) -> bool:
        return self.state == "pending"

    def as_dict(self) -> dict:
        """The JSON shape (``/api/…/fund-requests``; the CLI prints from it): exact decimal
        strings for money, ISO times."""
        iso = (lambda t: t.isoformat() if t else None)
        return {"id": self.id, "team": self.team, "amount": str(self.amount), "note": self.note,
                "state": self.state, "requested_by": self.requested_by,
                "created_at": iso(self.created_at), "decided_by": self.decided_by,
                "decided_at": iso(self.decided_at), "decision_note": self.decision_note,
                "ledger_entry": self.ledger_entry_id}


def _view(r: FundRequest, team_name: str) -> FundRequestView:
    return FundRequestView(r.id, team_name, from_micros(r.amount_micros), r.note or "", r.state,
                           r.requested_by, r.created_at, r.decided_by, r.decided_at, r.decision_note,
                           r.ledger_entry_id)


# ------------------------------------------------------------------------------- input

def check_note(note, what: str = "note", *, required: bool = False) -> str:
    """A note as typed (trimmed); longer than ``NOTE_MAX`` characters is refused, never cut."""
    if note is None:
        note = ""
    if not isinstance(note, str):
        raise OpError(f"the {what} must be text, not {type(note).__name__}")
    note = note.strip()
    if "\x00" in note:
        raise OpError(f"the {what} must not contain NUL characters")
    if len(note) > NOTE_MAX:
        raise OpError(f"the {what} is {len(note)} characters long; at most {NOTE_MAX} are allowed "
                      "(nothing was saved: shorten it and send it again)")
    if required and not note:
        raise OpError(f"a {what} is required")
    return note


def parse_amount(amount) -> Decimal:
    """An amount as typed by a person (``"25"``, ``"25.00"``; a JSON integer): the deposit rules
    of ``accounting.money`` (positive, at most 2 decimals, at most $1,000,000; no floats)."""
    try:
        return ig.parse_deposit(amount)
    except ig.MoneyError as exc:
        raise OpError(str(exc)) from None


def request_id(value) -> int:
    """A fund request id from a path or an argument; anything else does not exist (404)."""
    if isinstance(value, bool):
        raise NotFound(f"there is no fund request {value!r}")
    try:
        rid = int(str(value).strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise NotFound(f"there is no fund request {value!r}") from None
    if not 1 <= rid <= MAX_ID:
        raise NotFound(f"there is no fund request {value}")
    return rid


def check_state(state: str | None) -> str | None:
    """A listing's state filter: one of the states, or ``all``/empty (None: every state)."""
    if state in (None, "", "all"):
        return None
    if state not in FUND_REQUEST_STATES:
        raise OpError(f"unknown state {state!r}; states: {', '.join(FUND_REQUEST_STATES)}, all")
    return state


# ------------------------------------------------------------------------ direct credit

def add_funds(svc: Services, actor: Actor, team_name: str, amount, note: str = "") -> Decimal:
    """Credit the team directly: cluster administrators (and the operator) only. Non-members:
    404; everybody else: 403 pointing to fund requests."""
    with svc.db.session() as s:
        team, _ = team_access(s, actor, team_name, ROLE_ANY, "see the team")
        tname = team.name
    if not actor.is_cluster_admin:
        raise Forbidden(f"{actor.name} may not add funds to team {tname}: only cluster "
                        f"administrators add funds; {REQUEST_HINT}")
    value = parse_amount(amount)
    note = check_note(note)
    dep = billing.add_funds(svc.db, tname, str(value), by=actor.name, note=note, now=svc.now())
    slurm_accounts.request_sync(svc)   # Slurm's copy of the balance follows at the next tick
    return dep.amount


# -------------------------------------------------------------------------- requests

def request_funds(svc: Services, actor: Actor, team_name: str, amount, note: str = "") -> FundRequestView:
    """A pending request for ``amount`` dollars (team administrators and owners). Access is
    checked before the input (an outsider learns nothing from a 400)."""
    with svc.db.transaction() as s:
        team, _ = team_access(s, actor, team_name, ROLE_ADMIN, "request funds")
        value = parse_amount(amount)
        note = check_note(note)
        r = FundRequest(team_id=team.id, amount_micros=to_micros(value), note=note, state="pending",
                        requested_by=actor.name, created_at=svc.now())
        s.add(r)
        s.flush()
        return _view(r, team.name)


_LIST = select(FundRequest, Team.name).join(Team, FundRequest.team_id == Team.id)


def team_requests(s: Session, actor: Actor, team_name: str, *, state: str | None = None,
                  limit: int = 50) -> list[FundRequestView]:
    """The team's requests, newest first (its administrators and owners, cluster admins)."""
    team, _ = team_access(s, actor, team_name, ROLE_ADMIN, "see fund requests")
    q = _LIST.where(FundRequest.team_id == team.id)
    if check_state(state):
        q = q.where(FundRequest.state == state)
    rows = s.execute(q.order_by(FundRequest.id.desc()).limit(max(1, min(int(limit), 500))))
    return [_view(r, tname) for r, tname in rows]


def list_requests(s: Session, actor: Actor, *, state: str | None = "pending", team_name: str | None = None,
                  limit: int = 100) -> list[FundRequestView]:
    """Requests in ``state`` (None/"all": every state), oldest first: every team's for cluster
    administrators (what waits for a decision), else those of the teams the actor administers;
    ``team_name``: that team's (its access rule)."""
    state = check_state(state)
    if team_name:
        return list(reversed(team_requests(s, actor, team_name, state=state, limit=limit)))
    q = _LIST
    if not actor.is_cluster_admin:
        q = q.where(FundRequest.team_id.in_(
            select(Membership.team_id).where(Membership.user_id == actor.id,
                                             Membership.role.in_(ROLE_ADMIN))))
    if state:
        q = q.where(FundRequest.state == state)
    rows = s.execute(q.order_by(FundRequest.id).limit(max(1, min(int(limit), 1000))))
    return [_view(r, tname) for r, tname in rows]


def _load(s: Session, actor: Actor, rid: int, roles: tuple[str, ...], what: str) -> tuple[FundRequest, Team]:
    row = s.execute(_LIST.with_only_columns(FundRequest, Team).where(FundRequest.id == rid)).first()
    if row is None:
        raise NotFound(f"there is no fund request {rid}")
    r, team = row
    try:
        team_access(s, actor, team.name, roles, what)
    except NotFound:
        raise NotFound(f"there is no fund request {rid}") from None
    return r, team


def get_request(s: Session, actor: Actor, value) -> FundRequestView:
    r, team = _load(s, actor, request_id(value), ROLE_ADMIN, "see fund requests")
    return _view(r, team.name)


_CLAIM = (update(FundRequest)
          .where(FundRequest.id == bindparam("rid"), FundRequest.state == "pending")
          .values(state=bindparam("b_state"), decided_by=bindparam("b_by"), decided_at=bindparam("b_at"),
                  decision_note=bindparam("b_note"))
          .execution_options(synchronize_session=False))


def _claim(s: Session, rid: int, new_state: str, actor: Actor, note: str, now: datetime) -> None:
    """Move the request out of ``pending``: one conditional UPDATE, so of two deciders exactly one
    wins; the other gets 409 with the state the winner left."""
    done = s.execute(_CLAIM, {"rid": rid, "b_state": new_state, "b_by": actor.name, "b_at": now,
                              "b_note": note or None}).rowcount
    if done != 1:
        state = s.scalar(select(FundRequest.state).where(FundRequest.id == rid))
        raise OpError(f"fund request {rid} is {state} already; nothing changed", 409)


def _decide(svc: Services, actor: Actor, value, new_state: str, note) -> FundRequestView:
    """Access first (404/403 say nothing of the input), then the note, then the claim."""
    rid = request_id(value)
    try:
        with svc.db.transaction() as s:
            if new_state == "cancelled":
                r, team = _load(s, actor, rid, ROLE_ADMIN, "cancel fund requests")
            else:
                r, team = _load(s, actor, rid, ROLE_ANY, "see fund requests")
                if not actor.is_cluster_admin:
                    raise Forbidden(f"{actor.name} may not {new_state[:-1]} "
                                    f"fund request {rid}: only cluster administrators approve or "
                                    "decline fund requests")
            if new_state == "declined":
                note = check_note(note, "reason", required=True)
            else:
                note = check_note(note, "decision note")
            now = svc.now()
            _claim(s, rid, new_state, actor, note, now)
            entry_id = None
            if new_state == "approved":
                text = f"fund request {rid} by {r.requested_by}" + (f": {r.note}" if r.note else "")
                deposit = ig.Deposit(team=team.name, amount=from_micros(r.amount_micros), by=actor.name,
                                     at=now, note=text, key=f"deposit:fund-request:{rid}")
                entry_id, _written = billing.deposit_in(s, team.id, deposit)
                s.execute(update(FundRequest).where(FundRequest.id == rid)
                          .values(ledger_entry_id=entry_id).execution_options(synchronize_session=False))
            s.expire(r)
            return _view(r, team.name)
    except IntegrityError:  # a concurrent approval wrote the deposit first (databases without
        # serialised writers): this one is rolled back whole
        raise OpError(f"fund request {rid} was decided meanwhile; nothing changed", 409) from None


def approve(svc: Services, actor: Actor, value, note: str = "") -> FundRequestView:
    """Cluster administrators: credit the request's amount once (a deposit in the ledger)."""
    view = _decide(svc, actor, value, "approved", note)
    slurm_accounts.request_sync(svc)
    return view


def decline(svc: Services, actor: Actor, value, note: str) -> FundRequestView:
    """Cluster administrators: refuse the request, saying why."""
    return _decide(svc, actor, value, "declined", note)


def cancel(svc: Services, actor: Actor, value) -> FundRequestView:
    """The requesting team's administrators and owners withdraw a pending request."""
    return _decide(svc, actor, value, "cancelled", "")

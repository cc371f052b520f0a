"""The payment-provider port: the one way money may enter a ledger without a cluster
administrator.

A site that takes payments (card, invoice system) plugs an adapter implementing
``PaymentProvider`` (``portal.ports``) into ``svc.payments`` (``bootstrap(payments=…)``); its callback (webhook, poller) then
calls ``credit_payment(svc, reference)``. The provider — never the caller — says which team paid
how much; the deposit is keyed by the provider's reference, so a payment reported twice is
credited once. No provider is configured by default: then only cluster administrators credit
teams (``portal.billing.funds``), and ``credit_payment`` refuses.
"""
from __future__ import annotations

from . import ledger as billing
from .. import integrations as ig
from ..ports import Payment, PaymentProvider  # noqa: F401  (the port lives in portal/ports.py)
from ..services import Services
from ..teams.access import NotFound, OpError


def provider(svc: Services) -> PaymentProvider | None:
    return svc.payments


def credit_payment(svc: Services, reference: str) -> ig.Deposit:
    """Credit the team of settled payment ``reference`` once (idempotent per provider and
    reference). Refused when no provider is configured or it does not know the payment."""
    prov = provider(svc)
    if prov is None:
        raise OpError("no payment provider is configured: funds are added by cluster administrators", 409)
    reference = str(reference or "").strip()
    if not reference or len(reference) > 128:
        raise OpError("a payment reference of 1 to 128 characters is required")
    payment = prov.settled_payment(reference)
    if payment is None or payment.reference != reference:
        raise NotFound(f"{prov.name} has no settled payment {reference!r}")
    try:
        amount = ig.parse_deposit(payment.amount)
    except ig.MoneyError as exc:
        raise OpError(f"{prov.name} payment {reference}: {exc}") from None
    deposit = ig.Deposit(team=payment.team, amount=amount, by=f"payment:{prov.name}", at=svc.now(),
                         note=f"{prov.name} payment {reference} by {payment.payer}",
                         key=f"deposit:payment:{prov.name}:{reference}")
    try:
        billing.DbLedgerStore(svc.db).append_if_absent(deposit)
    except LookupError:
        raise NotFound(f"{prov.name} payment {reference} names no team of this Slipway "
                       f"({payment.team!r})") from None
    return deposit

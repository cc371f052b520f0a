"""Issue 9 item 3, "any user can mint money": money enters only through cluster administrators
(or a payment provider); team administrators and owners request funds, cluster administrators
approve (one deposit) or decline, the team may cancel — service, web pages and JSON API."""
from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from sqlalchemy import func, select, update

from portal.billing import ledger as billing, funds, payments
from portal.app import create_app
from portal.db import LedgerEntry, Membership, Team, User
from portal.db.funds_models import FundRequest
from tests.support.fakes import FakeBackend, make_services
from portal.billing import queries as billing_q
from portal.teams import access
from tests.support.web import add_user, csrf_token, login, make_world


@pytest.fixture
def env(tmp_path):
    svc = make_services(tmp_path, backend=FakeBackend())
    ids = make_world(svc)
    app = create_app(svc)
    yield svc, app, ids
    svc.db.dispose()


def who(svc, name) -> access.Actor:
    with svc.db.session() as s:
        u = s.scalar(select(User).where(User.name == name))
        return access.Actor(id=u.id, name=u.name, is_cluster_admin=bool(u.is_cluster_admin))


def balance(svc, team) -> Decimal:
    with svc.db.session() as s:
        return billing.balance(s, s.scalar(select(Team.id).where(Team.name == team)))


def deposits(svc, team) -> list[LedgerEntry]:
    with svc.db.session() as s:
        tid = s.scalar(select(Team.id).where(Team.name == team))
        return list(s.scalars(select(LedgerEntry).where(LedgerEntry.team_id == tid,
                                                        LedgerEntry.kind == "deposit")))


def refused(fn, *a, status: int, **kw) -> str:
    with pytest.raises(access.OpError) as exc:
        fn(*a, **kw)
    assert exc.value.status == status, (exc.value.status, str(exc.value))
    return str(exc.value)


# ------------------------------------------------------------------------------ service

def test_personal_team_owner_can_no_longer_credit_itself(env):
    svc, _app, _ids = env
    add_user(svc, "eve")
    with svc.db.transaction() as s:  # eve's personal team, owned by eve
        t = Team(name="eve", personal=True, created_at=svc.now())
        s.add(t)
        s.flush()
        s.add(Membership(user_id=s.scalar(select(User.id).where(User.name == "eve")), team_id=t.id,
                         role="owner", created_at=svc.now()))
    eve = who(svc, "eve")
    msg = refused(billing_q.add_funds, svc, eve, "eve", "1000000.00", status=403)
    assert "only cluster administrators add funds" in msg and "request funds" in msg
    assert balance(svc, "eve") == 0 and deposits(svc, "eve") == []
    # another team's owner: the team does not exist for them
    assert "there is no team" in refused(billing_q.add_funds, svc, who(svc, "mallory"), "eve", "5", status=404)
    # the operator and cluster administrators credit
    assert billing_q.add_funds(svc, who(svc, "dave"), "eve", "12.50", "grant 4") == Decimal("12.50")
    assert billing_q.add_funds(svc, access.Actor(0, "root", True), "eve", "1", "") == Decimal("1.00")
    assert balance(svc, "eve") == Decimal("13.50")


def test_request_then_approve_credits_exactly_once(env):
    svc, _app, _ids = env
    before = balance(svc, "nlp")
    r = funds.request_funds(svc, who(svc, "alice"), "nlp", "30", "GPU grant for the summer")
    assert (r.state, r.amount, r.requested_by, r.team) == ("pending", Decimal("30.00"), "alice", "nlp")
    assert balance(svc, "nlp") == before  # a request is no money
    with svc.db.session() as s:
        assert [v.id for v in funds.list_requests(s, who(svc, "dave"))] == [r.id]
        assert [v.state for v in funds.team_requests(s, who(svc, "bob"), "nlp")] == ["pending"]
    done = funds.approve(svc, who(svc, "dave"), r.id, "ok for Q3")
    assert (done.state, done.decided_by, done.decision_note) == ("approved", "dave", "ok for Q3")
    assert done.decided_at is not None and done.ledger_entry_id is not None
    assert balance(svc, "nlp") == before + Decimal("30")
    entry = [e for e in deposits(svc, "nlp") if e.id == done.ledger_entry_id][0]
    assert entry.idempotency_key == f"deposit:fund-request:{r.id}" and entry.created_by == "dave"
    assert "GPU grant for the summer" in entry.note
    # approving twice never credits twice; nothing else moves it either
    assert "approved already" in refused(funds.approve, svc, who(svc, "dave"), r.id, status=409)
    refused(funds.decline, svc, who(svc, "dave"), r.id, "no", status=409)
    refused(funds.cancel, svc, who(svc, "alice"), r.id, status=409)
    assert balance(svc, "nlp") == before + Decimal("30")
    with svc.db.session() as s:
        assert funds.list_requests(s, who(svc, "dave")) == []  # nothing pending any more
        assert funds.get_request(s, who(svc, "alice"), r.id).state == "approved"  # both sides see it


def test_decline_needs_a_reason_and_credits_nothing(env):
    svc, _app, _ids = env
    before = balance(svc, "nlp")
    r = funds.request_funds(svc, who(svc, "bob"), "nlp", "5.25")
    assert "reason is required" in refused(funds.decline, svc, who(svc, "dave"), r.id, "  ", status=400)
    done = funds.decline(svc, who(svc, "dave"), r.id, "use the lab budget")
    assert (done.state, done.decision_note, done.ledger_entry_id) == ("declined", "use the lab budget", None)
    assert balance(svc, "nlp") == before
    refused(funds.approve, svc, who(svc, "dave"), r.id, status=409)
    assert balance(svc, "nlp") == before


def test_who_may_request_decide_and_cancel(env):
    svc, _app, _ids = env
    carol, mallory, alice, bob = (who(svc, n) for n in ("carol", "mallory", "alice", "bob"))
    assert "needs role" in refused(funds.request_funds, svc, carol, "nlp", "5", status=403)
    assert "there is no team" in refused(funds.request_funds, svc, mallory, "nlp", "5", status=404)
    r = funds.request_funds(svc, alice, "nlp", "5")
    # deciding is for cluster administrators: members 403, outsiders 404
    for name in ("alice", "bob", "carol"):
        assert "only cluster administrators" in refused(funds.approve, svc, who(svc, name), r.id, status=403)
        refused(funds.decline, svc, who(svc, name), r.id, "no", status=403)
    refused(funds.approve, svc, mallory, r.id, status=404)
    refused(funds.cancel, svc, mallory, r.id, status=404)
    refused(funds.cancel, svc, carol, r.id, status=403)
    with svc.db.session() as s:
        refused(funds.team_requests, s, carol, "nlp", status=403)
        refused(funds.team_requests, s, mallory, "nlp", status=404)
        refused(funds.get_request, s, mallory, r.id, status=404)
        assert funds.list_requests(s, mallory) == [] and funds.list_requests(s, carol) == []
        assert [v.id for v in funds.list_requests(s, bob)] == [r.id]
    # the requester's team administrators cancel it
    assert funds.cancel(svc, bob, r.id).state == "cancelled"
    refused(funds.approve, svc, who(svc, "dave"), r.id, status=409)
    assert len(deposits(svc, "nlp")) == 1  # make_world's only


def test_input_is_refused_with_a_message_and_nothing_saved(env):
    svc, _app, _ids = env
    alice, dave = who(svc, "alice"), who(svc, "dave")
    for amount, words in [("1e3", "not a plain amount"), ("0", "more than zero"), ("-5", "negative"),
                          ("1.005", "more than 2 decimal places"), ("1000000.01", "over the limit"),
                          (5.5, "float"), (True, "bool"), (None, "string"), ("", "not a plain amount")]:
        assert words in refused(funds.request_funds, svc, alice, "nlp", amount, status=400), amount
        assert words in refused(billing_q.add_funds, svc, dave, "nlp", amount, status=400), amount
    long = "x" * 501
    msg = refused(funds.request_funds, svc, alice, "nlp", "5", long, status=400)
    assert "501 characters" in msg and "at most 500" in msg
    # ledger notes over 500 characters are refused, not cut
    before = len(deposits(svc, "nlp"))
    assert "at most 500" in refused(billing_q.add_funds, svc, dave, "nlp", "5", long, status=400)
    assert len(deposits(svc, "nlp")) == before
    r = funds.request_funds(svc, alice, "nlp", 7, "y" * 500)  # a whole number and 500 characters: fine
    assert r.amount == Decimal("7.00") and len(r.note) == 500
    assert "at most 500" in refused(funds.decline, svc, dave, r.id, long, status=400)
    with svc.db.session() as s:
        assert s.scalar(select(func.count(FundRequest.id))) == 1
        refused(funds.list_requests, s, dave, state="weird", status=400)
    for bad in (2**63, 2**64, 0, -1, "x", "99999999999999999999999"):
        refused(funds.approve, svc, dave, bad, status=404)


def test_a_decided_request_is_never_claimed_again(env):
    """The claim is a conditional UPDATE (state = 'pending'): a request decided after it was
    read (what a concurrent decision looks like) is refused, never credited."""
    svc, _app, _ids = env
    r = funds.request_funds(svc, who(svc, "alice"), "nlp", "9")
    before = balance(svc, "nlp")
    with svc.db.transaction() as s:  # decided behind the service's back
        s.execute(update(FundRequest).where(FundRequest.id == r.id).values(state="declined"))
    assert "declined already" in refused(funds.approve, svc, who(svc, "dave"), r.id, status=409)
    assert balance(svc, "nlp") == before


def test_a_deposit_already_in_the_ledger_is_not_written_again(env):
    svc, _app, _ids = env
    r = funds.request_funds(svc, who(svc, "alice"), "nlp", "9")
    with svc.db.transaction() as s:
        tid = s.scalar(select(Team.id).where(Team.name == "nlp"))
        dep = funds.ig.Deposit(team="nlp", amount=Decimal("9"), by="dave", at=svc.now(),
                               key=f"deposit:fund-request:{r.id}")
        first_id, written = billing.deposit_in(s, tid, dep)
        assert written
    before = balance(svc, "nlp")
    done = funds.approve(svc, who(svc, "dave"), r.id)
    assert done.ledger_entry_id == first_id and balance(svc, "nlp") == before


def test_approve_decline_cancel_race_exactly_one_wins(env):
    svc, _app, _ids = env
    dave, bob = who(svc, "dave"), who(svc, "bob")
    before = balance(svc, "nlp")
    for round_ in range(6):
        r = funds.request_funds(svc, who(svc, "alice"), "nlp", "2")
        calls = [lambda: funds.approve(svc, dave, r.id), lambda: funds.approve(svc, dave, r.id),
                 lambda: funds.decline(svc, dave, r.id, "no"), lambda: funds.cancel(svc, bob, r.id)]
        start = threading.Barrier(len(calls))
        wins, losses = [], []

        def go(call):
            start.wait()
            try:
                wins.append(call().state)
            except access.OpError as exc:
                losses.append(exc.status)

        threads = [threading.Thread(target=go, args=(c,)) for c in calls]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) == 1 and losses == [409] * 3, (round_, wins, losses)
        with svc.db.session() as s:
            assert s.get(FundRequest, r.id).state == wins[0]
            keyed = s.scalar(select(func.count(LedgerEntry.id)).where(
                LedgerEntry.idempotency_key == f"deposit:fund-request:{r.id}"))
        assert keyed == (1 if wins[0] == "approved" else 0)
    approved = sum(1 for e in deposits(svc, "nlp") if e.idempotency_key.startswith("deposit:fund-request:"))
    assert balance(svc, "nlp") == before + 2 * approved
    with svc.db.session() as s:
        assert billing.balance_mismatches(s) == {}


# -------------------------------------------------------------------------- payment port

class Provider:
    """A test double of a payment provider (product code ships none)."""

    name = "testpay"

    def __init__(self, paid):
        self.paid = paid

    def settled_payment(self, reference):
        return self.paid.get(reference)


def test_payment_provider_port(env):
    svc, _app, _ids = env
    assert "no payment provider" in refused(payments.credit_payment, svc, "p-1", status=409)
    prov = Provider({"p-1": payments.Payment("p-1", "nlp", Decimal("12.00"), "alice")})
    assert isinstance(prov, payments.PaymentProvider)
    svc.payments = prov
    before = balance(svc, "nlp")
    payments.credit_payment(svc, "p-1")
    payments.credit_payment(svc, "p-1")  # reported twice: credited once
    assert balance(svc, "nlp") == before + 12
    refused(payments.credit_payment, svc, "p-2", status=404)


# --------------------------------------------------------------------------------- web

def client_as(app, name):
    c = app.test_client()
    assert login(c, name).status_code == 302
    return c


def post(c, url, **data):
    data.setdefault("csrf_token", csrf_token(c))
    return c.post(url, data=data)


def test_web_request_approve_flow(env):
    svc, app, _ids = env
    before = balance(svc, "nlp")
    bob = client_as(app, "bob")
    page = bob.get("/teams/nlp/billing").get_data(as_text=True)
    assert 'id="request-funds"' in page and 'id="add-funds"' not in page and "No fund requests yet" in page
    r = post(bob, "/teams/nlp/billing/fund-requests", amount="40", note="new students")
    assert r.status_code == 302
    page = bob.get("/teams/nlp/billing").get_data(as_text=True)
    assert "Requested $40.00 for nlp" in page and "new students" in page and "state-pending" in page
    rid = funds.list_requests(svc.db.session(), who(svc, "dave"))[0].id
    dave = client_as(app, "dave")
    assert "Fund requests" in dave.get("/").get_data(as_text=True)  # the nav link
    admin = dave.get("/admin/fund-requests").get_data(as_text=True)
    assert "new students" in admin and f"/fund-requests/{rid}/approve" in admin
    r = post(dave, f"/fund-requests/{rid}/approve", next="/admin/fund-requests")
    assert r.status_code == 302 and r.headers["Location"] == "/admin/fund-requests"
    assert balance(svc, "nlp") == before + 40
    r = post(dave, f"/fund-requests/{rid}/approve")  # twice: 409 with the message, no money
    assert r.status_code == 409 and "approved already" in r.get_data(as_text=True)
    assert balance(svc, "nlp") == before + 40
    page = bob.get("/teams/nlp/billing").get_data(as_text=True)
    assert "state-approved" in page and "by dave" in page
    assert "new students" not in dave.get("/admin/fund-requests").get_data(as_text=True)
    assert "new students" in dave.get("/admin/fund-requests?state=approved").get_data(as_text=True)


def test_web_refusals_answer_4xx_with_the_message(env):
    svc, app, _ids = env
    bob, carol, mallory, dave = (client_as(app, n) for n in ("bob", "carol", "mallory", "dave"))
    r = post(bob, "/teams/nlp/billing/fund-requests", amount="ten", note="keep me")
    page = r.get_data(as_text=True)
    assert r.status_code == 400 and "not a plain amount" in page
    assert 'value="ten"' in page and 'value="keep me"' in page  # what was typed is still there
    r = post(bob, "/teams/nlp/billing/fund-requests", amount="5", note="n" * 501)
    assert r.status_code == 400 and "at most 500" in r.get_data(as_text=True)
    assert post(carol, "/teams/nlp/billing/fund-requests", amount="5").status_code == 403
    assert post(mallory, "/teams/nlp/billing/fund-requests", amount="5").status_code == 404
    assert post(bob, "/teams/nlp/billing/funds", amount="5").status_code == 403
    assert post(mallory, "/teams/nlp/billing/funds", amount="5").status_code == 404
    r = post(dave, "/teams/nlp/billing/funds", amount="5", note="n" * 501)
    assert r.status_code == 400 and "at most 500" in r.get_data(as_text=True)
    rid = funds.request_funds(svc, who(svc, "alice"), "nlp", "5").id
    assert post(bob, f"/fund-requests/{rid}/approve").status_code == 403
    assert post(mallory, f"/fund-requests/{rid}/approve").status_code == 404
    assert post(carol, f"/fund-requests/{rid}/cancel").status_code == 403
    r = post(dave, f"/fund-requests/{rid}/decline", note="")
    assert r.status_code == 400 and "reason is required" in r.get_data(as_text=True)
    assert post(dave, f"/fund-requests/{2**64}/approve").status_code == 404
    r = bob.get("/admin/fund-requests")
    assert r.status_code == 403 and "billing page" in r.get_data(as_text=True)
    r = post(bob, f"/fund-requests/{rid}/cancel")
    assert r.status_code == 302 and r.headers["Location"] == "/teams/nlp/billing"
    assert "state-cancelled" in bob.get("/teams/nlp/billing").get_data(as_text=True)
    assert len(deposits(svc, "nlp")) == 1


# --------------------------------------------------------------------------------- API

@pytest.fixture
def api(env):
    svc, app, ids = env
    c = app.test_client()

    def call(method, url, who="alice", **kw):
        return c.open(url, method=method, headers={"Authorization": f"Bearer {ids[who + '_token']}"}, **kw)

    return svc, call


def test_api_fund_requests(api):
    svc, call = api
    before = balance(svc, "nlp")
    r = call("POST", "/api/teams/nlp/fund-requests", json={"amount": "25.50", "note": "cluster course"})
    assert r.status_code == 201
    fr = r.get_json()["fund_request"]
    assert (fr["amount"], fr["amount_text"], fr["state"], fr["team"]) == ("25.500000", "$25.50", "pending", "nlp")
    for bad, status in [({"amount": 25.5}, 400), ({"amount": "1e3"}, 400), ({"amount": "5", "note": 5}, 400),
                        ({"amount": "5", "note": "x" * 501}, 400)]:
        r = call("POST", "/api/teams/nlp/fund-requests", json=bad)
        assert r.status_code == status and r.get_json()["error"], bad
    assert call("POST", "/api/teams/nlp/fund-requests", who="carol", json={"amount": "5"}).status_code == 403
    assert call("POST", "/api/teams/nlp/fund-requests", who="mallory", json={"amount": "5"}).status_code == 404
    assert [x["id"] for x in call("GET", "/api/teams/nlp/fund-requests").get_json()["fund_requests"]] == [fr["id"]]
    assert call("GET", "/api/teams/nlp/fund-requests", who="carol").status_code == 403
    assert call("GET", "/api/teams/nlp/fund-requests", who="mallory").status_code == 404
    assert call("GET", "/api/fund-requests?state=pending", who="mallory").get_json()["fund_requests"] == []
    listed = call("GET", "/api/fund-requests?state=pending", who="dave").get_json()["fund_requests"]
    assert [x["id"] for x in listed] == [fr["id"]]
    assert call("GET", "/api/fund-requests?state=nope", who="dave").status_code == 400
    url = f"/api/fund-requests/{fr['id']}"
    assert call("POST", url + "/approve").status_code == 403
    assert call("POST", url + "/approve", who="mallory").status_code == 404
    assert call("POST", url + "/frobnicate", who="dave").status_code == 404
    r = call("POST", url + "/approve", who="dave", json={"note": "fine"})
    assert r.status_code == 200 and r.get_json()["fund_request"]["state"] == "approved"
    assert call("POST", url + "/approve", who="dave").status_code == 409
    assert call("POST", url + "/decline", who="dave", json={"note": "late"}).status_code == 409
    assert balance(svc, "nlp") == before + Decimal("25.50")
    assert call("GET", url).get_json()["fund_request"]["ledger_entry"] is not None
    assert call("POST", f"/api/fund-requests/{2**64}/approve", who="dave").status_code == 404
    # the direct credit: cluster administrators only; a JSON float amount is refused
    assert call("POST", "/api/teams/nlp/funds", json={"amount": "1000000"}).status_code == 403
    assert call("POST", "/api/teams/nlp/funds", who="dave", json={"amount": 5.5}).status_code == 400
    assert balance(svc, "nlp") == before + Decimal("25.50")

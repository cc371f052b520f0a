"""Issue 9 item 8 (CSV formula injection) and the money nits: the ledger CSV neutralises text
cells a spreadsheet would run, keeps amounts numeric, and is the same from the web and the CLI;
money is shown to a tenth of a cent everywhere (pages, API text, CLI)."""
from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest
from click.testing import CliRunner
from sqlalchemy import update

from portal.billing import ledger as billing
from portal import integrations as ig
from portal.app import create_app
from portal.cli import Ctx, main
from portal.db import Job
from portal.billing.ledger_csv import LEDGER_CSV_HEADER, ledger_csv_row, safe_text
from tests.support.fakes import FakeBackend, make_services
from portal.web.common import fmt_usd_micros
from tests.support.web import login, make_world

HOSTILE = ['=HYPERLINK("http://x","y")', "@SUM(1)", "+1", "-1+1", "\t=1", "\r=1"]


@pytest.mark.parametrize("text", HOSTILE)
def test_formula_like_text_is_neutralised(text):
    assert safe_text(text) == "'" + text
    row = dict.fromkeys(LEDGER_CSV_HEADER)
    row.update(id=7, created_at="2026-01-05T12:00:00+00:00", kind="deposit", amount="-0.025000",
               note=text, created_by=text, resource=text, gpu_type=text, key=text, rate="0.500000")
    out = dict(zip(LEDGER_CSV_HEADER, ledger_csv_row(row)))
    for col in ("note", "created_by", "resource", "gpu_type", "key"):
        assert out[col] == "'" + text, col
    assert out["amount"] == "-0.025000" and out["rate"] == "0.500000" and out["id"] == "7"
    assert out["job"] == "" and out["bytes"] == ""


def test_plain_text_and_numbers_are_unchanged_and_odd_numbers_are_text():
    assert safe_text("grant 7") == "grant 7" and safe_text("a=b") == "a=b" and safe_text(None) == ""
    row = dict.fromkeys(LEDGER_CSV_HEADER, None)
    row.update(amount="=1+1", job="-2+3", note="grant", kind="gpu")
    out = dict(zip(LEDGER_CSV_HEADER, ledger_csv_row(row)))
    assert out["amount"] == "'=1+1" and out["job"] == "'-2+3" and out["note"] == "grant"


@pytest.fixture
def world(tmp_path):
    svc = make_services(tmp_path, backend=FakeBackend())
    ids = make_world(svc)
    for note in HOSTILE:
        billing.add_funds(svc.db, "nlp", "1.00", by="=evil()", note=note, now=svc.now())
    yield svc, ids, create_app(svc)
    svc.db.dispose()


def cli(svc, *args, actor="alice"):
    r = CliRunner().invoke(main, ["--as", actor, *args], obj=Ctx(services=svc),
                           env={"SLIPWAY_URL": None, "SLIPWAY_USER": None}, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r.output


def test_web_and_cli_csv_neutralise_the_same_cells(world):
    svc, _ids, app = world
    c = app.test_client()
    login(c, "alice")
    web = list(csv.reader(io.StringIO(c.get("/teams/nlp/ledger.csv").get_data(as_text=True))))
    local = list(csv.reader(io.StringIO(cli(svc, "team", "ledger", "nlp", "--csv"))))
    assert web == local and web[0] == list(LEDGER_CSV_HEADER)
    rows = [dict(zip(web[0], r)) for r in web[1:]]
    notes = {r["note"] for r in rows if r["created_by"] == "'=evil()"}
    assert notes == {"'" + n for n in HOSTILE}
    assert not any(cell.startswith(("=", "+", "@", "\t", "\r")) for r in web[1:] for cell in r)
    charges = [r for r in rows if r["kind"] == "gpu"]
    assert {r["amount"] for r in charges} == {"-0.500000", "-0.250000"}  # numbers, not text
    assert all(Decimal(r["amount"]) for r in rows)


# ------------------------------------------------------------------------- money display

@pytest.mark.parametrize("amount,shown", [
    ("0.025", "$0.025"), ("25", "$25.00"), ("24.25", "$24.25"), ("-3.2", "-$3.20"),
    ("1234.5675", "$1,234.568"), ("0.0004", "$0.00"), ("-0.0004", "$0.00"), ("0.0005", "$0.00"),
    ("0.0015", "$0.002"), ("1000000", "$1,000,000.00"), ("-0.025", "-$0.025"),
])
def test_format_usd_to_a_tenth_of_a_cent(amount, shown):
    assert ig.format_usd(Decimal(amount)) == shown
    assert fmt_usd_micros(int(Decimal(amount) * 1_000_000)) == shown


def test_fmt_usd_micros_is_format_usd():
    for micros in list(range(-3000, 3000, 7)) + [24_250_000, 1_234_567_890, -999_999_999, 10**12 + 500]:
        assert fmt_usd_micros(micros) == ig.format_usd(Decimal(micros) / 1_000_000), micros


def test_a_cost_of_0_025_shows_as_0_025_on_the_page_the_api_and_the_cli(world):
    svc, ids, app = world
    with svc.db.transaction() as s:
        s.execute(update(Job).where(Job.id == ids["succeeded"]).values(cost_micros=25_000))
    c = app.test_client()
    login(c, "alice")
    assert "$0.025" in c.get(f"/jobs/{ids['succeeded']}").get_data(as_text=True)
    assert "$0.025" in c.get("/teams/nlp").get_data(as_text=True)  # the job table
    log = c.get(f"/api/jobs/{ids['succeeded']}/log").get_json()
    assert log["cost"] == "0.025000" and log["cost_text"] == "$0.025"  # exact string + display
    assert "$0.025" in cli(svc, "job", "show", str(ids["succeeded"]))
    assert "$0.025" in cli(svc, "job", "list", "--team", "nlp")

"""The chaos run's ledger check where sacct lost attempts in a slurmdbd outage (seen in CI: a
requeued attempt that ran while slurmdbd was down left ONE record, COMPLETED with no start)."""
from __future__ import annotations

from tests.support.chaos_checks import accounting_lost, ledger_equals_sacct
from tests.support.chaos_plan import make_plan


def rec(state: str, elapsed: str, node: str = "a4k-1", start: str = "2026-12-06T20:28:40") -> dict:
    return {"JobName": "x", "State": state, "ElapsedRaw": elapsed, "NodeList": node, "Start": start,
            "AllocTRES": "billing=11,cpu=1,gres/gpu:a4000=1,gres/gpu=1,mem=1000M,node=1"}


def test_fewer_records_than_slurms_own_restart_count_is_a_loss():
    why = accounting_lost([rec("COMPLETED", "0", start="None")], {"attempt": 1})
    assert why == "sacct has 1 record(s) of the 2 attempts squeue showed"


def test_a_record_with_a_node_and_no_start_is_a_loss():
    why = accounting_lost([rec("NODE_FAIL", "16"), rec("COMPLETED", "0", start="None")], {"attempt": 1})
    assert why == "sacct's attempt 1 got node a4k-1 but has no start (COMPLETED)"


def test_whole_accounting_is_compared():
    assert accounting_lost([rec("NODE_FAIL", "16"), rec("COMPLETED", "40")], {"attempt": 1}) is None
    # cancelled while pending: no node, no start, nothing lost
    assert accounting_lost([rec("CANCELLED", "0", node="None assigned", start="None")],
                           {"attempt": 0}) is None


def test_ledger_check_notes_a_loss_and_still_fails_a_real_mismatch():
    plan = make_plan(4, seed=3)
    a, b = plan.jobs[0], plan.jobs[1]
    a.job_id, b.job_id = 1, 2
    for j in plan.jobs[2:]:
        j.job_id = None
    entry = {"kind": "gpu", "attempt": 0, "from_minute": 0, "to_minute": 1,
             "gpu_type": "a4000", "gpu_count": 1}
    books = {t: {"entries": []} for t, _ in plan.teams}
    books[a.team]["entries"].append({**entry, "job": 1})
    books[b.team]["entries"].append({**entry, "job": 2})
    acct = {"slipway-1": [rec("COMPLETED", "0", start="None")],     # lost: 2 attempts ran
            "slipway-2": [rec("COMPLETED", "130")]}                  # 3 minutes, 1 billed
    notes: list[str] = []
    problems = ledger_equals_sacct(plan, acct, books, {1: {"attempt": 1}, 2: {"attempt": 0}}, notes)
    assert len(problems) == 1 and problems[0].startswith("job 2 ")
    assert len(notes) == 1 and notes[0].startswith("job 1 ") and "slurmdbd outage" in notes[0]

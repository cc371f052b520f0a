"""Tests' stand-in for squeue's TEXT answer (slurm_bridge.queue_text) made from a recorded
``squeue --json`` fixture: each job printed the way squeue 22.05 prints those fields with
``--Format`` (``N/A`` for unset values, ``(null)`` for no comment, tres-alloc = the allocation
once there is one, else the request), with the token of the call's own argv. So tests that
feed recorded JSON to a FakeRunner keep their fixtures while CliBackend.jobs() asks for text."""
from __future__ import annotations

import json
from typing import Any, Mapping

from slurm_bridge.fields import _int, _text
from slurm_bridge.queue_text import FIELDS, separators
from slurm_bridge.runner import CommandResult, result


def _na(value: Any) -> str:
    text = _text(value)
    return text if text else "N/A"


def _time(value: Any) -> str:
    number = _int(value)
    return str(number) if number else "N/A"


def text_fields(job: Mapping[str, Any]) -> list[str]:
    """One job of ``squeue --json`` as squeue prints queue_text.FIELDS for it."""
    array = job.get("array_task_string") or (
        "" if job.get("array_task_id") is None else str(job.get("array_task_id")))
    job_id = _int(job.get("job_id"))
    values = {
        "JobID": str(job_id), "ArrayJobID": str(_int(job.get("array_job_id")) or job_id),
        "ArrayTaskID": array or "N/A", "State": _text(job.get("job_state")),
        "Reason": _text(job.get("state_reason")), "NodeList": _text(job.get("nodes")),
        "StartTime": _time(job.get("start_time")), "SubmitTime": _time(job.get("submit_time")),
        "RestartCnt": str(_int(job.get("restart_cnt"))),
        "tres-alloc": _na(job.get("tres_alloc_str") or job.get("tres_req_str")),
        "tres-per-node": _na(job.get("tres_per_node")), "tres-per-job": _na(job.get("tres_per_job")),
        "tres-per-task": _na(job.get("tres_per_task")), "NumCPUs": str(_int(job.get("cpus"))),
        "NumNodes": str(_int(job.get("node_count"), 1)), "NumTasks": str(_int(job.get("tasks"), 1)),
        "PriorityLong": str(_int(job.get("priority"))), "Nice": str(_int(job.get("nice"))),
        "Partition": _text(job.get("partition")), "Account": _text(job.get("account")),
        "UserName": _text(job.get("user_name")), "QOS": _text(job.get("qos")),
        "Comment": _text(job.get("comment")) or "(null)", "Name": _text(job.get("name")),
    }
    return [values[name] for name in FIELDS]


def render(data: Mapping[str, Any], token: str) -> str:
    """The whole text answer for ``queue_argv(token)``."""
    delim, marker = separators(token)
    out = []
    for job in data.get("jobs") or []:
        f = text_fields(job)
        out.append("\x1f".join(f[:-2]) + "\x1f" + f[-2] + delim + f[-1] + marker + "\n")
    return "".join(out)


def token_of(argv) -> str:
    """The token of a ``queue_argv`` call (its record marker closes the --Format spec)."""
    return argv[-1].rsplit("\x1e", 2)[-2]


def text_answer(json_text: str):
    """A FakeRunner responder: the recorded ``squeue --json`` answer as this call's text."""
    data = json.loads(json_text)

    def answer(argv, _input) -> CommandResult:
        return result(render(data, token_of(argv)))
    return answer

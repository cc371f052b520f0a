"""A lost post-receive.

Crash safety — the post-receive never reached Slipway (server restarted between the two hooks, a
network blip, the hook process killed) or git did not update the ref after pre-receive (a
concurrent push won it). The reservation stays ``queued``, unclaimed, without a Slurm id, and the
reconciler settles it after ``orphan_reservation_grace`` seconds (30 s by default, far longer
than a post-receive takes; only after a successful ``squeue`` poll):

* Slurm has ``slipway-<id>`` (the submit reply was lost): adopted (``reconciler.queue.apply_queue``);
* the branch in the bare repository points at the job's commit (the push completed):
  ``recover_reservation`` submits it with the same ``submit_job``, as if the hook had come; the
  job's reason says so (``RECOVERED_NOTE``);
* otherwise (the push did not complete): the reservation is failed at once with
  ``ABANDONED_REASON`` and the branch is free for the next push.

A reservation *claimed* by a submission that then died (sbatch in flight when the server
stopped) is adopted when Slurm has it, else after ``config.stale_reservation`` seconds it becomes
``unknown`` like a submission without an answer (never failed: Slurm may have it), and is
submitted again only once Slurm is known not to have it: a claim is never submitted twice.
"""
from __future__ import annotations

from ..db import Job
from ..services import Services, log
from . import states
from .push import HEADS
from .submit import not_claimed_message, submit_job, unknown_submission

RECOVERED_NOTE = ("submitted by Slipway's reconciler: the push's post-receive hook never reached "
                  "Slipway, and the branch points at the pushed commit")
ABANDONED_REASON = ("the push did not complete: branch {branch} does not point at {sha} "
                    "(git did not update it, or the push never finished); push again")


def branch_tip(svc: Services, team: str, project: str, branch: str) -> str | None:
    """The commit ``refs/heads/<branch>`` points at in the project's bare repository, or None."""
    return svc.git.resolve_ref(team, project, HEADS + branch)


def recover_reservation(svc: Services, job_id: int) -> tuple[str, str]:
    """Settle a reservation whose post-receive never reached Slipway (the reconciler calls this
    after ``orphan_reservation_grace``, once Slurm is known not to have the job).

    Returns (outcome, message): ``submitted`` (the branch points at the job's commit: submitted
    via ``submit_job``, exactly as the hook would have), ``unknown`` (submitted, but Slurm did
    not answer: see ``jobs.unknown``), ``failed`` (the submission was tried
    and failed; the job says why), ``abandoned`` (the branch does not point at the commit: the
    push did not complete; the reservation is failed and the branch is free) or ``skipped``
    (meanwhile claimed by a late post-receive, cancelled, or submitted)."""
    with svc.db.session() as s:
        job = s.get(Job, job_id)
        if job is None or job.state != states.QUEUED or job.slurm_job_id is not None \
                or job.token_hash is not None:
            return "skipped", not_claimed_message(job, job_id)
        team, project = job.project.team.name, job.project.name
        branch, sha = job.branch, job.commit_sha
    tip = branch_tip(svc, team, project, branch)
    if tip is not None and tip == sha:
        ok, msg = submit_job(svc, job_id, note=RECOVERED_NOTE)
        with svc.db.session() as s:
            job = s.get(Job, job_id)
            if job is not None and unknown_submission(job):
                return "unknown", msg  # sbatch had no answer: the reconciler finds out
        if ok:
            log.warning("job %s: post-receive never came; branch %s is at %s: submitted by the "
                        "reconciler", job_id, branch, sha[:12])
            return "submitted", msg
        with svc.db.session() as s:
            job = s.get(Job, job_id)
            return ("failed" if job is not None and job.state == states.FAILED else "skipped"), msg
    reason = ABANDONED_REASON.format(branch=branch, sha=sha[:12])
    with svc.db.transaction() as s:  # write transactions are serialised: this is atomic w.r.t. a claim
        job = s.get(Job, job_id)
        if job is None or job.state != states.QUEUED or job.slurm_job_id is not None \
                or job.token_hash is not None:
            return "skipped", not_claimed_message(job, job_id)
        states.transition(job, states.FAILED, now=svc.now(), reason=reason)
    log.warning("job %s: %s (branch tip %s)", job_id, reason, tip[:12] if tip else "none")
    return "abandoned", f"slipway: job {job_id}: {reason}"

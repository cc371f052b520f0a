"""What the job page shows of a job's usage (portal/templates/_job_usage.html): its points as
plot series and its totals and peaks, from the database only (``job_usage`` stores them).
The caller has checked that the viewer may see the job."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db import Job
from ..db.usage_models import JobUsagePoint, JobUsageSummary
from ..jobs import states
from .job_usage import SAMPLE_EVERY_S

NOT_REPORTED = "not reported"


def for_job(s: Session, job: Job) -> dict[str, Any] | None:
    """None for a job that never ran and has no usage; else the series (epoch seconds, CPU %
    of one core, resident MB, GPU % or None) and the summary in words and numbers."""
    summary = s.get(JobUsageSummary, job.id)
    if summary is None and job.started_at is None:
        return None
    rows = s.execute(select(JobUsagePoint.at, JobUsagePoint.cpu_percent, JobUsagePoint.rss_mb,
                            JobUsagePoint.gpu_util_percent)
                     .where(JobUsagePoint.job_id == job.id)
                     .order_by(JobUsagePoint.at, JobUsagePoint.id)).all()
    gpu_known = any(r.gpu_util_percent is not None for r in rows)
    series = {
        "t": [int(r.at.timestamp()) for r in rows],
        "cpu": [r.cpu_percent for r in rows],
        "rss": [round(r.rss_mb, 1) for r in rows],
        "gpu": [r.gpu_util_percent for r in rows] if gpu_known else None,
    }
    running = job.state in (states.RUNNING, states.FINISHING)
    out: dict[str, Any] = {
        "points": len(rows), "series": series, "running": running,
        "every_s": int(SAMPLE_EVERY_S), "ended": summary is not None and summary.ended_at is not None,
        "cpu_time": None, "max_cpu_percent": None, "max_rss_mb": None, "rss_mb": None,
        "gpu": NOT_REPORTED,
    }
    if summary is not None:
        out.update(cpu_time=fmt_cpu_seconds(summary.cpu_seconds),
                   cpu_seconds=summary.cpu_seconds,
                   max_cpu_percent=summary.max_cpu_percent,
                   max_rss_mb=round(summary.max_rss_mb, 1),
                   rss_mb=round(summary.rss_mb, 1) if running else None)
        if summary.max_gpu_util_percent is not None:
            out["gpu"] = f"peak {summary.max_gpu_util_percent:.0f} %"
    return out


def fmt_cpu_seconds(seconds: float | None) -> str:
    """CPU time in words: ``42 s``, ``12 min 05 s``, ``3 h 04 min``."""
    if seconds is None:
        return "—"
    total = int(round(seconds))
    if total < 60:
        return f"{total} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"

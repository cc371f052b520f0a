"""The charts' JSON for ``static/charts.js`` (uPlot): built from the dashboard's and the usage
statistics' dicts (and a team's daily spending), embedded in the page as data — no inline JS."""
from __future__ import annotations

from datetime import date, datetime, time, timezone
from decimal import Decimal

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def chart(chart_id: str, title: str, x: list, series: list[dict], *, unit: str = "",
          kind: str = "line", labels: list[str] | None = None) -> dict:
    return {"id": chart_id, "title": title, "unit": unit, "kind": kind, "x": x,
            "series": series, **({"labels": labels} if labels else {})}


def line(label: str, values: list, *, color: str | None = None, dash: bool = False) -> dict:
    return {"label": label, "values": values, **({"color": color} if color else {}),
            **({"dash": True} if dash else {})}


USAGE_CHART_IDS = ("chart-gpu-hours", "chart-spend", "chart-jobs", "chart-wait")
CLUSTER_CHART_IDS = ("chart-jobs", "chart-cpus", "chart-mem", "chart-storage")


def cluster_chart_ids(series: dict) -> list[str]:
    """The ids ``cluster_charts`` gives its charts, in order (the page's placeholders)."""
    return [f"chart-gpu-{_slug(t)}" for t in series["gpus"]] + list(CLUSTER_CHART_IDS)


def cluster_charts(series: dict) -> list[dict]:
    """GPUs per type, jobs, CPU cores, memory, storage — over the chosen range. Hourly ranges
    show the hour's average and, dashed, its peak."""
    x = series["x"]
    hourly = series["step"] >= 3600
    out = []
    for gpu_type, g in series["gpus"].items():
        lines = [line("allocated", g["alloc"], color="#3b6fd8"),
                 line("idle", g["idle"], color="#2e9e5b"),
                 line("down", g["down"], color="#d83b5a"),
                 line("total", g["total"], color="#7a8a99", dash=True)]
        if hourly:
            lines.insert(1, line("allocated (peak)", g["alloc_max"], color="#3b6fd8", dash=True))
        out.append(chart(f"chart-gpu-{_slug(gpu_type)}", f"GPUs {gpu_type}", x, lines))
    jobs = [line("running", series["jobs_running"], color="#3b6fd8"),
            line("pending", series["jobs_pending"], color="#d8733b")]
    cpus = [line("allocated", series["cpus_alloc"], color="#3b6fd8"),
            line("total", series["cpus_total"], color="#7a8a99", dash=True)]
    if hourly:
        jobs += [line("running (peak)", series["jobs_running_max"], color="#3b6fd8", dash=True),
                 line("pending (peak)", series["jobs_pending_max"], color="#d8733b", dash=True)]
        cpus.insert(1, line("allocated (peak)", series["cpus_alloc_max"], color="#3b6fd8",
                            dash=True))
    out.append(chart("chart-jobs", "Jobs", x, jobs))
    out.append(chart("chart-cpus", "CPU cores", x, cpus))
    out.append(chart("chart-mem", "Memory", x, [
        line("allocated", series["mem_alloc_gb"], color="#3b6fd8"),
        line("total", series["mem_total_gb"], color="#7a8a99", dash=True)], unit="GiB"))
    out.append(chart("chart-storage", "Storage used", x,
                     [line("stored", series["storage_gb"], color="#b03bd8")], unit="GB"))
    return out


def usage_charts(stats: dict) -> list[dict]:
    x, labels = stats["x"], stats["buckets"]
    gpu = [line(t, v) for t, v in stats["gpu_hours"].items()]
    if any(stats["cpu_core_hours"]):
        gpu.append(line("CPU core-hours", stats["cpu_core_hours"], dash=True))
    out = [chart("chart-gpu-hours", f"GPU-hours per {stats['period']}", x,
                 gpu or [line("GPU-hours", [0] * len(x))], kind="bars", labels=labels),
           chart("chart-spend", f"Spend per {stats['period']}", x,
                 [line("GPU and CPU", [float(v) for v in stats["spend_gpu_usd"]]),
                  line("storage", [float(v) for v in stats["spend_storage_usd"]])],
                 unit="$", kind="bars", labels=labels),
           chart("chart-jobs", f"Jobs ended per {stats['period']}", x,
                 [line(state, v, color=_STATE_COLORS.get(state))
                  for state, v in stats["jobs"].items()], kind="bars", labels=labels),
           chart("chart-wait", "Queue wait (submitted → started)", x,
                 [line("median", _minutes(stats["wait_median_s"])),
                  line("95th percentile", _minutes(stats["wait_p95_s"]), dash=True)],
                 unit="min", labels=labels)]
    return out


def spending_chart(series: list[tuple[str, Decimal]]) -> dict:
    """A team's daily spending ([(YYYY-MM-DD, dollars)], oldest first) as bars."""
    x = [int((datetime.combine(date.fromisoformat(d), time(), timezone.utc) - EPOCH)
             .total_seconds()) for d, _ in series]
    return chart("chart-spending", f"Spending per day over the last {len(series)} days", x,
                 [line("spent", [float(v) for _, v in series], color="#3b6fd8")], unit="$",
                 kind="bars", labels=[d for d, _ in series])


_STATE_COLORS = {"succeeded": "#2e9e5b", "failed": "#d83b5a", "cancelled": "#7a8a99"}


def _minutes(values: list) -> list:
    return [None if v is None else round(v / 60, 2) for v in values]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text)

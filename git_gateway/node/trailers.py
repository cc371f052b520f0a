"""Git trailers of result commits: what a reader of the branch can check later.

Every commit a job makes (its results, or an earlier attempt's files saved as "(interrupted)")
ends with one trailer block that ``git interpret-trailers --parse`` reads::

    Slipway-Job: 42
    Slipway-Attempt: 1
    Slipway-Commit: <the pushed commit it ran, 40 hex>
    Slipway-Branch: exp-1
    Slipway-Image: python
    Slipway-Image-Digest: sha256:<hex>
    Slipway-GPUs: a4000 x2
    Slipway-GPU-Devices: 0,1                  (CUDA_VISIBLE_DEVICES as the job saw it)
    Slipway-Node: a4k-1                       (SLURMD_NODENAME, else the host name)
    Slipway-Exit-Code: 0
    Slipway-Signal: TERM                      (only when the job was signalled)
    Slipway-Interrupted: yes                  (only on an "(interrupted)" commit)
    Slipway-Minutes: 3
    Slipway-Cost: $0.050 (a4000 x2 @ $0.50/GPU-hour, 3 min)

Minutes and cost are this attempt's, computed the way the ledger bills it (started minutes,
``ceil(elapsed s / 60)``, x GPUs x hourly rate / 60, exact to a micro-dollar, shown to a tenth of
a cent) but timed by the runner, which commits before the attempt ends: the ledger, billed from
Slurm accounting, is the authority when the two differ. A value nobody knows is ``unknown``.

Values are forced onto one line (control and line-separator characters become ``?``, at most
200 characters), so a hostile branch or image name cannot add a trailer line.
Standard library only: it runs on the compute node.
"""
from __future__ import annotations

import unicodedata
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

UNKNOWN = "unknown"
MAX_VALUE = 200
MICRO = Decimal("0.000001")
MILLI = Decimal("0.001")
CENT = Decimal("0.01")


def clean_value(value: object) -> str:
    """One safe trailer value: a single line of printable characters, trimmed, <= 200 chars."""
    if value is None:
        return UNKNOWN
    text = str(value)
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch == "\t" or cat == "Zs":
            out.append(" ")
        elif cat[0] == "C" or cat in ("Zl", "Zp"):     # \n, \r, NUL, U+2028, bidi controls...
            out.append("?")
        else:
            out.append(ch)
    text = " ".join("".join(out).split())
    if len(text) > MAX_VALUE:
        text = text[:MAX_VALUE - 1] + "…"
    return text or UNKNOWN


def format_trailers(pairs) -> str:
    """``[(key, value), ...]`` -> the trailer block (no trailing newline). Keys are fixed
    ``Slipway-*`` names; a key that is not ``[A-Za-z0-9-]+`` is a programming error."""
    lines = []
    for key, value in pairs:
        if not key or not all(c.isascii() and (c.isalnum() or c == "-") for c in key):
            raise ValueError(f"bad trailer key {key!r}")
        lines.append(f"{key}: {clean_value(value)}")
    return "\n".join(lines)


def attempt_minutes(elapsed_seconds: float | None) -> int | None:
    """Started minutes of an attempt, as the ledger bills an ended one: ceil(elapsed / 60)."""
    if elapsed_seconds is None or not elapsed_seconds >= 0:
        return None
    micros = int(Decimal(str(elapsed_seconds)) * 1_000_000)
    return -(-micros // 60_000_000)


def parse_rate(rate: object) -> Decimal | None:
    """An hourly rate given as a decimal string (never a float); None when absent or bad."""
    if rate is None or isinstance(rate, (bool, float)):
        return None
    try:
        value = Decimal(str(rate).strip())
    except InvalidOperation:
        return None
    if not value.is_finite() or value < 0:
        return None
    return value


def attempt_cost(minutes: int, gpu_count: int, rate: Decimal) -> Decimal:
    """``minutes x gpu_count x rate / 60`` rounded half-even to a micro-dollar (the ledger's C(m))."""
    return (minutes * gpu_count * rate / 60).quantize(MICRO, rounding=ROUND_HALF_EVEN)


def usd(amount: Decimal, places: Decimal = MILLI) -> str:
    q = amount.quantize(places, rounding=ROUND_HALF_EVEN)
    return f"{'-' if q < 0 else ''}${abs(q):,}"


def usd_rate(rate: Decimal) -> str:
    """A rate with at least cents and every decimal it has: $0.50, $1.234567."""
    exp = rate.normalize().as_tuple().exponent
    return usd(rate, CENT if not isinstance(exp, int) or exp >= -2 else rate.normalize())


def gpus_label(gpu_type: str | None, gpu_count: int | None) -> str:
    if not gpu_type or not gpu_count:
        return UNKNOWN
    return f"{gpu_type} x{gpu_count}"


def cost_text(minutes: int | None, gpu_type: str | None, gpu_count: int | None,
              rate: Decimal | None) -> str:
    if minutes is None or rate is None or not gpu_type or not gpu_count:
        return UNKNOWN
    cost = attempt_cost(minutes, gpu_count, rate)
    return (f"{usd(cost)} ({gpus_label(gpu_type, gpu_count)} @ {usd_rate(rate)}/GPU-hour, "
            f"{minutes} min)")


def result_trailers(*, job_id, commit: str, branch: str | None = None,
                    attempt: int | None = None, image: str | None = None,
                    image_digest: str | None = None, gpu_type: str | None = None,
                    gpu_count: int | None = None, gpu_devices: str | None = None,
                    node: str | None = None, exit_code: int | None = None,
                    signal: str | None = None, interrupted: bool = False,
                    elapsed_seconds: float | None = None, gpu_rate: object = None
                    ) -> list[tuple[str, str]]:
    """The trailers of one result commit, in order (see the module docstring)."""
    minutes = attempt_minutes(elapsed_seconds)
    pairs = [("Slipway-Job", job_id), ("Slipway-Attempt", attempt), ("Slipway-Commit", commit),
             ("Slipway-Branch", branch), ("Slipway-Image", image),
             ("Slipway-Image-Digest", image_digest),
             ("Slipway-GPUs", gpus_label(gpu_type, gpu_count)),
             ("Slipway-GPU-Devices", "unset" if gpu_devices is None else gpu_devices or "none"),
             ("Slipway-Node", node), ("Slipway-Exit-Code", exit_code)]
    if signal:
        pairs.append(("Slipway-Signal", signal))
    if interrupted:
        pairs.append(("Slipway-Interrupted", "yes"))
    pairs += [("Slipway-Minutes", minutes),
              ("Slipway-Cost", cost_text(minutes, gpu_type, gpu_count, parse_rate(gpu_rate)))]
    return [(k, clean_value(v)) for k, v in pairs]


def basic_trailers(job_id, exit_code: int | None, signal: str | None = None) -> str:
    """What a caller without the job's facts can say (results.commit_back's default)."""
    pairs = [("Slipway-Job", job_id), ("Slipway-Exit-Code", exit_code)]
    if signal:
        pairs.append(("Slipway-Signal", signal))
    return format_trailers(pairs)

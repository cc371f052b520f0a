"""Server-generated inline SVG (no JS libraries): a bar chart of daily spending."""
from __future__ import annotations

from decimal import Decimal
from html import escape

from markupsafe import Markup

from ..integrations import format_usd  # the one money display (tenths of a cent)


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    mag = 10 ** len(str(int(v))) / 10 if v >= 1 else 1.0
    for step in (1, 2, 2.5, 5, 10):
        if v <= step * mag:
            return step * mag
    return 10 * mag


def spending_svg(series: list[tuple[str, Decimal]], width: int = 720, height: int = 220) -> Markup:
    """``series``: [(YYYY-MM-DD, dollars)] oldest first."""
    left, right, top, bottom = 56, 10, 12, 28
    w, h = width - left - right, height - top - bottom
    n = max(1, len(series))
    top_val = _nice_max(float(max((v for _, v in series), default=0)))
    bw = w / n
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="Spending per day over the last {n} days" xmlns="http://www.w3.org/2000/svg">']
    for i in range(5):  # grid + y labels
        val = top_val * i / 4
        y = top + h - h * i / 4
        parts.append(f'<line x1="{left}" x2="{left + w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e6ea"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" '
                     f'fill="#5b6470">{escape(format_usd(Decimal(str(val))))}</text>')
    for i, (day, v) in enumerate(series):
        bh = h * float(v) / top_val if top_val else 0
        x = left + i * bw
        if bh > 0:
            parts.append(f'<rect x="{x + 1:.1f}" y="{top + h - bh:.1f}" width="{max(bw - 2, 1):.1f}" '
                         f'height="{bh:.1f}" fill="#3b6fd8"><title>{escape(day)}: '
                         f'{escape(format_usd(v))}</title></rect>')
        if i % max(1, n // 6) == 0:
            parts.append(f'<text x="{x + bw / 2:.1f}" y="{height - 8}" text-anchor="middle" '
                         f'font-size="11" fill="#5b6470">{escape(day[5:])}</text>')
    parts.append(f'<line x1="{left}" x2="{left + w}" y1="{top + h}" y2="{top + h}" stroke="#9aa3ad"/>')
    parts.append("</svg>")
    return Markup("".join(parts))

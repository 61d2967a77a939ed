"""Charts as inline SVG, drawn on the server: no script, no stylesheet from elsewhere, readable
in any browser and in a screenshot. Every mark is a ``<path>`` with a ``<title>`` (the value, as
a tooltip); an empty series draws a labelled empty frame."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from html import escape

__all__ = ["PALETTE", "bar_chart", "hbar_chart", "line_chart"]

#: Series colours, in order (the first is every single-series chart's).
PALETTE = ("#2563eb", "#f97316", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#db2777")
_W, _H, _LEFT, _BOTTOM, _TOP = 680, 220, 64, 28, 12

Format = Callable[[float], str]


def _plain(value: float) -> str:
    return f"{value:,.6g}"


def _frame(title: str, body: str, height: int = _H) -> str:
    return (f'<svg class="chart" viewBox="0 0 {_W} {height}" width="{_W}" height="{height}" role="img" '
            f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>{body}</svg>')


def _axis(top: float, fmt: Format, days: Sequence[str], step: float) -> str:
    """The y grid (0, half, top) and the first, middle and last x labels."""
    plot = _H - _BOTTOM - _TOP
    out = []
    for fraction in (0.0, 0.5, 1.0):
        y = _TOP + plot * (1 - fraction)
        out.append(f'<path d="M{_LEFT} {y:.1f}H{_W}" stroke="#e5e7eb" stroke-width="1"/>'
                   f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="#4b5563">{escape(fmt(top * fraction))}</text>')
    last = len(days) - 1
    for index in sorted({0, last // 2, last}) if days else ():
        x = _LEFT if index == 0 else _W if index == last else _LEFT + step * (index + 0.5)
        anchor = "start" if index == 0 else "end" if index == last else "middle"
        out.append(f'<text x="{x:.1f}" y="{_H - 8}" text-anchor="{anchor}" font-size="11" fill="#4b5563">{escape(days[index])}</text>')
    return "".join(out)


def _empty(title: str) -> str:
    return _frame(title, f'<text x="{_W / 2}" y="{_H / 2}" text-anchor="middle" font-size="13" fill="#6b7280">nothing to draw in this range (all zero)</text>')


def bar_chart(title: str, days: Sequence[str], series: Mapping[str, Sequence[float]], fmt: Format = _plain) -> str:
    """Bars per day, one stacked segment per series (in :data:`PALETTE` order)."""
    totals = [sum(values[i] for values in series.values()) for i in range(len(days))]
    top = max(totals, default=0.0)
    if not days or top <= 0:
        return _empty(title)
    plot, step = _H - _BOTTOM - _TOP, (_W - _LEFT) / len(days)
    width = max(1.0, step * 0.7)
    marks = []
    base = [0.0] * len(days)
    for n, (name, values) in enumerate(series.items()):
        colour = PALETTE[n % len(PALETTE)]
        for i, value in enumerate(values):
            if value <= 0:
                continue
            h = plot * value / top
            y = _TOP + plot - base[i] - h
            x = _LEFT + step * i + (step - width) / 2
            marks.append(f'<path class="mark" d="M{x:.1f} {y:.1f}h{width:.1f}v{h:.1f}h{-width:.1f}Z" fill="{colour}">'
                         f'<title>{escape(days[i])} {escape(name)}: {escape(fmt(value))}</title></path>')
            base[i] += h
    return _frame(title, _axis(top, fmt, days, step) + "".join(marks))


def line_chart(title: str, days: Sequence[str], series: Mapping[str, Sequence[float | None]], fmt: Format = _plain) -> str:
    """One line per series over the days (a day without a value breaks the line)."""
    top = max((v for values in series.values() for v in values if v is not None), default=0.0)
    if not days or top <= 0:
        return _empty(title)
    plot, step = _H - _BOTTOM - _TOP, (_W - _LEFT) / len(days)
    marks = []
    for n, (name, values) in enumerate(series.items()):
        colour, pen = PALETTE[n % len(PALETTE)], "M"
        points = []
        for i, value in enumerate(values):
            if value is None:
                pen = "M"
                continue
            x, y = _LEFT + step * (i + 0.5), _TOP + plot * (1 - value / top)
            points.append(f"{pen}{x:.1f} {y:.1f}")
            pen = "L"
            marks.append(f'<path class="mark" d="M{x - 3:.1f} {y:.1f}a3 3 0 1 0 6 0a3 3 0 1 0 -6 0Z" fill="{colour}">'
                         f'<title>{escape(days[i])} {escape(name)}: {escape(fmt(value))}</title></path>')
        marks.insert(0, f'<path class="line" d="{"".join(points)}" fill="none" stroke="{colour}" stroke-width="2"/>')
    return _frame(title, _axis(top, fmt, days, step) + "".join(marks))


def hbar_chart(title: str, rows: Sequence[tuple[str, float, str]], top: float | None = None, colours: Sequence[str] = ()) -> str:
    """Horizontal bars: ``(label, value, text shown beside it)``, longest to ``top`` (default
    the largest value); ``colours`` per row (default the first of :data:`PALETTE`)."""
    rows = list(rows)[:30]
    top = top if top is not None else max((v for _, v, _ in rows), default=0.0)
    if not rows or top <= 0:
        return _empty(title)
    height, left, room = 24 * len(rows) + 16, 180, _W - 180 - 200
    marks = []
    for i, (label, value, text) in enumerate(rows):
        y, w = 8 + 24 * i, max(0.0, min(1.0, value / top)) * room
        colour = colours[i] if i < len(colours) else PALETTE[0]
        marks.append(f'<text x="{left - 8}" y="{y + 14}" text-anchor="end" font-size="12" fill="#111827">{escape(label[:28])}</text>')
        if w > 0:
            marks.append(f'<path class="mark" d="M{left} {y + 2}h{w:.1f}v16h{-w:.1f}Z" fill="{colour}"><title>{escape(label)}: {escape(text)}</title></path>')
        marks.append(f'<text x="{left + w + 6:.1f}" y="{y + 14}" font-size="12" fill="#374151">{escape(text)}</text>')
    return _frame(title, "".join(marks), height)

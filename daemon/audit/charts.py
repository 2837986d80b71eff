"""Small self-contained SVG charts for the audit report: no images to break, no plotting dependency."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

PALETTE = ("#2f6690", "#d1495b", "#edae49", "#66a182", "#8d6a9f", "#3a7d44", "#c17c74", "#5c6b73")

_WIDTH = 760
_HEIGHT = 300
_LEFT = 56
_RIGHT = 16
_TOP = 52
_BOTTOM = 76


def bar_chart(title: str, categories: Sequence[str], series: Mapping[str, Sequence[float]], unit: str = "") -> str:
    """Grouped bars: one group per category, one bar per series."""
    peak = max([value for values in series.values() for value in values] + [0.0]) or 1.0
    plot_width = _WIDTH - _LEFT - _RIGHT
    plot_height = _HEIGHT - _TOP - _BOTTOM
    group_width = plot_width / max(1, len(categories))
    bar_width = max(1.0, group_width * 0.8 / max(1, len(series)))
    parts = [_frame(title), *_y_axis(peak, unit)]
    label_every = max(1, len(categories) // 12)
    for index, category in enumerate(categories):
        x0 = _LEFT + index * group_width + group_width * 0.1
        for position, (name, values) in enumerate(series.items()):
            value = values[index] if index < len(values) else 0.0
            height = plot_height * value / peak
            x = x0 + position * bar_width
            parts.append(
                f'<rect x="{x:.1f}" y="{_TOP + plot_height - height:.1f}" width="{bar_width:.1f}" '
                f'height="{height:.1f}" fill="{PALETTE[position % len(PALETTE)]}">'
                f"<title>{escape(name)} {escape(category)}: {value:g}{escape(unit)}</title></rect>"
            )
        if index % label_every == 0:
            parts.append(
                f'<text x="{x0:.1f}" y="{_HEIGHT - _BOTTOM + 14}" font-size="10" '
                f'transform="rotate(30 {x0:.1f},{_HEIGHT - _BOTTOM + 14})">{escape(category)}</text>'
            )
    parts.append(_legend(list(series)))
    parts.append("</svg>")
    return "\n".join(parts)


def line_chart(title: str, x_labels: Sequence[str], series: Mapping[str, Sequence[float | None]], unit: str = "") -> str:
    """One polyline per series over shared x positions; None leaves a gap."""
    values = [v for vs in series.values() for v in vs if v is not None]
    peak = max(values + [0.0]) or 1.0
    plot_width = _WIDTH - _LEFT - _RIGHT
    plot_height = _HEIGHT - _TOP - _BOTTOM
    step = plot_width / max(1, len(x_labels) - 1)
    parts = [_frame(title), *_y_axis(peak, unit)]
    for position, (name, points) in enumerate(series.items()):
        segment: list[str] = []
        segments: list[list[str]] = []
        for index, value in enumerate(points):
            if value is None:
                if segment:
                    segments.append(segment)
                segment = []
                continue
            segment.append(f"{_LEFT + index * step:.1f},{_TOP + plot_height - plot_height * value / peak:.1f}")
        if segment:
            segments.append(segment)
        colour = PALETTE[position % len(PALETTE)]
        for points_text in segments:
            if len(points_text) == 1:
                x, y = points_text[0].split(",")
                parts.append(f'<circle cx="{x}" cy="{y}" r="3" fill="{colour}"><title>{escape(name)}</title></circle>')
            else:
                parts.append(
                    f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(points_text)}">'
                    f"<title>{escape(name)}</title></polyline>"
                )
    label_every = max(1, len(x_labels) // 10)
    for index, label in enumerate(x_labels):
        if index % label_every == 0:
            x = _LEFT + index * step
            parts.append(
                f'<text x="{x:.1f}" y="{_HEIGHT - _BOTTOM + 14}" font-size="10" '
                f'transform="rotate(30 {x:.1f},{_HEIGHT - _BOTTOM + 14})">{escape(label)}</text>'
            )
    parts.append(_legend(list(series)))
    parts.append("</svg>")
    return "\n".join(parts)


def histogram(title: str, values: Sequence[float], bins: int = 20, unit: str = "") -> str:
    """Distribution of `values` in equal-width bins."""
    if not values:
        return empty_chart(title, "no data in this period")
    low, high = min(values), max(values)
    width = (high - low) / bins or 1.0
    counts = [0] * bins
    for value in values:
        counts[min(bins - 1, int((value - low) / width))] += 1
    labels = [f"{low + i * width:.3g}" for i in range(bins)]
    return bar_chart(title, labels, {f"count ({unit})" if unit else "count": [float(c) for c in counts]})


def empty_chart(title: str, message: str) -> str:
    return "\n".join(
        [
            _frame(title),
            f'<text x="{_WIDTH / 2}" y="{_HEIGHT / 2}" text-anchor="middle" fill="#777">{escape(message)}</text>',
            "</svg>",
        ]
    )


def _frame(title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{escape(title)}" '
        f'viewBox="0 0 {_WIDTH} {_HEIGHT}" width="{_WIDTH}" height="{_HEIGHT}" font-family="sans-serif">'
        f'<rect width="100%" height="100%" fill="white"/>'
        f'<text x="{_LEFT}" y="16" font-size="13" font-weight="bold">{escape(title)}</text>'
    )


def _y_axis(peak: float, unit: str) -> list[str]:
    plot_height = _HEIGHT - _TOP - _BOTTOM
    parts = [
        f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{_TOP + plot_height}" stroke="#444"/>',
        f'<line x1="{_LEFT}" y1="{_TOP + plot_height}" x2="{_WIDTH - _RIGHT}" y2="{_TOP + plot_height}" stroke="#444"/>',
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = _TOP + plot_height * (1 - fraction)
        parts.append(
            f'<text x="{_LEFT - 4}" y="{y + 3:.1f}" font-size="10" text-anchor="end">{peak * fraction:.3g}{escape(unit)}</text>'
        )
    return parts


def _legend(names: list[str]) -> str:
    items = []
    x = _LEFT
    for index, name in enumerate(names[:8]):
        row, column = divmod(index, 4)
        items.append(
            f'<rect x="{x + column * 170}" y="{24 + row * 13}" width="9" height="9" fill="{PALETTE[index % len(PALETTE)]}"/>'
            f'<text x="{x + column * 170 + 12}" y="{32 + row * 13}" font-size="10">{escape(name)}</text>'
        )
    return "".join(items)

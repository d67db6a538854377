"""Charts drawn on the server as inline SVG: no script and nothing fetched (the CSP allows only
'self'), readable without JavaScript, colours from the admin's theme through CSS classes
(static/admin/chat/review.css). Every bar and point carries its value in `data-value` and a
`<title>` that the browser shows on hover."""
import math

from django.utils.html import escape
from django.utils.safestring import mark_safe

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 26, 30
MAX_X_LABELS = 8


def column_chart(name, title, labels, keys, values, value_format=str, tick_format=None):
    """One column per label (a day): `values` are counts or other figures, None drawn as nothing.
    `value_format` writes a value for people; `tick_format` (the same by default) the y axis' ticks."""
    scale = _Scale(values, integer=all(isinstance(v, int) for v in values if v is not None))
    slot = (WIDTH - LEFT - RIGHT) / max(1, len(labels))
    parts = _axes(scale, labels, tick_format or value_format)
    for i, (key, label, value) in enumerate(zip(keys, labels, values)):
        if value is None:
            continue
        top = scale.y(value)
        parts.append(
            f'<rect class="bar" x="{LEFT + i * slot + slot * 0.15:.1f}" y="{top:.1f}" width="{slot * 0.7:.1f}" '
            f'height="{HEIGHT - BOTTOM - top:.1f}" data-key="{escape(key)}" data-value="{value}">'
            f'<title>{escape(label)}: {escape(value_format(value))}</title></rect>')
    return _svg(name, title, parts, empty=not any(values))


def line_chart(name, title, labels, keys, series, value_format=str, tick_format=None):
    """One line per (series name, values) pair, a point per label; None leaves a gap."""
    every_value = [v for _, values in series for v in values if v is not None]
    scale = _Scale(every_value)
    slot = (WIDTH - LEFT - RIGHT) / max(1, len(labels))
    parts = _axes(scale, labels, tick_format or value_format)
    for index, (series_name, values) in enumerate(series):
        points = [(LEFT + (i + 0.5) * slot, scale.y(v)) if v is not None else None for i, v in enumerate(values)]
        for segment in _segments(points):
            if len(segment) > 1:
                path = " ".join(f"{x:.1f},{y:.1f}" for x, y in segment)
                parts.append(f'<polyline class="line series-{index}" points="{path}"/>')
        for point, key, label, value in zip(points, keys, labels, values):
            if point is not None:
                parts.append(
                    f'<circle class="point series-{index}" cx="{point[0]:.1f}" cy="{point[1]:.1f}" r="3" '
                    f'data-series="{escape(series_name)}" data-key="{escape(key)}" data-value="{value:.6g}">'
                    f'<title>{escape(label)}, {escape(series_name)}: {escape(value_format(value))}</title></circle>')
        parts.append(f'<rect class="swatch series-{index}" x="{LEFT + index * 110}" y="4" width="12" height="12"/>'
                     f'<text class="legend" x="{LEFT + index * 110 + 16}" y="14">{escape(series_name)}</text>')
    return _svg(name, title, parts, empty=not every_value)


def bar_list(name, title, items):
    """Horizontal bars for (label, count) pairs: finish reasons, error causes."""
    row = 34
    height = TOP + row * max(1, len(items))
    top_count = max([count for _, count in items] or [1])
    span = WIDTH - 80
    parts = []
    for i, (label, count) in enumerate(items):
        y = TOP + i * row
        width = max(2.0, span * count / top_count)
        parts.append(
            f'<text class="category" x="0" y="{y - 4}">{escape(label)}</text>'
            f'<rect class="bar" x="0" y="{y}" width="{width:.1f}" height="14" data-key="{escape(label)}" '
            f'data-value="{count}"><title>{escape(label)}: {count}</title></rect>'
            f'<text class="value" x="{width + 6:.1f}" y="{y + 12}">{count}</text>')
    return _svg(name, title, parts, empty=not items, height=height)


class _Scale:
    """A y axis from 0 to a round number at or above the largest value, with four or five ticks."""

    def __init__(self, values, integer=False):
        largest = max([v for v in values if v is not None] or [0])
        largest = largest if largest > 0 else 1
        raw_step = largest / 4
        magnitude = 10 ** math.floor(math.log10(raw_step))
        multiples = (1, 2, 5, 10) if integer else (1, 2, 2.5, 5, 10)
        step = next(m * magnitude for m in multiples if m * magnitude >= raw_step)
        if integer:
            step = max(1, round(step))
        self.ticks = [step * n for n in range(math.ceil(largest / step - 1e-9) + 1)]
        self.top = self.ticks[-1]

    def y(self, value):
        return HEIGHT - BOTTOM - (HEIGHT - BOTTOM - TOP) * value / self.top


def _axes(scale, labels, value_format):
    parts = []
    for tick in scale.ticks:
        y = scale.y(tick)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
                     f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                     f'{escape(value_format(tick))}</text>')
    slot = (WIDTH - LEFT - RIGHT) / max(1, len(labels))
    every = math.ceil(len(labels) / MAX_X_LABELS)
    for i, label in enumerate(labels):
        if (len(labels) - 1 - i) % every == 0:  # the latest day always has its label
            parts.append(f'<text class="tick" x="{LEFT + (i + 0.5) * slot:.1f}" y="{HEIGHT - BOTTOM + 18}" '
                         f'text-anchor="middle">{escape(label)}</text>')
    return parts


def _segments(points):
    segment = []
    for point in points:
        if point is None:
            if segment:
                yield segment
            segment = []
        else:
            segment.append(point)
    if segment:
        yield segment


def _svg(name, title, parts, empty, height=HEIGHT):
    if empty:
        parts = parts + [f'<text class="empty" x="{WIDTH / 2}" y="{height / 2}" text-anchor="middle">'
                         'Nothing in this period</text>']
    return mark_safe(  # noqa: S308 - every text and attribute above is escaped
        f'<svg class="chart" data-chart="{escape(name)}" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
        + "".join(parts) + "</svg>")

"""Turn ledger rows into one self-contained HTML page: spend, latency and outcome charts.

``tierwise report`` writes what :func:`render_report` returns. The page needs nothing but
itself: the charts are inline SVG drawn here, the styles an inline ``<style>``; there is no
script, font, stylesheet or image to fetch, so it opens offline and can be mailed around.

Every chart has an SVG ``<title>``/``<desc>`` for screen readers, a native tooltip on
every bar (its ``<title>``) and a ``<details>`` table with the numbers it draws. Every
string that comes from the ledger (model names, operations, failure details) is escaped;
the rows themselves are already scrubbed of secrets by the router, and nothing else
(environment, settings) goes into the page.

Bars carry their numbers as ``data-*`` attributes (``data-cost``, ``data-count``, ...),
exact ``repr`` floats, so a test — or a curious user — can check a chart against the ledger.
"""

from __future__ import annotations

import html
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

from tierwise.catalog.specs import Tier
from tierwise.insights.failures import failure_groups, outcome_label
from tierwise.ledger import OK, LedgerRow, percentile

__all__ = ["bucket_seconds", "render_report"]

_BUCKETS = (60, 300, 900, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86_400, 7 * 86_400)
_MAX_BUCKETS = 48
_WIDTH = 760
_LEFT = 200  # room for model names left of horizontal bars
_BAR = 18
_TIER_COLORS = {"local": "#4e79a7", "free": "#59a14f", "paid": "#e15759"}
_PALETTE = ("#e15759", "#f28e2b", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#76b7b2",
            "#4e79a7", "#bab0ac")  # fmt: skip
_OK_COLOR = "#59a14f"
_Formatter = Callable[[float], str]
_MAX_FAILURE_ROWS = 20
_STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0;
       color: #1f2328; background: #fff; }
main { max-width: 980px; margin: 0 auto; padding: 1.5rem; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2.2rem; }
.meta { color: #59636e; margin-top: 0; }
table { border-collapse: collapse; margin: .6rem 0; }
th, td { border-bottom: 1px solid #d1d9e0; padding: .25rem .6rem; text-align: left; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
svg.chart { max-width: 100%; height: auto; display: block; }
svg text { font: 12px system-ui, sans-serif; fill: #1f2328; }
svg .axis { stroke: #8c959f; stroke-width: 1; }
svg .grid { stroke: #d1d9e0; stroke-width: 1; }
details { margin: .4rem 0 1rem; } summary { cursor: pointer; color: #0969da; }
.detail { font-family: ui-monospace, monospace; font-size: 12px; overflow-wrap: anywhere; }
#failures td:not(:last-child) { white-space: nowrap; }
"""


def render_report(
    rows: Sequence[LedgerRow],
    *,
    since: float | None = None,
    generated: float | None = None,
) -> str:
    """The HTML page for ``rows``.

    Args:
        rows: The attempts to show, as :meth:`Ledger.rows` returns them (any order).
        since: Start of the window the rows were selected from, shown in the header.
        generated: Unix time the report is made at (default: now).

    Returns:
        A complete, self-contained HTML document. Without rows it says there is no data.
    """
    now = time.time() if generated is None else generated
    window = f"since {_when(since)}" if since is not None else "all recorded attempts"
    header = f'<h1>tierwise report</h1>\n<p class="meta">Window: {window} · generated {_when(now)}'
    if not rows:
        body = (
            f"{header}</p>\n<p><strong>No data yet</strong>: the ledger holds no attempts "
            "in this window. Calls made through a router with a ledger (for example "
            "<code>tierwise ask</code>) appear here.</p>"
        )
        return _page(body)
    rows = sorted(rows, key=lambda r: r.time)
    spent = math.fsum(r.cost for r in rows)
    sent = sum(r.sent for r in rows)
    header += (
        f"<br/>Attempts from {_when(rows[0].time)} to {_when(rows[-1].time)}: "
        f"{len(rows)} attempts, {sent} sent to a provider, {_usd(spent)} spent.</p>"
    )
    sections = [f(rows) for f in (_summary, _spend_chart, _latency_chart, _outcome_chart,
                                  _failures)]  # fmt: skip
    return _page("\n".join((header, *sections)))


def bucket_seconds(span: float) -> int:
    """The bar width (seconds) of the spend chart for a time span: at most 48 bars.

    Example:
        >>> bucket_seconds(0), bucket_seconds(2 * 3600), bucket_seconds(7 * 86_400)
        (60, 300, 21600)
    """
    for size in _BUCKETS:
        if span / size < _MAX_BUCKETS:
            return size
    weeks = math.ceil(span / _BUCKETS[-1] / _MAX_BUCKETS)
    return weeks * _BUCKETS[-1]


# --------------------------------------------------------------------------- sections


def _summary(rows: Sequence[LedgerRow]) -> str:
    """Per model: attempts, calls sent, success rate, spend, tokens, latency."""
    by_model = _group(rows, lambda r: r.model)
    body = []
    for model, group in sorted(by_model.items()):
        calls = sum(r.sent for r in group)
        ok = sorted(r.latency for r in group if r.ok)
        tokens = f"{sum(r.input_tokens for r in group)} / {sum(r.output_tokens for r in group)}"
        body.append([
            _e(model), _e(group[-1].provider), _e(group[-1].tier), _n(len(group)), _n(calls),
            _n(_pct(len(ok), calls)), _n(_usd(math.fsum(r.cost for r in group))), _n(tokens),
            _n(f"{_ms(percentile(ok, 0.5))} / {_ms(percentile(ok, 0.95))}"),
        ])  # fmt: skip
    head = ("model", "provider", "tier", "attempts", "calls sent", "success", "spend",
            "tokens in / out", "p50 / p95 latency")  # fmt: skip
    return (
        "<section><h2>Summary per model</h2>\n<p>Success is answers per call sent; "
        "attempts also count candidates refused locally (rate limit, budget, open "
        f"circuit). Latency is of successful calls.</p>\n{_table(head, body)}</section>"
    )


def _spend_chart(rows: Sequence[LedgerRow]) -> str:
    """Stacked bars: USD per time bucket, one colour per tier."""
    size = bucket_seconds(rows[-1].time - rows[0].time)
    start = rows[0].time - rows[0].time % size
    count = int((rows[-1].time - start) // size) + 1
    spend: list[dict[str, float]] = [defaultdict(float) for _ in range(count)]
    for r in rows:
        spend[int((r.time - start) // size)][r.tier] += r.cost
    # the legend lists the tiers that spent: a free or local tier never draws a bar
    tiers = _ordered({r.tier for r in rows if r.cost > 0}, [t.value for t in Tier])
    colors = {t: _TIER_COLORS.get(t, _PALETTE[i % len(_PALETTE)]) for i, t in enumerate(tiers)}
    top = max(sum(bucket.values()) for bucket in spend)
    scale = _axis_max(top)
    left, plot_w, plot_h = 80, _WIDTH - 100, 220
    legend, legend_end = _legend([(t, colors[t]) for t in tiers], left, 16)
    y0 = legend_end + 10 + plot_h
    step = plot_w / count
    parts = [legend]
    for k in range(5):  # y grid and labels
        y = y0 - plot_h * k / 4
        parts.append(
            f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" '
            f'y2="{y:.1f}"/>{_text(left - 6, y + 4, _usd_axis(scale * k / 4, scale / 4), "end")}'
        )
    label_every = math.ceil(count / 8)
    table = []
    for i, bucket in enumerate(spend):
        x, y = left + i * step + step * 0.1, float(y0)
        when = _bucket_label(start + i * size, size)
        for tier in tiers:
            cost = bucket.get(tier, 0.0)
            if cost <= 0:
                continue
            h = plot_h * cost / scale
            y -= h
            tip = f"{when}: {tier} {_usd(cost)}"
            bucket_start = str(start + i * size)
            parts.append(_rect(x, y, step * 0.8, h, colors[tier], tip,
                               tier=tier, bucket=bucket_start, cost=repr(cost)))  # fmt: skip
            table.append([_e(when), _e(tier), _n(_usd(cost))])
        if i % label_every == 0:
            parts.append(_text(x + step * 0.4, y0 + 16, when, "middle"))
    parts.append(f'<line class="axis" x1="{left}" x2="{left + plot_w}" y1="{y0}" y2="{y0}"/>')
    if top <= 0:
        free = "no spend in this window: every attempt was free"
        parts.append(_text(left + plot_w / 2, y0 - plot_h / 2, free, "middle"))
    desc = (
        f"Stacked bars of USD spent per {_duration(size)}, one colour per tier, from "
        f"{_when(start)}; {_usd(math.fsum(r.cost for r in rows))} in all, highest bar "
        f"{_usd(top)}."
    )
    svg = _svg("spend", "Spend over time by tier", desc, y0 + 30, parts)
    head = ("bucket start (UTC)", "tier", "spend")
    return _section(f"Spend over time by tier (per {_duration(size)})", svg, head, table)


def _latency_chart(rows: Sequence[LedgerRow]) -> str:
    """Box plot per model of successful calls' latency: min, p25–p75, p50, p95, max."""
    latencies = {
        model: sorted(r.latency for r in group if r.ok)
        for model, group in sorted(_group(rows, lambda r: r.model).items())
    }
    low, high = _decades(v for values in latencies.values() for v in values)
    plot_w = _WIDTH - _LEFT - 30
    legend, top = _legend(
        [("box: p25–p75, bar: p50, ◆: p95, whiskers: min–max", "#8c959f")], _LEFT, 16
    )
    parts, table = [legend], []

    def x(seconds: float) -> float:
        # a log axis: a 2 ms local model and a 2 s paid one are both readable
        position = (math.log10(max(seconds, 10.0**low)) - low) / (high - low)
        return _LEFT + plot_w * position

    for i, (model, values) in enumerate(latencies.items()):
        y = top + i * (_BAR + 12)
        parts.append(_text(_LEFT - 8, y + _BAR * 0.7, _clip(model), "end", tip=model))
        if not values:
            parts.append(_text(_LEFT + 4, y + _BAR * 0.7, "no successful call"))
            table.append([_e(model), _n(0), *[_n("-")] * 4])
            continue
        q = {
            name: percentile(values, p) or 0.0
            for name, p in (("p25", 0.25), ("p50", 0.5), ("p75", 0.75), ("p95", 0.95))
        }
        lo, hi = values[0], values[-1]
        mid = y + _BAR / 2
        tip = (
            f"{model}: {len(values)} calls, min {_ms(lo)}, p50 {_ms(q['p50'])}, "
            f"p95 {_ms(q['p95'])}, max {_ms(hi)}"
        )
        parts.append(
            f'<g data-model="{_e(model)}" data-n="{len(values)}" data-min="{lo!r}" '
            f'data-p50="{q["p50"]!r}" data-p95="{q["p95"]!r}" data-max="{hi!r}">'
            f"<title>{_e(tip)}</title>"
            f'<line class="axis" x1="{x(lo):.1f}" x2="{x(hi):.1f}" y1="{mid}" y2="{mid}"/>'
            f'<rect x="{x(q["p25"]):.1f}" y="{y}" width="{x(q["p75"]) - x(q["p25"]):.1f}" '
            f'height="{_BAR}" fill="#a0cbe8" stroke="#4e79a7"/>'
            f'<line x1="{x(q["p50"]):.1f}" x2="{x(q["p50"]):.1f}" y1="{y}" y2="{y + _BAR}" '
            f'stroke="#1f2328" stroke-width="2"/>'
            f'<path d="{_diamond(x(q["p95"]), mid)}" fill="#e15759"/></g>'
        )
        table.append(
            [_e(model), _n(len(values)), *(_n(_ms(v)) for v in (lo, q["p50"], q["p95"], hi))]
        )
    height = top + len(latencies) * (_BAR + 12) + 10
    parts.insert(1, _log_grid(_LEFT, plot_w, top - 4, height, low, high))
    desc = (
        "Box plot per model of the latency of successful calls on a logarithmic axis from "
        f"{_seconds(10.0**low)} to {_seconds(10.0**high)}: whiskers span min to max, the box "
        "p25 to p75, a bar marks the median and a diamond the 95th percentile."
    )
    svg = _svg("latency", "Latency per model", desc, height + 30, parts)
    head = ("model", "calls", "min", "p50", "p95", "max")
    return _section("Latency per model (successful calls)", svg, head, table)


def _outcome_chart(rows: Sequence[LedgerRow]) -> str:
    """Per operation and model: a bar of attempts split by outcome; escalations; tier flow."""
    keys = _ordered({outcome_label(r) for r in rows}, [OK])
    failures = [k for k in keys if k != OK]
    colors = {k: _PALETTE[i % len(_PALETTE)] for i, k in enumerate(failures)} | {OK: _OK_COLOR}
    by_op = _group(rows, lambda r: r.operation)
    scale = _axis_max(max(Counter((r.operation, r.model) for r in rows).values()), whole=True)
    plot_w = _WIDTH - _LEFT - 30
    legend, y = _legend([(k, colors[k]) for k in keys], 10, 16)
    parts: list[str] = [legend]
    table: list[list[str]] = []
    flow: list[list[str]] = []
    tier_order = [t.value for t in Tier]
    for op, group in sorted(by_op.items()):
        escalations = sum(r.escalation for r in group)
        heading = f"{op} — {escalations} escalation attempt{'s' * (escalations != 1)}"
        parts.append(_text(10, y + 12, heading, weight="bold"))
        y += 20
        models = _group(group, lambda r: r.model)
        for model in sorted(models, key=lambda m: (_rank(models[m][-1].tier, tier_order), m)):
            attempts = models[model]
            parts.append(_text(_LEFT - 8, y + _BAR * 0.7, _clip(model), "end", tip=model))
            x = float(_LEFT)
            counts = Counter(outcome_label(r) for r in attempts)
            for key in keys:
                if not counts[key]:
                    continue
                w = plot_w * counts[key] / scale
                tip = f"{op} · {model}: {counts[key]} × {key}"
                parts.append(_rect(x, y, w, _BAR, colors[key], tip, operation=op, model=model,
                                   outcome=key, count=str(counts[key])))  # fmt: skip
                table.append([_e(op), _e(model), _e(key), _n(counts[key])])
                x += w
            y += _BAR + 6
        for tier in _ordered({r.tier for r in group}, tier_order):
            at = [r for r in group if r.tier == tier]
            numbers = (len(at), sum(r.ok for r in at), sum(r.sent and not r.ok for r in at),
                       sum(not r.sent for r in at), sum(r.escalation for r in at))  # fmt: skip
            flow.append([_e(op), _e(tier), *(_n(n) for n in numbers)])
        y += 8
    parts.append(_x_axis(_LEFT, plot_w, y, scale, lambda v: f"{v:g}"))
    desc = (
        "Per operation, one horizontal bar per model: its attempts split by outcome "
        '(ok, or the failure kind; "not sent" when refused locally). Failed attempts '
        "are where the router fell back to the next candidate."
    )
    svg = _svg("outcomes", "Outcomes and fallbacks per operation", desc, y + 30, parts)
    flow_head = ("operation", "tier", "attempts", "answered", "failed", "not sent",
                 "escalation attempts")  # fmt: skip
    tiers = (
        "<h3>Where attempts went, per tier</h3>\n<p>Per operation and tier: attempts, "
        "answers, calls that failed (the router then repaired or moved on), candidates "
        "refused before sending, and attempts made because the graph escalated to a "
        f"higher tier.</p>\n{_table(flow_head, flow)}"
    )
    head = ("operation", "model", "outcome", "attempts")
    return _section("Fallbacks and escalations per operation", svg, head, table, extra=tiers)


def _failures(rows: Sequence[LedgerRow]) -> str:
    """Failed attempts per failure kind and model, each with one real example."""
    groups = failure_groups(rows)
    if not groups:
        return "<section><h2>Failures</h2>\n<p>No failed attempt in this window.</p></section>"
    body = []
    for g in groups[:_MAX_FAILURE_ROWS]:
        others, plural = g.attempts - g.example_count, "s" * (g.forms > 2)
        note = (f" <small>({g.forms - 1} other message{plural} in {others} "
                "attempts)</small>" if g.forms > 1 else "")  # fmt: skip
        body.append([
            _e(g.outcome), _e(g.model), _e(g.tier), _n(g.attempts), _n(_when(g.last_seen)),
            f'<span class="detail">{_e(g.example) or "-"}</span>{note}',
        ])  # fmt: skip
    more = len(groups) - len(body)
    note = f"<p>…and {more} less frequent groups.</p>" if more > 0 else ""
    head = ("failure", "model", "tier", "attempts", "last seen", "example detail")
    return (
        "<section><h2>Failures</h2>\n<p>Failed attempts per failure kind and model. Details "
        "differing only in numbers, ids and durations (a countdown, a request id) count as "
        "one message; the example is its latest occurrence.</p>\n"
        f'<div id="failures">{_table(head, body)}</div>{note}</section>'
    )


# --------------------------------------------------------------------------- svg helpers


def _svg(chart_id: str, title: str, desc: str, height: float, parts: Iterable[str]) -> str:
    """An accessible inline ``<svg>`` with a title and a description."""
    return (
        f'<svg class="chart" id="chart-{chart_id}" role="img" viewBox="0 0 {_WIDTH} '
        f'{height:.0f}" width="{_WIDTH}" height="{height:.0f}" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc">'
        f'<title id="{chart_id}-title">{_e(title)}</title>'
        f'<desc id="{chart_id}-desc">{_e(desc)}</desc>\n' + "\n".join(parts) + "\n</svg>"
    )


def _rect(x: float, y: float, w: float, h: float, fill: str, tip: str, **data: str) -> str:
    """A bar with a native tooltip and its numbers as ``data-*`` attributes."""
    attrs = "".join(f' data-{name}="{_e(value)}"' for name, value in data.items())
    return (
        f'<rect x="{x:.2f}" y="{y:.2f}" width="{max(w, 0.5):.2f}" height="{h:.2f}" '
        f'fill="{fill}"{attrs}><title>{_e(tip)}</title></rect>'
    )


def _text(
    x: float, y: float, text: str, anchor: str = "start", *, tip: str = "", weight: str = ""
) -> str:
    """An SVG label; ``tip`` adds a tooltip (the full text of a clipped label)."""
    style = f' font-weight="{weight}"' if weight else ""
    title = f"<title>{_e(tip)}</title>" if tip else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{style}>{title}{_e(text)}</text>'


def _legend(items: Sequence[tuple[str, str]], x: float, y: float) -> tuple[str, float]:
    """Colour swatches with labels from (x, y), wrapped; the SVG and the y below it."""
    parts, left = [], x
    for label, color in items:
        width = 28 + 7 * len(label)
        if x > left and x + width > _WIDTH:
            x, y = left, y + 18
        parts.append(
            f'<rect x="{x:.1f}" y="{y - 10:.1f}" width="12" height="12" '
            f'fill="{color}"/>{_text(x + 16, y, label)}'
        )
        x += width
    return '<g class="legend">' + "".join(parts) + "</g>", y + 12


def _x_axis(left: float, width: float, y: float, scale: float, fmt: _Formatter) -> str:
    """A horizontal axis with five ticks from 0 to ``scale``."""
    parts = [f'<line class="axis" x1="{left}" x2="{left + width}" y1="{y:.1f}" y2="{y:.1f}"/>']
    for k in range(5):
        x = left + width * k / 4
        parts.append(
            f'<line class="axis" x1="{x:.1f}" x2="{x:.1f}" y1="{y:.1f}" '
            f'y2="{y + 4:.1f}"/>{_text(x, y + 17, fmt(scale * k / 4), "middle")}'
        )
    return "".join(parts)


def _log_grid(left: float, width: float, top: float, y: float, low: int, high: int) -> str:
    """A log axis at ``y`` from 10**low to 10**high s: decades labelled, 2 and 5 gridded."""
    parts = [f'<line class="axis" x1="{left}" x2="{left + width}" y1="{y:.1f}" y2="{y:.1f}"/>']
    for power in range(low, high + 1):
        for mult in (1, 2, 5):
            if power == high and mult > 1:
                break
            x = left + width * (power + math.log10(mult) - low) / (high - low)
            parts.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top:.1f}" '
                         f'y2="{y:.1f}"/>')  # fmt: skip
            if mult == 1:
                parts.append(_text(x, y + 17, _seconds(mult * 10.0**power), "middle"))
    return '<g class="log-axis">' + "".join(parts) + "</g>"


def _decades(values: Iterable[float]) -> tuple[int, int]:
    """The powers of ten (seconds) a log axis spans to hold ``values``: at least one decade.

    Example:
        >>> _decades([0.0021, 1.7]), _decades([0.05]), _decades([])
        ((-3, 1), (-2, -1), (-3, 0))
    """
    found = [v for v in values if v > 0]
    if not found:
        return -3, 0
    low = math.floor(math.log10(max(min(found), 1e-4)))
    high = max(low + 1, math.ceil(math.log10(max(found)) - 1e-12))
    return low, high


def _diamond(x: float, y: float, r: float = 5.0) -> str:
    """Path data of a diamond centred on (x, y)."""
    return f"M{x:.1f} {y - r:.1f}L{x + r:.1f} {y:.1f}L{x:.1f} {y + r:.1f}L{x - r:.1f} {y:.1f}Z"


# --------------------------------------------------------------------------- html helpers


def _page(body: str) -> str:
    """The whole document around ``body``."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8"/>\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1"/>\n'
        f"<title>tierwise report</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n<main>\n"
        f"{body}\n</main>\n</body>\n</html>\n"
    )


def _section(
    title: str, svg: str, head: Sequence[str], body: list[list[str]], *, extra: str = ""
) -> str:
    """A chart with its heading and its data table folded in a ``<details>``; then ``extra``."""
    return (
        f"<section><h2>{_e(title)}</h2>\n{svg}\n<details><summary>Data table</summary>\n"
        f"{_table(head, body)}</details>\n{extra}</section>"
    )


def _table(head: Sequence[str], body: Iterable[Sequence[str]]) -> str:
    """A table; ``head`` is plain text, cells are escaped HTML (or a whole ``<td>``)."""
    cols = "".join(f"<th>{_e(h)}</th>" for h in head)
    rows = "".join(
        "<tr>" + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in row) + "</tr>\n"
        for row in body
    )
    return f"<table>\n<thead><tr>{cols}</tr></thead>\n<tbody>\n{rows}</tbody>\n</table>\n"


# --------------------------------------------------------------------------- small helpers


def _e(text: object) -> str:
    """HTML-escaped text (quotes too: safe in attributes)."""
    return html.escape(str(text), quote=True)


def _n(value: object) -> str:
    """A right-aligned numeric cell."""
    return f'<td class="n">{_e(value)}</td>'


def _group(
    rows: Iterable[LedgerRow], key: Callable[[LedgerRow], str]
) -> dict[str, list[LedgerRow]]:
    """Rows grouped by ``key``, each group in the rows' order."""
    groups: dict[str, list[LedgerRow]] = defaultdict(list)
    for r in rows:
        groups[key(r)].append(r)
    return groups


def _ordered(values: set[str], known: Sequence[str]) -> list[str]:
    """``values`` in the order of ``known``, then the others alphabetically."""
    return [v for v in known if v in values] + sorted(values - set(known))


def _rank(value: str, known: Sequence[str]) -> int:
    """Position of ``value`` in ``known``; unknown values last."""
    return known.index(value) if value in known else len(known)


def _axis_max(value: float, *, whole: bool = False) -> float:
    """Top of an axis with four ticks of 1, 2 or 5 × 10ⁿ that reaches ``value``.

    ``whole``: ticks are whole numbers (counts). An axis for nothing goes up to 4 (or 1).

    Example:
        >>> _axis_max(0.0037), _axis_max(32, whole=True), _axis_max(3, whole=True)
        (0.004, 40.0, 4.0)
    """
    if value <= 0:
        return 4.0 if whole else 1.0
    step = value / 4
    power = 10.0 ** math.floor(math.log10(step))
    nice = next(m * power for m in (1, 2, 5, 10) if m * power >= step * (1 - 1e-12))
    return 4 * (float(max(1, math.ceil(nice))) if whole else nice)


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _bucket_label(t: float, size: int) -> str:
    fmt = "%Y-%m-%d" if size >= 86_400 else "%m-%d %H:%M"
    return datetime.fromtimestamp(t, UTC).strftime(fmt)


def _duration(seconds: int) -> str:
    for unit, name in ((7 * 86_400, "week"), (86_400, "day"), (3600, "hour"), (60, "minute")):
        if seconds % unit == 0:
            n = seconds // unit
            return name if n == 1 else f"{n} {name}s"
    return f"{seconds} s"


def _usd(value: float) -> str:
    return f"${value:.6f}"


def _usd_axis(value: float, step: float) -> str:
    """``value`` in dollars with as many decimals as the tick ``step`` needs (at least 2)."""
    decimals = max(2, math.ceil(-math.log10(step) - 1e-9))
    return f"${value:.{decimals}f}"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def _seconds(value: float) -> str:
    """A tick label: ``0.1 ms``, ``10 ms``, ``1 s``."""
    return f"{value:g} s" if value >= 1 else f"{value * 1000:g} ms"


def _pct(part: int, whole: int) -> str:
    return f"{part / whole:.0%}" if whole else "-"


def _clip(text: str, limit: int = 28) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"

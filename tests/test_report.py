"""`tierwise report`: a self-contained HTML page whose charts are the ledger's numbers.

The last tests open the page of a busier ledger in real headless Chromium (Debian's
``chromium``, driven by Playwright's Python package; ``.ci/run`` installs both) and check
what a reader sees: no console error, every chart drawn with a non-empty box, every
table's numbers equal to the ledger's; the screenshot is kept in the test's tmp folder.

The ledger is filled by a real :class:`ModelRouter` against the provider simulator, with
scripted failures (a 502 whose message carries ``<script>``, a 429, a 503 on the paid
model) so the page has fallbacks, locally refused candidates, an escalation and spend;
copies of those rows moved back in time give the spend chart several buckets, and one
copy older than the window checks ``--since``. The page is parsed as XML (it is written
well-formed) and with :mod:`html.parser`, and every chart's ``data-*`` numbers are
compared with the rows read back from the ledger.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
import time
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from tierwise.catalog.policy import Policy
from tierwise.catalog.specs import Catalog, TaskType
from tierwise.cli.app import app
from tierwise.insights.failures import failure_groups, normalise_detail, outcome_label
from tierwise.insights.report import bucket_seconds, render_report
from tierwise.ledger import Ledger, LedgerRow, percentile
from tierwise.routing.results import NoModelAvailable
from tierwise.routing.router import ModelRouter
from tierwise.routing.snapshot import Snapshot
from tierwise.testing import Fault, Reply, Simulator, isolated_environment

EVIL = "rep-free<script>alert('model')</script>"
DETAIL = "<script>alert(document.cookie)</script>"
MODELS = {
    "rep-paid": {
        "provider": "openrouter", "model": "rep/paid", "tier": "paid",
        "price": {"input_per_mtok": 2.5, "output_per_mtok": 10.0},
    },
    EVIL: {"provider": "groq", "model": "rep-groq-free", "tier": "free"},
    "rep-free-b": {"provider": "gemini", "model": "rep-gemini-free", "tier": "free"},
    "rep-local": {"provider": "ollama", "model": "rep-local:1b", "tier": "local"},
}  # fmt: skip
CHAIN = {"local": ["rep-local"], "free": [EVIL, "rep-free-b"], "paid": ["rep-paid"]}
DAY = 86_400.0


def fill_ledger(sim: Simulator, path: Path) -> list[LedgerRow]:
    """Route real calls into the ledger at ``path``; every row, as stored."""
    catalog = Catalog.from_mapping({
        "models": {key: {"context_window": 131072, **fields} for key, fields in MODELS.items()},
        "chains": {op.value: CHAIN for op in TaskType},
    })  # fmt: skip
    settings = sim.settings(dataclasses.replace(sim.settings(), catalog=catalog))
    sim.script(catalog.spec(EVIL), Fault.http_error(502, DETAIL), Fault.rate_limited())
    sim.script(catalog.spec("rep-paid"), Fault.server_error(503), times=1)

    def router(mode: str, ledger: Ledger) -> ModelRouter:
        return ModelRouter(settings, policy=Policy(mode=mode), ledger=ledger,
                           snapshot=Snapshot.everything(catalog))  # fmt: skip

    with Ledger(path) as ledger:
        free, paid = router("free_first", ledger), router("quality_first", ledger)
        local = router("local_only", ledger)
        for _ in range(4):  # 502 (the <script> detail), 429, then refused locally: rpm
            assert free.invoke("rewriting", "Tidy this up.").model == "rep-free-b"
        answers = [paid.invoke("classification", "Label it.").model for _ in range(3)]
        assert answers[0] != "rep-paid" and answers[1:] == ["rep-paid", "rep-paid"]  # 503 first
        assert local.invoke("rewriting", "Once more.").model == "rep-local"
        escalated = free.invoke("quality_scoring", "Score it.", min_tier="free")
        assert escalated.model == "rep-free-b"
        now = time.time()
        recent = ledger.rows()
        for days in (1.0, 2.5):  # the same traffic, earlier: several bars in the spend chart
            for row in recent:
                ledger.record(dataclasses.replace(row, time=row.time - days * DAY))
        ledger.record(dataclasses.replace(recent[-1], time=now - 30 * DAY))  # outside 7d
        assert ledger.flush()
        return ledger.rows()


@pytest.fixture
def report(simulator: Simulator, tmp_path: Path) -> tuple[list[LedgerRow], str, Result]:
    """(rows inside the 7-day window, the page, the CLI result)."""
    ledger_path = tmp_path / "ledger.sqlite3"
    rows = fill_ledger(simulator, ledger_path)
    out = tmp_path / "report.html"
    result = invoke("report", "--out", str(out), "--since", "7d", "--ledger", str(ledger_path))
    assert result.exit_code == 0, result.output
    window = [r for r in rows if r.time >= time.time() - 7 * DAY]
    assert 0 < len(window) == len(rows) - 1
    return window, out.read_text(encoding="utf-8"), result


def invoke(*args: str) -> Result:
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def charts(page: str) -> dict[str, ET.Element]:
    """The page's <svg> elements by id (the whole page parses as XML)."""
    root = ET.fromstring(page)
    return {svg.attrib["id"]: svg for svg in root.iter("svg")}


class TagBalance(HTMLParser):
    """Every element the HTML parser sees is closed, in order."""

    VOID = frozenset({"meta", "br", "hr", "img", "input", "link"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: Counter[str] = Counter()
        self.attrs: list[tuple[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        self.attrs += attrs
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        self.attrs += attrs

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_html(page: str) -> TagBalance:
    parser = TagBalance()
    parser.feed(page)
    parser.close()
    assert parser.stack == []
    return parser


# --------------------------------------------------------------------------- the charts


def test_the_page_is_well_formed_with_three_accessible_charts(report) -> None:
    rows, page, result = report
    parsed = parse_html(page)
    assert parsed.tags["svg"] == 3 and parsed.tags["script"] == 0
    found = charts(page)
    assert set(found) == {"chart-spend", "chart-latency", "chart-outcomes"}
    for svg in found.values():
        title, desc = svg.find("title"), svg.find("desc")
        assert title is not None and title.text and desc is not None and desc.text
        assert svg.attrib["role"] == "img"
        assert svg.attrib["aria-labelledby"] == f"{title.attrib['id']} {desc.attrib['id']}"
    root = ET.fromstring(page)
    sections = [s for s in root.iter("section") if s.find("svg") is not None]
    assert len(sections) == 3
    for section in sections:  # every chart has its numbers as a table too
        details = section.find("details")
        assert details is not None and details.find("table/tbody/tr") is not None
    assert f"{len(rows)} attempts" in result.stdout and "report.html" in result.stdout
    assert "Window: since" in page and "Summary per model" in page


def test_spend_bars_add_up_to_the_ledgers_costs_per_tier_and_bucket(report) -> None:
    rows, page, _ = report
    bars = [bar for bar in charts(page)["chart-spend"].iter("rect") if "data-cost" in bar.attrib]
    assert sum(float(b.attrib["data-cost"]) for b in bars) == pytest.approx(
        math.fsum(r.cost for r in rows), rel=1e-12)  # fmt: skip
    assert math.fsum(r.cost for r in rows) > 0

    size = bucket_seconds(rows[-1].time - rows[0].time)
    expected: defaultdict[tuple[float, str], float] = defaultdict(float)
    for row in rows:
        if row.cost:
            expected[(row.time - row.time % size, row.tier)] += row.cost
    drawn = {(float(b.attrib["data-bucket"]), b.attrib["data-tier"]): float(b.attrib["data-cost"])
             for b in bars}  # fmt: skip
    assert drawn.keys() == expected.keys() and len({k[0] for k in drawn}) >= 3
    for key, cost in expected.items():
        assert drawn[key] == pytest.approx(cost, rel=1e-12)


def test_latency_boxes_are_the_percentiles_of_successful_calls(report) -> None:
    rows, page, _ = report
    boxes = {g.attrib["data-model"]: g for g in charts(page)["chart-latency"].iter("g")
             if "data-model" in g.attrib}  # fmt: skip
    by_model: defaultdict[str, list[float]] = defaultdict(list)
    for row in rows:
        if row.ok:
            by_model[row.model].append(row.latency)
    assert set(boxes) == set(by_model) >= {"rep-paid", "rep-free-b", "rep-local"}
    for model, values in by_model.items():
        values.sort()
        box = boxes[model].attrib
        assert int(box["data-n"]) == len(values)
        assert float(box["data-min"]) == values[0] and float(box["data-max"]) == values[-1]
        assert float(box["data-p50"]) == pytest.approx(percentile(values, 0.5))
        assert float(box["data-p95"]) == pytest.approx(percentile(values, 0.95))


def test_outcome_bars_count_every_attempt_by_operation_model_and_outcome(report) -> None:
    rows, page, _ = report
    svg = charts(page)["chart-outcomes"]
    drawn = Counter({
        (b.attrib["data-operation"], b.attrib["data-model"], b.attrib["data-outcome"]):
            int(b.attrib["data-count"])
        for b in svg.iter("rect") if "data-count" in b.attrib
    })  # fmt: skip
    expected = Counter(
        (r.operation, r.model, r.outcome if r.sent else f"{r.outcome} (not sent)") for r in rows
    )
    assert drawn == expected
    assert expected[("rewriting", EVIL, "unavailable")] == 3  # the 502, at three times
    assert expected[("rewriting", EVIL, "rate_limited (not sent)")] > 0
    assert expected[("classification", "rep-paid", "unavailable")] == 3
    headings = [t.text or "" for t in svg.iter("text") if t.attrib.get("font-weight") == "bold"]
    escalations = sum(r.escalation for r in rows if r.operation == "quality_scoring")
    assert escalations > 0
    assert f"quality_scoring — {escalations} escalation attempts" in headings
    assert "rewriting — 0 escalation attempts" in headings


# --------------------------------------------------------------------------- safety


def test_ledger_strings_are_escaped(report) -> None:
    rows, page, _ = report
    assert any(DETAIL in r.detail for r in rows) and any(r.model == EVIL for r in rows)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(document.cookie)&lt;/script&gt;" in page
    text = "".join(parse_html(page).text)  # the parser unescapes: shown as written
    assert DETAIL in text and EVIL in text


def test_the_page_loads_nothing_from_elsewhere(report) -> None:
    _, page, _ = report
    attrs = parse_html(page).attrs
    assert not [name for name, _ in attrs if name in {"src", "href", "xlink:href", "srcset"}]
    lowered = page.lower()
    for needle in ("http://", "https://", "//cdn", "url(", "@import", "<link", "<img",
                   "<iframe", "<object", "<embed"):  # fmt: skip
        assert needle not in lowered, needle


# --------------------------------------------------------------------------- edges


def test_an_empty_ledger_writes_a_no_data_page(tmp_path: Path) -> None:
    ledger_path = tmp_path / "ledger.sqlite3"
    Ledger(ledger_path).close()
    out = tmp_path / "empty.html"

    result = invoke("report", "--out", str(out), "--ledger", str(ledger_path))

    assert result.exit_code == 0, result.output
    assert "wrote" in result.stdout and "empty.html" in result.stdout
    page = out.read_text(encoding="utf-8")
    assert "No data yet" in page and parse_html(page).tags["svg"] == 0
    ET.fromstring(page)


def test_an_unwritable_out_path_is_one_error_line(tmp_path: Path) -> None:
    ledger_path = tmp_path / "ledger.sqlite3"
    Ledger(ledger_path).close()
    for out in (tmp_path / "no-such-dir" / "r.html", tmp_path):  # missing dir; a directory
        result = invoke("report", "--out", str(out), "--ledger", str(ledger_path))
        assert result.exit_code != 0
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "cannot write the report" in errors[0], result.stderr
        assert "Traceback" not in result.output


def test_a_missing_ledger_or_bad_window_fails_clearly(tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    result = invoke("report", "--out", str(out), "--ledger", str(tmp_path / "none.sqlite3"))
    assert result.exit_code != 0 and "no ledger" in result.stderr
    Ledger(tmp_path / "l.sqlite3").close()
    result = invoke("report", "--out", str(out), "--ledger", str(tmp_path / "l.sqlite3"),
                    "--since", "last week")  # fmt: skip
    assert result.exit_code != 0 and "invalid --since" in result.stderr
    assert not out.exists()


def test_render_report_alone_handles_rows_the_catalog_does_not_know() -> None:
    row = LedgerRow(
        time=1_700_000_000.0, run_id=None, thread_id=None, node=None, operation="custom_op",
        complexity="simple", policy="balanced", provider="elsewhere", model='m"odel&<b>',
        tier="premium", outcome="ok", sent=True, latency=0.25, time_to_first_token=None,
        input_tokens=3, output_tokens=4, cost=0.5, escalation=False, repair=False, detail="",
    )  # fmt: skip
    page = render_report([row], since=1_699_990_000.0, generated=1_700_000_100.0)
    found = charts(page)
    (bar,) = [b for b in found["chart-spend"].iter("rect") if "data-cost" in b.attrib]
    assert (bar.attrib["data-tier"], float(bar.attrib["data-cost"])) == ("premium", 0.5)
    assert "m&quot;odel&amp;&lt;b&gt;" in page and "2023-11-14 22:13:20 UTC" in page


# --------------------------------------------------------------------------- in a browser

BUSY_MODELS = {
    "busy-local": {"provider": "ollama", "model": "busy-local:1b", "tier": "local"},
    "busy-groq": {"provider": "groq", "model": "busy-groq-free", "tier": "free",
                  "limits": {"rpm": 4}},
    "busy-gemini": {"provider": "gemini", "model": "busy-gemini-free", "tier": "free"},
    "busy-paid": {"provider": "openrouter", "model": "busy/paid", "tier": "paid",
                  "price": {"input_per_mtok": 3.0, "output_per_mtok": 15.0}},
}  # fmt: skip
BUSY_CHAIN = {"local": ["busy-local"], "free": ["busy-groq", "busy-gemini"], "paid": ["busy-paid"]}
#: What ``.ci/run`` and the issue's recipe start Chromium with (plus a fresh profile).
CHROMIUM_FLAGS = ("--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--disable-quic")  # fmt: skip
WIDTH = 1400


def busy_ledger(sim: Simulator, path: Path) -> list[LedgerRow]:
    """A ledger as a week of real use leaves it: faults, local limits, three tiers, days.

    Real routers call the simulator: a local model that crashes twice, a free model whose
    own RPM limit (4) refuses most calls locally with a countdown, a free model answering
    502s with request ids and a timeout, a slow paid model with two 503s first; a call the
    graph escalated; then the same traffic copied one and two and a half days back.
    """
    catalog = Catalog.from_mapping({
        "models": {k: {"context_window": 131072, **f} for k, f in BUSY_MODELS.items()},
        "chains": {op.value: BUSY_CHAIN for op in TaskType},
    })  # fmt: skip
    settings = sim.settings(dataclasses.replace(sim.settings(), catalog=catalog), timeout=0.4)
    spec = catalog.spec
    sim.script(spec("busy-paid"), Reply.default(), first_byte=0.15)  # newer rules win
    sim.script(spec("busy-local"), Fault.http_error(500, "model runner crashed"), times=2)
    sim.script(spec("busy-gemini"), *[
        Fault.http_error(502, f"upstream req_{i:08x}9f failed after {1.5 + i / 7:.2f}s")
        for i in range(3)
    ])  # fmt: skip
    sim.script(spec("busy-gemini"), Fault.timeout(1.0), times=1)
    sim.script(spec("busy-paid"), Fault.server_error(503), times=2)
    operations = ["rewriting", "classification", "quality_scoring"]
    with Ledger(path) as ledger:

        def router(mode: str) -> ModelRouter:
            return ModelRouter(settings, policy=Policy(mode=mode), ledger=ledger,
                               snapshot=Snapshot.everything(catalog))  # fmt: skip

        local, free, paid = router("local_only"), router("free_first"), router("quality_first")
        for routed, calls, min_tier in ((local, 4, None), (free, 12, None), (paid, 5, None),
                                        (free, 2, "free")):  # fmt: skip
            for i in range(calls):
                with contextlib.suppress(NoModelAvailable):  # the local model crashed
                    routed.invoke(operations[i % 3], f"Call {i}.", min_tier=min_tier)
        assert ledger.flush()
        recent = ledger.rows()
        for days in (1.0, 2.5):
            for row in recent:
                ledger.record(dataclasses.replace(row, time=row.time - days * DAY))
        assert ledger.flush()
        return ledger.rows()


def chromium() -> str:
    """Debian's Chromium, or skip saying how to get it."""
    for name in ("chromium", "chromium-browser"):
        if found := shutil.which(name):
            return found
    pytest.skip("no chromium on PATH: `apt-get install -y chromium` (.ci/run does)")


#: Run in the page: every chart's box, its marks and labels, and whether they fit in it.
CHART_BOXES = """() => [...document.querySelectorAll("svg.chart")].map(svg => {
  const box = svg.getBoundingClientRect();
  const inside = b => b.left >= box.left - 1 && b.right <= box.right + 1
                      && b.top >= box.top - 1 && b.bottom <= box.bottom + 1;
  const marks = [...svg.querySelectorAll("rect[data-cost], rect[data-count], g[data-model]")]
    .map(m => m.getBoundingClientRect());
  const labels = [...svg.querySelectorAll("text")].map(t => t.getBoundingClientRect());
  return {id: svg.id, width: box.width, height: box.height, marks: marks.length,
          empty: marks.filter(b => !(b.width > 0 && b.height > 0)).length,
          outside: [...marks, ...labels].filter(b => !inside(b)).length};
})"""
#: Run in the page: every table's header and cells as the reader sees them.
TABLES = """() => [...document.querySelectorAll("table")].map(t => ({
  head: [...t.querySelectorAll("thead th")].map(c => c.textContent.trim()),
  rows: [...t.querySelectorAll("tbody tr")].map(
    r => [...r.querySelectorAll("td")].map(c => c.textContent.trim())),
}))"""


@dataclasses.dataclass
class Rendered:
    """What Chromium made of the page."""

    rows: list[LedgerRow]
    problems: list[str]
    charts: list[dict[str, Any]]
    tables: dict[tuple[str, ...], list[list[str]]]
    page_width: int
    screenshot: Path


@pytest.fixture(scope="module")
def rendered(simulator_server: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    """The busy ledger's report opened in headless Chromium at 1400 px, screenshot taken.

    Module-scoped (one ledger, one browser for the tests reading it), so it isolates the
    environment and resets the session's simulator itself.
    """
    browser = chromium()
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright's Python package drives Chromium: "
        "pip install -e '.[test]'")  # fmt: skip
    tmp_path = tmp_path_factory.mktemp("browser")
    with isolated_environment():
        simulator_server.reset()
        try:
            rows = busy_ledger(simulator_server, tmp_path / "busy.sqlite3")
        finally:
            simulator_server.reset()
    out, screenshot = tmp_path / "report.html", tmp_path / "report.png"
    result = invoke("report", "--out", str(out), "--ledger", str(tmp_path / "busy.sqlite3"))
    assert result.exit_code == 0, result.output
    problems: list[str] = []
    with sync_api.sync_playwright() as driver:
        context = driver.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=browser, headless=True,
            args=list(CHROMIUM_FLAGS), viewport={"width": WIDTH, "height": 900},
        )  # fmt: skip
        try:
            page = context.new_page()
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "assert") else None)  # fmt: skip
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("request", lambda r: problems.append(f"fetched {r.url}")
                    if r.url != out.as_uri() else None)  # fmt: skip
            page.goto(out.as_uri(), wait_until="load")
            charts_drawn = page.evaluate(CHART_BOXES)
            tables = {tuple(t["head"]): t["rows"] for t in page.evaluate(TABLES)}
            width = page.evaluate("document.documentElement.scrollWidth")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            context.close()
    print(f"screenshot: {screenshot}")
    return Rendered(rows, problems, charts_drawn, tables, width, screenshot)


def test_chromium_shows_the_page_without_errors_and_every_chart_drawn(
    rendered: Rendered, record_property: Any
) -> None:
    record_property("screenshot", str(rendered.screenshot))  # in the JUnit XML, to look at
    assert rendered.problems == []
    assert rendered.screenshot.stat().st_size > 10_000
    assert rendered.page_width <= WIDTH  # nothing wider than the window
    rows = rendered.rows
    size = bucket_seconds(rows[-1].time - rows[0].time)
    marks = {
        "chart-spend": len({(r.time - r.time % size, r.tier) for r in rows if r.cost > 0}),
        "chart-latency": len({r.model for r in rows if r.ok}),
        "chart-outcomes": len({(r.operation, r.model, outcome_label(r)) for r in rows}),
    }
    assert {c["id"]: c["marks"] for c in rendered.charts} == marks
    for chart in rendered.charts:
        assert chart["width"] > 100 and chart["height"] > 50, chart
        assert chart["empty"] == 0 and chart["outside"] == 0, chart


def test_chromium_shows_tables_whose_numbers_are_the_ledgers(rendered) -> None:
    rows, tables = rendered.rows, rendered.tables
    usd, ms = "${:.6f}".format, lambda s: "-" if s is None else f"{s * 1000:.0f} ms"
    by_model = defaultdict(list)
    for r in rows:
        by_model[r.model].append(r)

    def latencies(group: list[LedgerRow]) -> list[float]:
        return sorted(r.latency for r in group if r.ok)

    summary = tables[("model", "provider", "tier", "attempts", "calls sent", "success",
                      "spend", "tokens in / out", "p50 / p95 latency")]  # fmt: skip
    assert summary == [[
        model, g[-1].provider, g[-1].tier, str(len(g)), str(sum(r.sent for r in g)),
        f"{len(latencies(g)) / sum(r.sent for r in g):.0%}", usd(math.fsum(r.cost for r in g)),
        f"{sum(r.input_tokens for r in g)} / {sum(r.output_tokens for r in g)}",
        f"{ms(percentile(latencies(g), 0.5))} / {ms(percentile(latencies(g), 0.95))}",
    ] for model, g in sorted(by_model.items())]  # fmt: skip

    size = bucket_seconds(rows[-1].time - rows[0].time)
    spend: defaultdict[tuple[float, str], float] = defaultdict(float)
    for r in rows:
        if r.cost > 0:
            spend[(r.time - r.time % size, r.tier)] += r.cost
    label = "%m-%d %H:%M" if size < DAY else "%Y-%m-%d"
    assert sorted(tables[("bucket start (UTC)", "tier", "spend")]) == sorted(
        [datetime.fromtimestamp(t, UTC).strftime(label), tier, usd(c)]
        for (t, tier), c in spend.items()
    )  # fmt: skip
    assert {tier for _, tier in spend} == {"paid"}  # free and local tiers never spend

    assert tables[("model", "calls", "min", "p50", "p95", "max")] == [
        [m, str(len(v)), ms(v[0]), ms(percentile(v, 0.5)), ms(percentile(v, 0.95)), ms(v[-1])]
        if (v := latencies(g)) else [m, "0", "-", "-", "-", "-"]  # it only failed
        for m, g in sorted(by_model.items())
    ]  # fmt: skip

    outcomes = tables[("operation", "model", "outcome", "attempts")]
    assert Counter({tuple(row[:3]): int(row[3]) for row in outcomes}) == Counter(
        (r.operation, r.model, outcome_label(r)) for r in rows)  # fmt: skip

    flow = tables[("operation", "tier", "attempts", "answered", "failed", "not sent",
                   "escalation attempts")]  # fmt: skip
    expected_flow = defaultdict(lambda: [0] * 5)
    for r in rows:
        counts = expected_flow[(r.operation, r.tier)]
        for i, hit in enumerate((True, r.ok, r.sent and not r.ok, not r.sent, r.escalation)):
            counts[i] += bool(hit)
    assert {(o, t): [int(n) for n in ns] for o, t, *ns in flow} == dict(expected_flow)
    assert sum(r.escalation for r in rows) > 0

    failures = tables[("failure", "model", "tier", "attempts", "last seen", "example detail")]
    groups = defaultdict(list)
    for r in rows:
        if not r.ok:
            groups[(outcome_label(r), r.model)].append(r)
    assert len(failures) == len(groups) == 5  # one row per kind and model, not per countdown
    for kind, model, tier, attempts, last_seen, example in failures:
        group = groups[(kind, model)]
        assert (tier, int(attempts)) == (group[-1].tier, len(group))
        assert last_seen == datetime.fromtimestamp(max(r.time for r in group), UTC).strftime(
            "%Y-%m-%d %H:%M:%S UTC")  # fmt: skip
        assert any(example.startswith(r.detail) for r in group), example
    assert [int(row[3]) for row in failures] == sorted((len(g) for g in groups.values()),
                                                       reverse=True)  # fmt: skip
    refused = groups[("rate_limited (not sent)", "busy-groq")]
    assert len({r.detail for r in refused}) > 1  # the countdowns differ: one row all the same


def test_failures_fold_countdowns_and_ids_into_one_group_per_kind_and_model() -> None:
    def row(t: float, detail: str, *, model: str = "m", outcome: str = "rate_limited",
            sent: bool = False) -> LedgerRow:  # fmt: skip
        return LedgerRow(
            time=t, run_id=None, thread_id=None, node=None, operation="rewriting",
            complexity="simple", policy="balanced", provider="groq", model=model, tier="free",
            outcome=outcome, sent=sent, latency=0.0, time_to_first_token=None, input_tokens=0,
            output_tokens=0, cost=0.0, escalation=False, repair=False, detail=detail,
        )  # fmt: skip

    rows = [row(float(i), f"local rpm limit: next permit in {59.9 - i:.2f}s") for i in range(7)]
    rows += [row(10.0, "quota for today used up"),
             row(11.0, "upstream req_7f3a91bc failed after 1.64s", outcome="unavailable",
                 sent=True),
             row(12.0, "upstream req_0b2c44de failed after 2.01s", outcome="unavailable",
                 sent=True),
             row(13.0, "", model="other", outcome="ok", sent=True)]  # fmt: skip

    limited, unavailable = failure_groups(rows)

    assert (limited.outcome, limited.model, limited.attempts) == ("rate_limited (not sent)", "m", 8)
    assert limited.example == "local rpm limit: next permit in 53.90s"  # the latest of its form
    assert (limited.example_count, limited.forms, limited.last_seen) == (7, 2, 10.0)
    assert (unavailable.outcome, unavailable.attempts, unavailable.forms) == ("unavailable", 2, 1)
    assert unavailable.example == "upstream req_0b2c44de failed after 2.01s"
    assert normalise_detail(unavailable.example) == "upstream <id> failed after <duration>"

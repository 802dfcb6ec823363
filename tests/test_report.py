"""`tierwise report`: a self-contained HTML page whose charts are the ledger's numbers.

The ledger is filled by a real :class:`ModelRouter` against the provider simulator, with
scripted failures (a 502 whose message carries ``<script>``, a 429, a 503 on the paid
model) so the page has fallbacks, locally refused candidates, an escalation and spend;
copies of those rows moved back in time give the spend chart several buckets, and one
copy older than the window checks ``--since``. The page is parsed as XML (it is written
well-formed) and with :mod:`html.parser`, and every chart's ``data-*`` numbers are
compared with the rows read back from the ledger.
"""

from __future__ import annotations

import dataclasses
import math
import time
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from tierwise.catalog.policy import Policy
from tierwise.catalog.specs import Catalog, TaskType
from tierwise.cli.app import app
from tierwise.insights.report import bucket_seconds, render_report
from tierwise.ledger.store import Ledger, LedgerRow, percentile
from tierwise.routing.router import ModelRouter
from tierwise.routing.selector import Snapshot
from tierwise.testing import Fault, Simulator

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

"""``tierwise eval``: loaders, metrics, and the runner against the simulator and the real model.

The simulator runs use the packaged catalog: ``gemini-2.5-flash-free`` (first in the free
classification chain) is scripted to answer a wrong label and ``groq-llama-3.1-8b`` (second)
the gold one, so the evidence must say 0.0 and 1.0 and move groq above gemini.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from tierwise.catalog.policy import Policy
from tierwise.catalog.specs import Complexity, TaskType
from tierwise.cli.eval import eval_command
from tierwise.evaluation import EvalItem, EvalSet, evaluate, resolve_data
from tierwise.evaluation.datasets import data_root, load_bfcl, load_snips
from tierwise.evaluation.scoring import (
    normalise,
    score_classification,
    score_extraction,
    score_tool_call,
)
from tierwise.ledger import Ledger
from tierwise.ledger.evidence import EVAL
from tierwise.routing.router import ModelRouter
from tierwise.routing.selector import Selector
from tierwise.routing.snapshot import Snapshot
from tierwise.testing import ChatRequest, Reply, Simulator

ROOT = data_root()
needs_data = pytest.mark.skipif(not (ROOT / "banking77").is_dir(),
                                reason=f"shared data sets not at {ROOT}")
GOOD, BAD = "groq-llama-3.1-8b", "gemini-2.5-flash-free"

# ------------------------------------------------------------------ loaders


@needs_data
def test_shared_sets_load_with_stable_ids_and_their_operation() -> None:
    banking = resolve_data("banking77")
    assert (banking.name, banking.operation, len(banking), len(banking.labels)) == (
        "banking77/test", TaskType.CLASSIFICATION, 3080, 77)
    assert banking.items[0].id == "0" and banking.items[0].gold == "card_arrival"
    clinc = resolve_data("clinc150")
    assert len(clinc) == 5500 and len(clinc.labels) == 151 and "out_of_scope" in clinc.labels
    snips = resolve_data("snips")
    assert snips.operation is TaskType.PARAMETER_EXTRACTION and len(snips) == 700
    music = load_snips(ROOT / "snips_2017" / "PlayMusic", split="train")  # latin-1 file
    assert len(music) > 1000
    bfcl = resolve_data("bfcl")
    assert bfcl.operation is TaskType.TOOL_USE_FORMATTING and len(bfcl) == 400
    dotted = next(i for i in bfcl.items if i.id == "simple_python_1")
    assert dotted.setup["names"] == {"math_factorial": "math.factorial"}
    assert dotted.setup["tools"][0]["function"]["parameters"]["type"] == "object"
    assert len(resolve_data("bfcl:live_simple")) == 258


def test_a_csv_loads_with_row_ids(tmp_path: Path) -> None:
    file = tmp_path / "mine.csv"
    file.write_text('text,label\n"hello, there",greet\nbye,leave\n,empty\n')
    data = resolve_data(str(file))
    assert data.name == "mine" and data.labels == ("greet", "leave")
    assert [(i.id, i.inputs["instruction"], i.gold) for i in data.items] == [
        ("0", "hello, there", "greet"), ("1", "bye", "leave")]


def test_snips_and_bfcl_files_load(tmp_path: Path) -> None:
    snips = tmp_path / "validate_GetWeather.json"
    snips.write_bytes(json.dumps({"GetWeather": [{"data": [
        {"text": "weather in "}, {"text": "Zürich", "entity": "city"}, {"text": " today"},
    ]}]}, ensure_ascii=False).encode("latin-1"))
    [item] = load_snips(snips).items
    assert item.inputs == {"task": "weather in Zürich today"}
    assert item.gold == (("city", "Zürich"),) and item.setup["slots"] == ("city",)
    (tmp_path / "BFCL_v4_x.json").write_text(json.dumps({
        "id": "x_0", "question": [[{"role": "user", "content": "area of 3"}]],
        "function": [{"name": "geo.area", "description": "d", "parameters": {
            "type": "dict", "properties": {"r": {"type": "float"}}, "required": ["r"]}}],
    }) + "\n")
    (tmp_path / "possible_answer__BFCL_v4_x.json").write_text(
        json.dumps({"id": "x_0", "ground_truth": [{"geo.area": {"r": [3.0]}}]}) + "\n")
    [call] = load_bfcl(tmp_path / "BFCL_v4_x.json").items
    assert call.setup["tools"][0]["function"]["name"] == "geo_area"
    assert call.setup["tools"][0]["function"]["parameters"]["properties"]["r"] == {
        "type": "number"}


def test_a_missing_data_set_is_a_data_error(tmp_path: Path) -> None:
    from tierwise.evaluation import DataError

    with pytest.raises(DataError, match="no data set"):
        resolve_data(str(tmp_path / "nope.csv"))


def test_sampling_is_seeded_stratified_and_extends() -> None:
    items = tuple(EvalItem(str(i), {}, f"l{i % 5}", f"l{i % 5}") for i in range(100))
    data = EvalSet("t", TaskType.CLASSIFICATION, items, tuple(f"l{i}" for i in range(5)))
    five = data.sample(5)
    assert sorted(i.gold for i in five.items) == [f"l{i}" for i in range(5)]
    assert data.sample(5).items == five.items
    assert {i.id for i in five.items} <= {i.id for i in data.sample(12).items}
    assert data.sample(5, seed=1).items != five.items
    two = data.with_labels(2)
    assert len(two.labels) == 2 and two.name == "t@labels2-seed0"
    assert {i.gold for i in two.items} == set(two.labels) and len(two) == 40


# ------------------------------------------------------------------ metrics


def test_classification_is_exact_up_to_case_and_spaces() -> None:
    assert normalise(" Card_Arrival ") == "card arrival"
    assert score_classification("card arrival", "card_arrival").value == 1.0
    assert score_classification("card_linking", "card_arrival").value == 0.0


def test_extraction_is_slot_f1() -> None:
    gold = [("city", "Paris"), ("date", "tomorrow"), ("party", "4")]
    assert score_extraction({"city": "paris.", "date": "tomorrow", "party": "4"}, gold).value == 1
    # 2 hits, 3 predicted, 3 gold -> P = R = 2/3
    half = score_extraction({"city": "Paris", "date": "tomorrow", "party": "5"}, gold)
    assert half.value == pytest.approx(2 / 3)
    assert score_extraction({}, gold).value == 0.0
    assert score_extraction({}, []).value == 1.0


def test_tool_calls_are_matched_like_bfcl() -> None:
    gold = [{"calculate_triangle_area": {"base": [10], "height": [5], "unit": ["units", ""]}}]
    ok = score_tool_call({"name": "calculate_triangle_area", "args": {"base": 10, "height": 5}},
                         gold)
    assert ok.value == 1.0
    assert score_tool_call({"name": "calculate_triangle_area",
                            "args": {"base": 10.0, "height": 5, "unit": "Units"}}, gold).value == 1
    wrong = score_tool_call({"name": "calculate_triangle_area", "args": {"base": 10}}, gold)
    assert wrong == (0.0, "missing argument 'height'")
    extra = {"name": "calculate_triangle_area", "args": {"base": 10, "height": 5, "x": 1}}
    assert score_tool_call(extra, gold).value == 0.0
    assert score_tool_call({"name": "other", "args": {}}, gold).value == 0.0
    assert score_tool_call({"name": "f", "args": {"s": "10"}}, [{"f": {"s": [10]}}]).value == 0


# ------------------------------------------------------------------ simulator

LABELS = ("card_arrival", "card_linking", "exchange_rate")
TEXTS = {
    "where is my card": "card_arrival", "link my card please": "card_linking",
    "what rate do you use": "exchange_rate", "card not here yet": "card_arrival",
    "how do I link a card": "card_linking", "euro to dollar rate": "exchange_rate",
}


def _tiny_set() -> EvalSet:
    items = tuple(EvalItem(str(i), {"instruction": text}, gold, gold)
                  for i, (text, gold) in enumerate(TEXTS.items()))
    return EvalSet("tiny/test", TaskType.CLASSIFICATION, items, LABELS)


def _instruction(request: ChatRequest) -> str:
    found = re.search(r"Instruction: (.*)", request.messages[-1].text)
    assert found, request.messages[-1].text
    return found.group(1).strip()


def _script(sim: Simulator) -> None:
    def gold(request: ChatRequest) -> Reply:
        return Reply.json({"label": TEXTS[_instruction(request)], "complexity": "simple"},
                          usage=(50, 8))

    def wrong(request: ChatRequest) -> Reply:
        right = TEXTS[_instruction(request)]
        return Reply.json({"label": next(x for x in LABELS if x != right),
                           "complexity": "simple"}, usage=(50, 8))

    sim.script("llama-3.1-8b-instant", Reply.function(gold), provider="groq")
    sim.script("gemini-2.5-flash", Reply.function(wrong), provider="gemini")


def test_eval_records_each_models_verdicts_and_resumes(
    simulator: Simulator, tmp_path: Path
) -> None:
    _script(simulator)
    data = _tiny_set()
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        router = ModelRouter(simulator.settings(), ledger=ledger)
        report = evaluate(data, router=router, models=[GOOD, BAD])
        by_model = {m.model: m for m in report.models}
        assert (by_model[GOOD].mean, by_model[BAD].mean) == (1.0, 0.0)
        assert by_model[GOOD].n == 6 and by_model[GOOD].recorded == 6
        assert by_model[GOOD].low > 0.5 and by_model[BAD].high < 0.5
        assert by_model[GOOD].p50_latency is not None and by_model[GOOD].failures == 0
        outcomes = ledger.evidence.outcomes(source=EVAL, dataset="tiny/test")
        assert sorted((o.model, o.item, o.score) for o in outcomes) == sorted(
            [(GOOD, str(i), 1.0) for i in range(6)] + [(BAD, str(i), 0.0) for i in range(6)])
        assert all(o.operation == "classification" for o in outcomes)
        assert all(o.call_id for o in outcomes)  # the call is in the ledger under that id
        assert {o.call_id for o in outcomes} <= {r.call_id for r in ledger.rows()}
        # each verdict's prompt features are kept, so the learned router can train on it
        assert {(r.call_id, r.score) for r in ledger.evidence.training_rows()} == {
            (o.call_id, o.score) for o in outcomes}

        again = evaluate(data, router=router, models=[GOOD, BAD])
        assert [(m.recorded, m.resumed, m.n) for m in again.models] == [(0, 6, 6), (0, 6, 6)]
        assert len(ledger.evidence.outcomes(source=EVAL)) == 12
        assert again.models[0].mean == 1.0  # the report covers the resumed items

        # the evidence reorders the free tier: groq (catalog 2nd) above gemini (1st)
        catalog = router.settings.catalog
        measured = ledger.evidence.quality(operation="classification", min_n=5).values()
        snapshot = Snapshot.everything(catalog)
        before = [s.key for s in Selector(catalog).candidates(
            TaskType.CLASSIFICATION, Complexity.MODERATE, Policy(), snapshot)]
        assert before.index(BAD) < before.index(GOOD)
        after = [s.key for s in Selector(catalog).candidates(
            TaskType.CLASSIFICATION, Complexity.MODERATE, Policy(),
            snapshot.measured(measured))]
        assert after.index(GOOD) < after.index(BAD)


def test_invalid_output_is_bad_quality_and_an_outage_is_not_evidence(
    simulator: Simulator, tmp_path: Path
) -> None:
    from tierwise.testing import Fault

    simulator.script("llama-3.1-8b-instant", Reply.text("no json here"), provider="groq")
    simulator.script("gemini-2.5-flash", Fault.server_error(503), provider="gemini")
    data = _tiny_set().sample(2)
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        router = ModelRouter(simulator.settings(), ledger=ledger)
        report = evaluate(data, router=router, models=[GOOD, BAD])
        good, bad = report.models
        assert (good.n, good.mean, good.failures) == (2, 0.0, 0)
        assert (bad.n, bad.mean, bad.failures) == (0, None, 2)
        stored = ledger.evidence.outcomes(source=EVAL)
        assert {o.model for o in stored} == {GOOD}
        assert all("invalid output" in o.detail for o in stored)
        assert {o.call_id for o in stored} <= {r.call_id for r in ledger.rows()}  # named calls
        assert ledger.evidence.done("tiny/test", "classification", BAD) == set()


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("eval")(eval_command)
    app.command("noop")(lambda: None)  # a group, so "eval" is a subcommand as in tierwise
    return app


def test_the_command_prints_json_and_resumes(simulator: Simulator, tmp_path: Path) -> None:
    _script(simulator)
    data = tmp_path / "tiny.csv"
    data.write_text("text,category\n" + "".join(f"{t},{g}\n" for t, g in TEXTS.items()))
    config = tmp_path / "sim.toml"
    config.write_text(simulator.toml_snippet())
    env = {k: v for k, v in simulator.environment().items() if k.endswith("_KEY")}
    args = ["eval", "classification", "--data", str(data), "--models", f"{GOOD},{BAD}",
            "--limit", "4", "--ledger", str(tmp_path / "l.sqlite3"), "--config", str(config),
            "--json"]
    result = CliRunner().invoke(_app(), args, env=env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["dataset"] == "tiny" and report["items"] == 4
    scores = {m["model"]: (m["score"], m["n"], m["recorded"]) for m in report["models"]}
    assert scores == {GOOD: (1.0, 4, 4), BAD: (0.0, 4, 4)}
    for key in env.values():
        assert key not in result.output

    again = json.loads(CliRunner().invoke(_app(), args, env=env).stdout)
    assert [m["resumed"] for m in again["models"]] == [4, 4]

    table = CliRunner().invoke(_app(), args[:-1], env=env)
    assert table.exit_code == 0 and "score (95% CI)" in table.stdout and GOOD in table.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--data", "/nonexistent/x.csv"], "no data set"),
    (["--data", "{csv}", "--models", "no-such-model"], "unknown model"),
])
def test_bad_input_is_one_error_line_and_exit_2(
    tmp_path: Path, args: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIERWISE_LEDGER", str(tmp_path / "l.sqlite3"))
    data = tmp_path / "d.csv"
    data.write_text("text,label\nhi,greet\n")
    args = [a.replace("{csv}", str(data)) for a in args]
    result = CliRunner().invoke(_app(), ["eval", "classification", *args])
    assert result.exit_code == 2
    assert message in result.output and "error:" in result.output


def test_a_model_without_tool_calling_is_refused_for_tool_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A one-item BFCL file written here, so a clone without ../shared runs this test too.
    monkeypatch.setenv("TIERWISE_LEDGER", str(tmp_path / "l.sqlite3"))
    item = {"id": "simple_python_0",
            "question": [[{"role": "user", "content": "Area of a triangle, base 10, height 5."}]],
            "function": [{"name": "triangle_area", "description": "Area of a triangle.",
                          "parameters": {"type": "dict", "required": ["base", "height"],
                                         "properties": {"base": {"type": "integer"},
                                                        "height": {"type": "integer"}}}}]}
    gold = {"id": "simple_python_0",
            "ground_truth": [{"triangle_area": {"base": [10], "height": [5]}}]}
    data = tmp_path / "BFCL_v4_simple_python.json"
    data.write_text(json.dumps(item) + "\n")
    (tmp_path / f"possible_answer__{data.name}").write_text(json.dumps(gold) + "\n")
    model = "nous-hermes2-mistral-7b"  # a catalog model declared without tool calling
    result = CliRunner().invoke(_app(), ["eval", "tool_use_formatting", "--data", str(data),
                                         "--models", model])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert f"{model} has no tool calling" in result.output


def test_an_operation_and_data_set_mismatch_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_text("text,label\nhi,greet\n")
    result = CliRunner().invoke(_app(), ["eval", "parameter_extraction", "--data", str(data)])
    assert result.exit_code == 2 and "is a classification data set" in result.output


# ------------------------------------------------------------------ the embedded model


@needs_data
def test_eval_on_the_embedded_model(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp", reason="the embedded model needs llama-cpp-python")
    from tierwise.catalog.settings import Credentials, Settings
    from tierwise.catalog.specs import load_default_catalog
    from tierwise.providers.clients import embedded_installed

    if not embedded_installed():
        pytest.skip("the embedded model is not installed")
    data = resolve_data("banking77").with_labels(4).sample(3)
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        settings = Settings(catalog=load_default_catalog(), policy=Policy(),
                            credentials=Credentials(_env_file=None))
        router = ModelRouter(settings, ledger=ledger)
        report = evaluate(data, router=router, models=["smollm2-135m"])
        [model] = report.models
        assert model.n + model.failures == 3
        stored: list[Any] = ledger.evidence.outcomes(source=EVAL, model="smollm2-135m")
        assert len(stored) == model.n
        assert all(0.0 <= o.score <= 1.0 and o.dataset == data.name for o in stored)


def test_eval_evidence_reorders_what_tierwise_route_shows(
    simulator: Simulator, tmp_path: Path
) -> None:
    """The whole loop from the shell: eval 24 items per model, then route reads the ledger."""
    from tierwise.cli.app import app

    _script(simulator)
    data = tmp_path / "tiny.csv"
    data.write_text("text,category\n" + "".join(f"{t},{g}\n" for t, g in TEXTS.items()) * 4)
    config = tmp_path / "sim.toml"
    config.write_text(simulator.toml_snippet())
    env = {k: v for k, v in simulator.environment().items() if k.endswith("_KEY")}
    ledger = str(tmp_path / "l.sqlite3")
    route = ["route", "classification", "--config", str(config), "--ledger", ledger, "--json"]
    evaluated = CliRunner().invoke(app, ["eval", "classification", "--data", str(data),
                                         "--models", f"{GOOD},{BAD}", "--ledger", ledger,
                                         "--config", str(config), "--json"], env=env)
    assert evaluated.exit_code == 0, evaluated.output
    counts = {m["model"]: m["n"] for m in json.loads(evaluated.stdout)["models"]}
    assert counts[GOOD] == 24 and counts[BAD] >= 1  # gemini's free 10 RPM stops it early
    shown = CliRunner().invoke(app, route, env=env)
    assert shown.exit_code == 0, shown.output
    candidates = json.loads(shown.stdout)["candidates"]
    order = [c["key"] for c in candidates]
    assert order.index(GOOD) < order.index(BAD)  # the catalog has gemini (BAD) first
    reason = next(c["reason"] for c in candidates if c["key"] == GOOD)
    assert "measured 1.00" in reason and "n=24" in reason and f"moved above {BAD}" in reason

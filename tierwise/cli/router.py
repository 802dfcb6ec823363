"""``tierwise router train`` and ``tierwise router score``: the learned router from the shell.

``train`` fits the router that policy mode ``learned`` uses — from labelled files in
RouteLLM's column format and from the ledger's own judged calls — and writes it where
the router looks (``$TIERWISE_ROUTER`` or the user data dir) unless told otherwise.
``--incremental`` continues the existing router on the ledger outcomes recorded since it
was written. ``score`` prints RouteLLM's figures (APGR, CPT(50 %), CPT(80 %)) beside
random and oracle routing for a two-model labelled file, and for N models with a cost
each (``<model>_cost`` columns or ``--cost MODEL=USD``) the cost-quality frontier the
router traces as its cost weight moves, its AIQ, each model's point, random and oracle.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from tierwise.cli.common import (
    App,
    JsonOption,
    LedgerOption,
    _ledger_target,
    _open_ledger,
    out,
)

router_app: typer.Typer = App(
    help="Train and score the learned router (policy mode `learned`).", no_args_is_help=True
)

AliasOption = Annotated[
    list[str] | None,
    typer.Option("--alias", help="COLUMN=MODEL_KEY: the file's column is that model (a "
                 "catalog key); repeatable."),
]  # fmt: skip
DataOption = Annotated[
    list[Path] | None,
    typer.Option("--data", "-d", help="Labelled file or folder in RouteLLM's format "
                 "(prompt + a boolean/score column per model); repeatable."),
]  # fmt: skip


@router_app.command("train")
def train(
    data: DataOption = None,
    alias: AliasOption = None,
    use_ledger: Annotated[
        bool, typer.Option("--ledger-outcomes/--no-ledger-outcomes",
                           help="Also learn from the ledger's judged calls.")
    ] = True,  # fmt: skip
    ledger_path: LedgerOption = None,
    incremental: Annotated[
        bool, typer.Option("--incremental", help="Continue the existing router on the ledger "
                           "outcomes recorded since it was written.")
    ] = False,  # fmt: skip
    out_path: Annotated[
        Path | None, typer.Option("--out", help="Router file (default: $TIERWISE_ROUTER or "
                                  "router.npz in the user data dir).")
    ] = None,  # fmt: skip
    seed: Annotated[int, typer.Option(help="Training seed.")] = 0,
    as_json: JsonOption = False,
) -> None:
    """Train the learned router from labelled files and the ledger's outcomes."""
    from tierwise.learning.learned_router import LearnedRouter
    from tierwise.learning.routellm import load_labelled
    from tierwise.learning.train import train_from_sources
    from tierwise.routing.steering import default_router_path

    target = out_path or default_router_path()
    aliases = dict(_alias(a) for a in alias or [])
    try:
        files = [load_labelled(p) for p in data or []]
    except (OSError, ValueError) as exc:
        out.fail(str(exc), "pass --data with a RouteLLM-format CSV or a folder of them")
    base, since = None, None
    if incremental:
        try:
            base, since = LearnedRouter.load(target), target.stat().st_mtime
        except (OSError, ValueError) as exc:
            out.fail(f"--incremental needs a trained router: {exc}",
                     "train one first without --incremental")  # fmt: skip
    ledger = None
    if use_ledger:
        found = _ledger_target(ledger_path, None)
        if not isinstance(found, Path) or found.is_file():
            ledger = _open_ledger(ledger_path)
    started = time.perf_counter()
    try:
        router, rows = train_from_sources(
            files, evidence=ledger.evidence if ledger else None, aliases=aliases,
            since=since, base=base, seed=seed,
        )
    except ValueError as exc:
        out.fail(str(exc), "pass --data FILE, or run graphs/evals that record outcomes")
    finally:
        if ledger is not None:
            ledger.close()
    seconds = time.perf_counter() - started
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        saved = router.save(target)
    except OSError as exc:
        out.fail(f"cannot write the router to {target}: {exc.strerror or exc}",
                 "pass --out with a file in a writable directory")  # fmt: skip
    summary = {"router": str(saved), "rows": rows, "models": list(router.keys),
               "seconds": round(seconds, 2), "incremental": incremental}  # fmt: skip
    if as_json:
        out.json(summary)
        return
    kind = "continued" if incremental else "trained"
    out.line(f"{kind} on {rows} labelled prompts in {seconds:.1f} s; models: "
             f"{', '.join(router.keys)}")  # fmt: skip
    out.line(f"wrote {saved}; use it with policy mode `learned`")


@router_app.command("score")
def score(
    file: Annotated[Path, typer.Argument(help="Labelled CSV or folder (RouteLLM format).")],
    router_path: Annotated[
        Path | None, typer.Option("--router", help="Router file (default: train one on the "
                                  "standard GSM8K + MMLU split; needs the shared data).")
    ] = None,  # fmt: skip
    strong: Annotated[str | None, typer.Option(help="The strong model's column.")] = None,
    weak: Annotated[str | None, typer.Option(help="The weak model's column.")] = None,
    alias: AliasOption = None,
    cost: Annotated[
        list[str] | None,
        typer.Option("--cost", help="MODEL=USD: that model column costs USD per call "
                     "(else its <model>_cost column); repeatable. Models with a cost are "
                     "scored together: frontier and AIQ."),
    ] = None,  # fmt: skip
    holdout: Annotated[
        float | None,
        typer.Option("--holdout", min=0.0, max=1.0,
                     help="Train a router on the file itself and score it on this share of "
                     "its prompts, held out (e.g. 0.3); instead of --router."),
    ] = None,  # fmt: skip
    as_json: JsonOption = False,
) -> None:
    """RouteLLM's APGR/CPT for two models; the cost-quality frontier and AIQ for N with costs."""
    from tierwise.learning.train import HoldoutError, score_file

    aliases = dict(_alias(a) for a in alias or [])
    costs = dict(_cost(c) for c in cost or [])
    try:
        result = score_file(file, router_path, strong=strong, weak=weak, aliases=aliases,
                            costs=costs, holdout=holdout)  # fmt: skip
    except HoldoutError as exc:
        out.fail(str(exc), "hold out a share that leaves prompts on both sides, e.g. "
                 "--holdout 0.3, and no --router")  # fmt: skip
    except (OSError, ValueError) as exc:
        out.fail(str(exc), "name --strong and --weak for two models, or give each model a "
                 "cost (--cost MODEL=USD or <model>_cost columns)")  # fmt: skip
    if as_json:
        out.json(result)
        return
    if result["trained_on"]:
        out.line(f"trained on {result['trained_on']} prompts of {file}, scored on the "
                 f"{holdout:.0%} held out")  # fmt: skip
    if result["pair"] is not None:
        _print_pair(file, result["pair"])
    if result["multi"] is not None:
        _print_multi(file, result["multi"])
    seen = result.get("seen_in_training")
    if seen:
        out.line(f"note: {seen} of these prompts were in the router's training split")
    if result["without_head"]:
        out.line(f"note: the router has no head for {', '.join(result['without_head'])}: "
                 "its 'learned' figures route them on a prior alone; --holdout 0.3 trains "
                 "one on this file, or pass --router with one trained for these models")


def _print_pair(file: Path, pair: dict[str, Any]) -> None:
    out.line(f"{file}: {pair['rows']} prompts; weak {pair['weak']} "
             f"{pair['weak_quality']:.1%}, strong {pair['strong']} "
             f"{pair['strong_quality']:.1%}")  # fmt: skip
    table = Table()
    for column in ("router", "APGR", "CPT(50%)", "CPT(80%)"):
        table.add_column(column)
    for name in ("learned", "unguarded", "random", "oracle"):
        figures = pair[name]
        table.add_row(name, f"{figures['apgr']:.3f}", f"{figures['cpt50']:.1%}",
                      f"{figures['cpt80']:.1%}")  # fmt: skip
    out.table(table)
    if pair["guarded"]:
        out.line(f"the guard shrank the scores of {pair['guarded']} prompts unlike the "
                 "router's training data toward the chain order ('unguarded': not shrunk)")


def _print_multi(file: Path, multi: dict[str, Any]) -> None:
    low, high = multi["cost_range"]
    out.line(f"{file}: {multi['rows']} prompts, {len(multi['models'])} models with a cost; "
             f"AIQ = mean quality on the frontier over ${low:.6g}-${high:.6g} per prompt")
    models = Table(title="single models")
    for column in ("model", "cost/prompt", "quality"):
        models.add_column(column)
    for name, point in multi["models"].items():
        models.add_row(name, f"${point['cost']:.6g}", f"{point['quality']:.1%}")
    out.table(models)
    table = Table(title="cost-quality frontier")
    for column in ("router", "AIQ", "frontier (cost/prompt -> quality)"):
        table.add_column(column)
    for name in ("learned", "random", "oracle"):
        curve = multi[name]
        points = ", ".join(f"${c:.4g}->{q:.1%}" for c, q in curve["frontier"])
        table.add_row(name, f"{curve['aiq']:.3f}", points)
    out.table(table)


def _cost(text: str) -> tuple[str, float]:
    model, sep, usd = text.rpartition("=")
    try:
        value = float(usd)
    except ValueError:
        value = -1.0
    if not sep or not model or not value >= 0.0:
        out.fail(f"invalid --cost {text!r}", "use MODEL=USD, e.g. --cost gpt-4o=0.01")
    return model, value


def _alias(text: str) -> tuple[str, str]:
    column, sep, key = text.rpartition("=")
    if not sep or not column or not key:
        out.fail(f"invalid --alias {text!r}", "use COLUMN=CATALOG_KEY")
    return column, key

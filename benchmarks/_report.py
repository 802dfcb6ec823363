"""What a benchmark returns (rows of the table, bars of the chart) and how both are written.

Every benchmark module returns one :class:`Section`: its rows for the markdown table (one
line per measurement, tierwise beside each peer, ratios measured in the same run) and
its panel(s) for the PNG chart (medians with min–max error bars). ``__main__`` collects
the sections and calls :func:`write_markdown` and :func:`write_chart`.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from benchmarks._stats import Spread

__all__ = ["Bar", "Panel", "Row", "Section", "load_average", "versions", "write_chart",
           "write_markdown"]


@dataclass(frozen=True)
class Row:
    """One line of the table; cells are already formatted text.

    ``met`` is ``True``/``False`` when the row has a target, ``None`` when it is context.
    """

    measurement: str
    tierwise: str
    langchain: str = "–"
    litellm: str = "–"
    target: str = "–"
    met: bool | None = None
    why: str = ""


#: Bar colour per contender.
COLOURS = {"tierwise": "#1b7f5b", "langchain": "#3b6ea8", "litellm": "#c8742a",
           "reference": "#9a9ea6"}


def contender(label: str) -> str:
    """Whose bar ``label`` is, from its wording."""
    text = label.lower()
    if "litellm" in text:
        return "litellm"
    if "tierwise" in text and "client" not in text or "modelrouter" in text or "pipeline" in text:
        return "tierwise"
    if "with_fallbacks" in text or "langchain" in text or "hand-written" in text:
        return "langchain"
    return "reference"


@dataclass(frozen=True)
class Bar:
    """One bar: a median with its min–max; ``capped`` bars never finished (value = cap)."""

    label: str
    spread: Spread
    capped: bool = False
    who: str = ""  # tierwise, langchain, litellm or reference (default: from the label)

    @property
    def colour(self) -> str:
        return COLOURS[self.who or contender(self.label)]


@dataclass(frozen=True)
class Panel:
    """One chart panel: bars sharing a unit."""

    title: str
    unit: str
    bars: Sequence[Bar]
    log: bool = False


@dataclass
class Section:
    """What one benchmark produced."""

    name: str
    title: str
    rows: list[Row] = field(default_factory=list)
    panels: list[Panel] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min) on {os.cpu_count()} CPUs"


def versions() -> str:
    names = ("tierwise", "langchain-core", "langchain-openai", "langgraph", "openai", "litellm")
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return f"Python {platform.python_version()}; " + ", ".join(found)


def _met(value: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "–"}[value]


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(sections: Sequence[Section]) -> str:
    lines = [
        "| benchmark | measurement | tierwise | LangChain | LiteLLM Router | target "
        "| target met? |",
        "|---|---|---|---|---|---|---|",
    ]
    for section in sections:
        for row in section.rows:
            met = _met(row.met) + (f" — {row.why}" if row.why else "")
            cells = (section.title, row.measurement, row.tierwise, row.langchain, row.litellm,
                     row.target, met)
            lines.append("| " + " | ".join(_escape(c) for c in cells) + " |")
    return "\n".join(lines)


def write_markdown(
    path: Path,
    sections: Sequence[Section],
    *,
    command: str,
    load_before: str,
    load_after: str,
    seconds: float,
    chart: str | None,
    refused: Sequence[str] = (),
) -> None:
    """The table, how it was made and each benchmark's notes."""
    out = [
        "# tierwise vs LangChain and LiteLLM",
        "",
        f"Command: `{command}` — ran {seconds:.0f} s.  ",
        f"Load average before: {load_before}; after: {load_after}.  ",
        f"{versions()}.  ",
        "Network: every connection went to 127.0.0.1"
        + (f"; refused attempts to reach {', '.join(refused)}." if refused else
           " (an audit hook refuses any other; none was attempted)."),
        "",
        "Every figure is the median over repeated runs with the min–max in parentheses; "
        "every ratio compares figures measured in the same process run. All traffic goes to "
        "the tierwise provider simulator on 127.0.0.1 (zero latency unless stated), started "
        "in its own process so it does not share the clients' GIL.",
        "",
        markdown_table(sections),
        "",
    ]
    if chart:
        out += [f"![benchmarks]({chart})", ""]
    for section in sections:
        out.append(f"## {section.title} ({section.seconds:.0f} s)")
        out.append("")
        out += [f"- {note}" for note in section.notes]
        out.append("")
    path.write_text("\n".join(out), encoding="utf-8")


def write_chart(path: Path, sections: Sequence[Section]) -> bool:
    """One panel per benchmark panel; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = [p for s in sections for p in s.panels if p.bars]
    if not panels:
        return False
    columns = 2 if len(panels) > 1 else 1
    rows = (len(panels) + columns - 1) // columns
    heights = [max(2.2, 0.42 * len(p.bars) + 1.2) for p in panels]
    row_heights = [max(heights[i : i + columns]) for i in range(0, len(panels), columns)]
    fig, axes = plt.subplots(
        rows, columns, figsize=(7.2 * columns, sum(row_heights)), squeeze=False,
        gridspec_kw={"height_ratios": row_heights},
    )
    for ax, panel in zip(axes.flat, panels, strict=False):
        _panel(ax, panel)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle("tierwise vs LangChain and LiteLLM (median, min–max; hatched: capped)")
    from matplotlib.patches import Patch

    fig.legend(
        handles=[Patch(color=c, label=n) for n, c in COLOURS.items()],
        loc="upper right", ncols=4, fontsize=8, frameon=False,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _panel(ax: object, panel: Panel) -> None:
    labels = [b.label for b in panel.bars]
    medians = [b.spread.median for b in panel.bars]
    low = [b.spread.median - b.spread.low for b in panel.bars]
    high = [b.spread.high - b.spread.median for b in panel.bars]
    colours = [b.colour for b in panel.bars]
    positions = list(range(len(panel.bars)))[::-1]
    bars = ax.barh(  # type: ignore[attr-defined]
        positions, medians, xerr=[low, high], color=colours, capsize=3, ecolor="#333333"
    )
    for bar, spec in zip(bars, panel.bars, strict=True):
        if spec.capped:
            bar.set_hatch("//")
            bar.set_alpha(0.6)
    ax.set_yticks(positions)  # type: ignore[attr-defined]
    ax.set_yticklabels(labels, fontsize=8)  # type: ignore[attr-defined]
    ax.set_xlabel(panel.unit)  # type: ignore[attr-defined]
    ax.set_title(panel.title, fontsize=10)  # type: ignore[attr-defined]
    if panel.log and all(m > 0 for m in medians):
        ax.set_xscale("log")  # type: ignore[attr-defined]
    for pos, spec in zip(positions, panel.bars, strict=True):
        text = f"{spec.spread.median:,.3g}" + (" (capped)" if spec.capped else "")
        ax.annotate(  # type: ignore[attr-defined]
            text, (spec.spread.high, pos), xytext=(4, 0), textcoords="offset points",
            va="center", fontsize=7,
        )
    right = max(b.spread.high for b in panel.bars)
    if panel.log:
        ax.set_xlim(right=right * 6)  # type: ignore[attr-defined]
    elif right > 0:
        ax.set_xlim(0, right * 1.22)  # type: ignore[attr-defined]

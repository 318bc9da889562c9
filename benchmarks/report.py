"""The suite's outputs: a row's dict (figures, targets, prose filled in), the printed table, results.json, RESULTS.md.

A row's prose is a :class:`RowText` kept beside the code that measures it: ``str.format``
templates over the row's figures, filled in when the row is made, so the report below
assembles every row the same way and knows nothing of any row in particular.
"""

import dataclasses
import datetime
import json
import string

from library import atomic_file


@dataclasses.dataclass(frozen=True)
class RowText:
    """A row's prose in RESULTS.md: templates over its figures (``str.format`` fields such as ``{speedup:.2f}``).

    ``method``: how the row measures. ``results``: bullets of this run's figures; a bullet naming
    a figure the run did not measure (missing or None, e.g. in ``--quick``) is left out.
    ``findings``: what profiling and trials found, written by hand. ``not_met``: shown only when
    one of the row's targets is missed.
    """

    method: str
    results: tuple
    findings: str = ""
    not_met: str = ""


def fill(template: str, figures: dict):
    """``template`` with ``figures`` filled in, or None when it names a figure that is missing or None."""
    names = [field.split(".")[0].split("[")[0] for _, field, _, _ in string.Formatter().parse(template) if field]
    if any(figures.get(name) is None for name in names):
        return None
    return template.format_map(figures)


def target(name: str, value, direction: str, threshold: float, unit: str, *, measured: str = "",
           noise: dict = None) -> dict:
    """One target of a row: met, not met, or not measured (value None, e.g. the 20,000 images in --quick).

    ``measured``: a template of the two sides of the ratio, e.g. "{a:.0f} vs {b:.0f} images/s";
    ``noise``: measure.ratio_summary of the rounds the value comes from.
    """
    met = None if value is None else bool(value >= threshold if direction == ">=" else value <= threshold)
    return {"name": name, "value": value, "direction": direction, "threshold": threshold, "unit": unit, "met": met,
            "noise": noise, "measured": measured}


def reference(name: str, value, unit: str = "") -> dict:
    """A figure shown in the table beside the targets, without a target of its own."""
    return {"name": name, "value": value, "unit": unit}


def row(row_id: str, title: str, figures: dict, targets: list, *, text: RowText, references: list = ()) -> dict:
    """A row of results: its figures, targets and references, and its prose filled in from ``text``."""
    targets = [{**goal, "measured": fill(goal["measured"], figures) or ""} for goal in targets]
    missed = any(goal["met"] is False for goal in targets)
    return {
        "id": row_id,
        "title": title,
        "figures": figures,
        "targets": targets,
        "references": list(references),
        "text": {
            "method": text.method.format_map(figures),
            "results": [line for line in (fill(bullet, figures) for bullet in text.results) if line is not None],
            "findings": text.findings.format_map(figures),
            "not_met": text.not_met.format_map(figures) if missed else "",
        },
    }


def status(met) -> str:
    return {True: "met", False: "NOT MET", None: "not measured"}[met]


def _number(value, unit="") -> str:
    return "-" if value is None else f"{value:.2f}{unit}"


def _noise(noise) -> str:
    """Rounds, spread of the ratio and the worst load others put on the machine meanwhile."""
    if not noise:
        return ""
    if noise["rounds"] > 1:
        text = f"median of {noise['rounds']} rounds ({noise['ratio_min']:.2f}-{noise['ratio_max']:.2f})"
    else:
        text = "1 round"
    text += f"; others <= {noise['others_max']:.2f} cores"
    if noise["dropped_rounds"]:
        text += f"; {noise['dropped_rounds']} disturbed round(s) dropped"
    if noise["all_disturbed"]:
        text += "; every round disturbed: rerun on a quieter machine"
    return text


def table_rows(results: dict) -> list:
    """[(benchmark, measured, target, status, noise)] of every target and reference figure."""
    lines = []
    for number, row in enumerate(results["rows"], 1):
        for goal in row["targets"]:
            lines.append((
                f"{number}. {goal['name']}",
                _number(goal["value"], goal["unit"]) + (f" ({goal['measured']})" if goal["measured"] else ""),
                f"{goal['direction']} {goal['threshold']:g}{goal['unit']}",
                status(goal["met"]) + (" (disturbed)" if goal["noise"] and goal["noise"]["all_disturbed"] else ""),
                _noise(goal["noise"]),
            ))
        for figure in row["references"]:
            lines.append((f"{number}. {figure['name']}", _number(figure["value"], figure["unit"]), "(reference)", "",
                          ""))
    return lines


HEADER = ("benchmark", "measured", "target", "status", "noise")


def text_table(results: dict) -> str:
    """The table for the terminal."""
    lines = [HEADER] + table_rows(results)
    widths = [max(len(line[column]) for line in lines) for column in range(len(HEADER))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines)


def markdown_table(results: dict) -> str:
    lines = [HEADER, ("---",) * len(HEADER)] + table_rows(results)
    return "\n".join("| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines)


def _machine_text(machine: dict) -> str:
    features = ", ".join(machine["cpu_features"]) or "no AVX2"
    return (f"{machine['cpu']} ({features}), {machine['cores']} cores"
            f"{' (virtual machine)' if machine['hypervisor'] else ''}, "
            f"{machine['memory_bytes'] / 2**30:.1f} GiB memory; Linux {machine['kernel']}, Python {machine['python']}, "
            f"TensorFlow {machine['tensorflow']}")


INTRODUCTION = (
    "Rerun with `make bench` (`.venv/bin/python -m benchmarks.run`; the photo-like data is generated once into "
    "`out/bench/`). `make bench-quick` is the smoke test the test suite runs. Every figure is a ratio of two "
    "measurements taken back to back in the same run, in rounds whose order alternates; every row with a target "
    "runs {target_rounds} or more rounds and reports their median and spread (min-max). A round in which other "
    "processes kept more than {disturbed_cores:g} cores busy is left out of the ratios (unless every round was) and "
    "repeated while the time limit ({time_limit_minutes:.0f} minutes) allows. `benchmarks/results.json` holds every "
    "figure of this run."
)


def _row_section(number: int, row: dict) -> list:
    """One row's section of RESULTS.md: method, this run's figures, findings, and why a missed target was missed."""
    text = row["text"]
    lines = [f"## {number}. {row['title']}", "", text["method"], ""]
    if text["results"]:
        lines += [*(f"- {line}" for line in text["results"]), ""]
    if text["findings"]:
        lines += [text["findings"], ""]
    if text["not_met"]:
        lines += ["**Not met: why, and what was tried.** " + text["not_met"], ""]
    return lines


def markdown(results: dict) -> str:
    """RESULTS.md: the latest table, the machine, how to rerun, the data, and each row's method and findings."""
    date = datetime.datetime.fromtimestamp(results["started"], datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    quick = " (`--quick`: smoke-test sizes, figures not meaningful)" if results["quick"] else ""
    parts = [
        "# Benchmark results",
        "",
        f"Latest run: {date}{quick}, {results['duration_seconds'] / 60:.1f} minutes.  ",
        f"Machine: {_machine_text(results['machine'])}.  ",
        f"Machine load from other processes before the run: {results['load_before']:.2f} cores.",
        "",
        INTRODUCTION.format(**results["policy"], disturbed_cores=results["disturbed_cores"]),
        "",
        markdown_table(results),
        "",
        "## Data",
        "",
        results["data_text"],
        "",
    ]
    for number, row in enumerate(results["rows"], 1):
        parts += _row_section(number, row)
    parts += ["Not a row of the suite: what the batch-norm train/eval gap is made of, measured by hand, is in "
              "[batch_norm_study.md](batch_norm_study.md).", ""]
    return "\n".join(parts)


def write(results: dict, results_path: str, markdown_path: str) -> None:
    """results.json and the markdown next to it, each replaced atomically."""
    atomic_file.write_text(results_path, json.dumps(results, indent=2) + "\n")
    atomic_file.write_text(markdown_path, markdown(results))

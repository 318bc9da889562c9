"""The suite's outputs: targets marked met / not met, the printed table, results.json and RESULTS.md."""

import datetime
import json

from benchmarks import notes
from library import atomic_file


def target(name: str, value, direction: str, threshold: float, unit: str, noise: dict = None) -> dict:
    """One target of a row: met, not met, or not measured (value None, e.g. the 20,000 images in --quick).

    ``noise``: measure.ratio_summary of the rounds the value comes from.
    """
    met = None if value is None else bool(value >= threshold if direction == ">=" else value <= threshold)
    return {"name": name, "value": value, "direction": direction, "threshold": threshold, "unit": unit, "met": met,
            "noise": noise}


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
        measured = notes.measured_text(row)
        for index, goal in enumerate(row["targets"]):
            lines.append((
                f"{number}. {goal['name']}",
                _number(goal["value"], goal["unit"]) + (f" ({measured[index]})" if measured[index] else ""),
                f"{goal['direction']} {goal['threshold']:g}{goal['unit']}",
                status(goal["met"]) + (" (disturbed)" if goal["noise"] and goal["noise"]["all_disturbed"] else ""),
                _noise(goal["noise"]),
            ))
        for reference in row.get("references", []):
            lines.append((f"{number}. {reference['name']}", _number(reference["value"], reference["unit"]),
                          "(reference)", "", ""))
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


def markdown(results: dict) -> str:
    """RESULTS.md: the latest table, the machine, how to rerun, each row's method and findings, and the batch-norm study."""
    date = datetime.datetime.fromtimestamp(results["started"], datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    quick = " (`--quick`: smoke-test sizes, figures not meaningful)" if results["quick"] else ""
    parts = [
        "# Benchmark results",
        "",
        f"Latest run: {date}{quick}, {results['duration_seconds'] / 60:.1f} minutes.  ",
        f"Machine: {_machine_text(results['machine'])}.  ",
        f"Machine load from other processes before the run: {results['load_before']:.2f} cores.",
        "",
        "Rerun with `make bench` (`.venv/bin/python -m benchmarks.run`: about 12 minutes on a quiet 2-core machine, "
        "never more than 13, as it stops repeating disturbed rounds when its time budget is spent; the photo-like "
        "data is generated once into `out/bench/`). `make bench-quick` is the smoke test CI runs. "
        "Every figure is a ratio of two measurements taken back to back in the same run; rounds "
        "alternate their order, and a round in which other processes kept more than "
        f"{results['disturbed_cores']:g} cores busy is repeated while the time budget allows. "
        "`benchmarks/results.json` holds every figure of this run.",
        "",
        markdown_table(results),
        "",
        "## Data",
        "",
        notes.data_text(results["data"]),
        "",
    ]
    for number, row in enumerate(results["rows"], 1):
        parts += [f"## {number}. {row['title']}", "", notes.row_text(row), ""]
    parts += [notes.BATCH_NORM_STUDY, ""]
    return "\n".join(parts)


def write(results: dict, results_path: str, markdown_path: str) -> None:
    """results.json and the markdown next to it, each replaced atomically."""
    atomic_file.write_text(results_path, json.dumps(results, indent=2) + "\n")
    atomic_file.write_text(markdown_path, markdown(results))

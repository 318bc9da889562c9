"""The suite's report: each row's prose filled in from its own template, the rows assembled alike."""

import json

from benchmarks import report
from benchmarks.report import RowText

NOISE = {"ratio": 1.2, "ratio_min": 1.1, "ratio_max": 1.4, "rounds": 3, "dropped_rounds": 1, "others_max": 0.1,
         "all_disturbed": False}
TEXT = RowText(
    method="Timed {steps} steps.",
    results=("fast: {fast:.1f} steps/s.", "large: {large_mb:.0f} MB.", "slow: {slow:.2f} steps/s."),
    findings="Found by hand: {steps} steps suffice.",
    not_met="Check the spread.",
)


def made_row(row_id, value, **figures):
    return report.row(row_id, f"the {row_id} row", {"steps": 10, "fast": 2.25, "slow": 1.0, **figures},
                      [report.target(f"{row_id}: fast / slow", value, ">=", 1.5, "x", noise=NOISE,
                                     measured="{fast:.2f} vs {slow:.2f} steps/s")],
                      text=TEXT, references=[report.reference(f"{row_id}: a reference", None)])


def test_a_template_names_figures_and_is_left_out_when_one_is_missing():
    assert report.fill("{a:.1f} vs {b:,}", {"a": 1.25, "b": 2000}) == "1.2 vs 2,000"
    assert report.fill("{a:.1f} vs {b}", {"a": 1.0}) is None
    assert report.fill("{a:.1f} vs {b}", {"a": 1.0, "b": None}) is None
    assert report.fill("no figure", {}) == "no figure"


def test_a_row_fills_its_prose_and_leaves_out_what_was_not_measured():
    row = made_row("speed", 2.25, large_mb=None)
    assert row["targets"][0]["measured"] == "2.25 vs 1.00 steps/s" and row["targets"][0]["met"] is True
    assert row["text"] == {"method": "Timed 10 steps.", "results": ["fast: 2.2 steps/s.", "slow: 1.00 steps/s."],
                           "findings": "Found by hand: 10 steps suffice.", "not_met": ""}
    assert json.loads(json.dumps(row)) == row  # results.json holds it as it is


def test_why_a_target_was_missed_shows_only_when_it_was():
    assert made_row("speed", 1.2)["text"]["not_met"] == "Check the spread."


def results(*rows):
    return {"rows": list(rows), "started": 0.0, "quick": False, "duration_seconds": 600.0, "load_before": 0.05,
            "disturbed_cores": 0.25, "policy": {"target_rounds": 3, "time_limit_minutes": 15},
            "machine": {"cpu": "CPU", "cpu_features": ["avx2"], "cores": 2, "hypervisor": False,
                        "memory_bytes": 2**32, "kernel": "6", "python": "3.11", "tensorflow": "2.15.1"},
            "data_text": "Some photos."}


def test_the_markdown_numbers_and_assembles_any_rows_alike():
    markdown = report.markdown(results(made_row("alpha", 2.25, large_mb=3.0), made_row("beta", 1.2)))
    assert "runs 3 or more rounds and reports their median and spread" in markdown
    assert ("| 1. alpha: fast / slow | 2.25x (2.25 vs 1.00 steps/s) | >= 1.5x | met | median of 3 rounds (1.10-1.40); "
            "others <= 0.10 cores; 1 disturbed round(s) dropped |") in markdown
    assert "| 2. beta: fast / slow | 1.20x (2.25 vs 1.00 steps/s) | >= 1.5x | NOT MET |" in markdown
    assert "| 2. beta: a reference | - | (reference) |  |  |" in markdown
    alpha = markdown[markdown.index("## 1. the alpha row"):markdown.index("## 2. the beta row")]
    assert alpha == ("## 1. the alpha row\n\nTimed 10 steps.\n\n- fast: 2.2 steps/s.\n- large: 3 MB.\n"
                     "- slow: 1.00 steps/s.\n\nFound by hand: 10 steps suffice.\n\n")
    assert "**Not met: why, and what was tried.** Check the spread." in markdown.split("## 2. the beta row")[1]
    assert "{" not in markdown and "None" not in markdown

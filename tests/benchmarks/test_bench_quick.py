"""The benchmark suite works: `python -m benchmarks.run --quick` end to end.

Only that the suite runs and reports is checked here, never its figures (machines vary).
"""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT

ROW_IDS = ["conversion", "input_pipeline", "training", "framework_overhead", "evaluation", "recalibration", "cycles",
           "feature_cache", "pretrained_caching", "fine_tuning"]
COMMITTED = [os.path.join(ROOT, "benchmarks", name) for name in ("results.json", "RESULTS.md")]
DEFAULT_SET_OUTPUT = os.path.join(ROOT, "out", "current")  # the `default` set's model_dir and best_model_dir


def snapshot(paths):
    """Content of each file that exists, to show it was left alone."""
    return {path: open(path, "rb").read() for path in paths if os.path.exists(path)}


@pytest.mark.slow
def test_quick_suite_reports_every_row_with_marked_targets_and_its_prose(tmp_path):
    committed, had_default_output = snapshot(COMMITTED), os.path.exists(DEFAULT_SET_OUTPUT)
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--output_dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]

    results = json.loads((tmp_path / "quick-results.json").read_text())
    assert results["quick"] is True
    assert [row["id"] for row in results["rows"]] == ROW_IDS
    for row in results["rows"]:
        headline = row["targets"][0]
        assert isinstance(headline["value"], float) and headline["value"] > 0, row
        assert headline["met"] in (True, False) and headline["measured"], row
        assert row["figures"] and all(goal["met"] in (True, False, None) for goal in row["targets"])
        assert row["text"]["method"] and row["text"]["results"], row["id"]
    memory = results["rows"][0]["targets"][1]
    assert memory["value"] is None and memory["met"] is None  # the 20,000 images are skipped in --quick
    assert results["machine"]["cores"] >= 1 and results["machine"]["cpu"]

    markdown = (tmp_path / "quick-results.md").read_text()
    assert "--quick" in markdown and "| benchmark | measured | target | status | noise |" in markdown
    for number in range(1, len(ROW_IDS) + 1):
        assert f"\n| {number}. " in markdown and f"\n## {number}. " in markdown
    assert "{" not in markdown  # every template filled in
    assert "NOT MET" in completed.stdout or " met " in completed.stdout
    assert os.path.exists(DEFAULT_SET_OUTPUT) == had_default_output  # every row writes in its own scratch
    assert snapshot(COMMITTED) == committed  # a quick run never replaces the committed results

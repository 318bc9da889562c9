"""The benchmark suite works: `python -m benchmarks.run --quick` end to end, and its measuring helpers.

Only that the suite runs and reports is checked here, never its figures (CI machines vary).
"""

import json
import os
import subprocess
import sys

import pytest

from benchmarks import measure
from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # the whole quick benchmark suite; make test still runs it

ROW_IDS = ["conversion", "input_pipeline", "training", "framework_overhead", "evaluation", "recalibration", "cycles",
           "feature_cache", "pretrained_caching", "fine_tuning"]
COMMITTED = [os.path.join(ROOT, "benchmarks", name) for name in ("results.json", "RESULTS.md")]


def snapshot(paths):
    """Content of each file that exists, to show it was left alone."""
    return {path: open(path, "rb").read() for path in paths if os.path.exists(path)}


def test_quick_suite_reports_every_row_with_marked_targets(tmp_path):
    committed = snapshot(COMMITTED)
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
        assert headline["met"] in (True, False), row
        assert row["figures"] and all(goal["met"] in (True, False, None) for goal in row["targets"])
    memory = results["rows"][0]["targets"][1]
    assert memory["value"] is None and memory["met"] is None  # the 20,000 images are skipped in --quick
    assert results["machine"]["cores"] >= 1 and results["machine"]["cpu"]

    markdown = (tmp_path / "quick-results.md").read_text()
    assert "--quick" in markdown and "| benchmark | measured | target | status | noise |" in markdown
    for number in range(1, len(ROW_IDS) + 1):
        assert f"\n| {number}. " in markdown and f"## {number}. " in markdown
    assert "NOT MET" in completed.stdout or " met " in completed.stdout
    assert snapshot(COMMITTED) == committed  # a quick run never replaces the committed results


def test_peak_memory_covers_the_whole_process_tree():
    grandchild = "import time; block = bytearray(150 * 2**20); time.sleep(1)"
    child = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {grandchild!r}]); print('done')"
    result = measure.run_with_peak_memory([sys.executable, "-c", child])
    assert result["returncode"] == 0 and result["stdout"] == "done\n"
    assert result["tree_pss"] > 150 * 2**20 > result["main_hwm"]


def test_peak_memory_counts_pages_shared_by_a_forked_child_once():
    parent = (
        "import os, time\n"
        "block = bytearray(200 * 2**20)\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    time.sleep(1)\n"
        "    os._exit(0)\n"
        "os.waitpid(child, 0)\n"
    )
    result = measure.run_with_peak_memory([sys.executable, "-c", parent])
    assert result["returncode"] == 0, result["stderr"]
    assert 200 * 2**20 < result["tree_pss"] < 300 * 2**20


def test_rounds_repeat_a_disturbed_round_and_ratios_skip_it(monkeypatch):
    loads = iter([0.0, 0.0, 1.5, 1.5, 0.0, 0.0])  # the second round is disturbed by another process

    def fake_sample(measure_fn):
        return measure.Sample(measure_fn(), 1.0, 1.0, next(loads))

    monkeypatch.setattr(measure, "sample", fake_sample)
    values = iter([2.0, 1.0, 9.0, 9.0, 3.0, 1.0])
    done = measure.rounds({"a": lambda: next(values), "b": lambda: next(values)}, count=2,
                          budget=measure.Budget(60), max_extra=1, quiet_wait=0, log=lambda message: None)
    assert len(done) == 3
    summary = measure.ratio_summary(done, "a", "b")
    assert summary["ratio"] == 2.5 and summary["rounds"] == 2 and summary["dropped_rounds"] == 1

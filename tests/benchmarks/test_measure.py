"""Measuring on a shared machine: rounds, their ratios and spread, and peak memory of a process tree."""

import sys

import pytest

from benchmarks import measure


def fake_rounds(monkeypatch, loads, values, **options):
    """measure.rounds of two measurements "a" and "b" whose samples see ``loads`` and return ``values`` in the order
    they run (every other round runs "b" first)."""
    loads, values = iter(loads), iter(values)
    monkeypatch.setattr(measure, "sample", lambda measure_fn: measure.Sample(measure_fn(), 1.0, 1.0, next(loads)))
    return measure.rounds({"a": lambda: next(values), "b": lambda: next(values)}, quiet_wait=0,
                          log=lambda message: None, **options)


def test_rounds_repeat_a_disturbed_round_and_ratios_skip_it(monkeypatch):
    done = fake_rounds(monkeypatch, [0.0, 0.0, 1.5, 1.5, 0.0, 0.0], [2.0, 1.0, 9.0, 9.0, 3.0, 1.0], count=2,
                       budget=measure.Budget(60), max_extra=1)
    assert len(done) == 3
    summary = measure.ratio_summary(done, "a", "b")
    assert summary["ratio"] == 2.5 and summary["rounds"] == 2 and summary["dropped_rounds"] == 1


def test_rounds_alternate_their_order(monkeypatch):
    order = []
    monkeypatch.setattr(measure, "sample", lambda measure_fn: measure.Sample(measure_fn(), 1.0, 1.0, 0.0))
    measure.rounds({"a": lambda: order.append("a") or 1.0, "b": lambda: order.append("b") or 1.0}, 3,
                   measure.Budget(60), max_extra=0, quiet_wait=0, log=lambda message: None)
    assert order == ["a", "b", "b", "a", "a", "b"]


def test_a_spent_budget_still_runs_every_round_asked_for_but_no_extra_one(monkeypatch):
    done = fake_rounds(monkeypatch, [1.5] * 6, [2.0, 1.0, 1.0, 3.0, 4.0, 1.0], count=3, budget=measure.Budget(-1),
                       max_extra=2)
    assert len(done) == 3
    summary = measure.ratio_summary(done, "a", "b")
    assert (summary["ratio"], summary["ratio_min"], summary["ratio_max"], summary["rounds"]) == (3.0, 2.0, 4.0, 3)
    assert summary["all_disturbed"] is True  # no quiet round to use: all three are reported, and said to be


@pytest.mark.slow
def test_peak_memory_covers_the_whole_process_tree():
    grandchild = "import time; block = bytearray(150 * 2**20); time.sleep(1)"
    child = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {grandchild!r}]); print('done')"
    result = measure.run_with_peak_memory([sys.executable, "-c", child])
    assert result["returncode"] == 0 and result["stdout"] == "done\n"
    assert result["tree_pss"] > 150 * 2**20 > result["main_hwm"]


@pytest.mark.slow
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

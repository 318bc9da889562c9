"""library.training.phases and the run loop's evaluation log of a run in phases."""

import json

from library.configuration.config import Config
from library.experiment import Phase
from library.evaluation.evaluator import EVALUATIONS_FILE, EvaluationLog
from library.training.phases import describe, phase_settings

SETTINGS = Config({"model_dir": "out/m", "train_epochs": 3, "learning_rate": 1e-5},
                  {"model_dir": "project.yaml: x", "train_epochs": "command line", "learning_rate": "hyperparameters"})
HEAD = Phase("head", {"train_epochs": 30, "learning_rate": 1e-3}, "the head alone")
WHOLE = Phase("fine_tuning", {}, "the whole network")


def test_a_phase_has_its_own_values_and_a_folder_of_model_dir_unless_it_is_the_last():
    head = phase_settings(SETTINGS, HEAD, last=False)
    assert head.values == {"model_dir": "out/m/head", "train_epochs": 30, "learning_rate": 1e-3}
    assert head.sources == {"model_dir": "phase head: a folder of model_dir", "train_epochs": "phase head",
                            "learning_rate": "phase head"}
    whole = phase_settings(SETTINGS, WHOLE, last=True)
    assert (whole.values, whole.sources) == (SETTINGS.values, SETTINGS.sources)


def test_print_config_describes_each_phase_and_nothing_without_phases():
    assert describe((), SETTINGS) == ""
    assert describe((HEAD, WHOLE), SETTINGS).splitlines() == [
        "# training in 2 phases, one after the other, each with its own steps and epochs:",
        "#   head: the head alone; in out/m/head (train_epochs 30, learning_rate 0.001)",
        "#   fine_tuning: the whole network; in out/m"]


def test_each_phase_reads_its_own_evaluations_from_the_one_log(tmp_path):
    head = EvaluationLog(str(tmp_path), "head")
    head.append({"global_step": 30, "loss": 1.0, "new_best": True})
    head.append({"global_step": 60, "loss": 1.5, "new_best": False})
    tuned = EvaluationLog(str(tmp_path), "fine_tuning")
    assert (tuned.last_step, tuned.evaluations_without_improvement()) == (None, 0)
    for step, improved in ((10, False), (20, True), (30, False), (40, False)):
        tuned.append({"global_step": step, "loss": 1.0, "new_best": improved})
    assert (tuned.last_step, tuned.evaluations_without_improvement()) == (40, 2)
    again = EvaluationLog(str(tmp_path), "head")  # as a resumed run reads it
    assert (again.last_step, again.evaluations_without_improvement()) == (60, 1)
    lines = [json.loads(line) for line in (tmp_path / EVALUATIONS_FILE).read_text().splitlines()]
    assert [(line["phase"], line["global_step"]) for line in lines] == [
        ("head", 30), ("head", 60), ("fine_tuning", 10), ("fine_tuning", 20), ("fine_tuning", 30), ("fine_tuning", 40)]
    # A run without phases writes no phase, and an entry of an older run (no new_best) ends a count.
    plain = EvaluationLog(str(tmp_path / "plain"))
    (tmp_path / "plain").mkdir()
    plain.append({"global_step": 5, "loss": 2.0})
    plain.append({"global_step": 10, "loss": 2.0, "new_best": False})
    assert "phase" not in plain.entries[0] and plain.evaluations_without_improvement() == 1

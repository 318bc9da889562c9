"""run.py training in phases (the head first on cached features, then the whole network) and stopping early."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import run
from library.evaluation.best_checkpoint import BestCheckpoint
from tests.helpers import ROOT, tf, STEPS_PER_EPOCH, run_main, evaluations

MODULE_MEAN = "feature_extractor/conv2/batch_norm/moving_mean"
MODULE_KERNEL = "feature_extractor/conv2/conv/kernel"
HEAD_KERNEL = "head/logits/kernel"


@pytest.fixture(scope="module")
def pretrained(project, trained_once, tmp_path_factory):  # noqa: F811 (fixtures)
    """A hub module exported from the trained tiny run: a pretrained feature extractor (with batch norm)."""
    module = str(tmp_path_factory.mktemp("pretrained") / "module")
    assert run_main(project, trained_once, "--mode", "export_hub", "--output", module) == 0
    return module


def in_phases(pretrained, *extra):
    """Options of a run that trains the head 2 epochs, then fine-tunes the whole network 2 epochs."""
    return ("--hub_module", pretrained, "--fine_tuning", "--head_epochs", "2", "--train_epochs", "2",
            "--epochs_between_evals", "1", *extra)


def module_value(pretrained, name):
    """A variable of the pretrained module as it was exported."""
    return tf.train.load_variable(os.path.join(pretrained, "variables", "variables"), name.split("/", 1)[1])


def test_the_head_trains_first_on_cached_features_then_the_whole_network_from_it(project, pretrained, tmp_path,
                                                                                  capsys):  # noqa: F811
    assert run_main(project, tmp_path, *in_phases(pretrained)) == 0
    out = capsys.readouterr().out
    head, model = tmp_path / "model" / "head", tmp_path / "model"
    steps = 2 * STEPS_PER_EPOCH
    assert tf.train.load_variable(str(head), "global_step") == steps
    assert tf.train.load_variable(str(model), "global_step") == steps
    assert [(entry["phase"], entry["epoch"], entry["global_step"]) for entry in evaluations(tmp_path)] == [
        ("head", 2, steps), ("fine_tuning", 1, STEPS_PER_EPOCH), ("fine_tuning", 2, steps)]
    assert os.listdir(tmp_path / "model" / "head-feature-cache")  # the head trained on cached features
    lines = out.splitlines()
    assert f"head: 24 training images, {STEPS_PER_EPOCH} steps an epoch, {steps} steps in all; model_dir {head}" in lines
    assert ("frozen, only the head trains" in lines[lines.index(next(line for line in lines if line.startswith("head:")))
                                                     - 1])
    assert (f"fine_tuning: 24 training images, {STEPS_PER_EPOCH} steps an epoch, {steps} steps in all; model_dir "
            f"{model}, starting from {head / f'model.ckpt-{steps}'}") in lines
    assert any(line.startswith(f"head epoch 2/2  step {steps}  eval loss") for line in lines)
    assert any(line.startswith(f"fine_tuning epoch 1/2  step {STEPS_PER_EPOCH}  eval loss") for line in lines)
    best = BestCheckpoint(str(tmp_path / "best")).record
    assert best["loss"] == min(entry["loss"] for entry in evaluations(tmp_path))
    assert lines[-1].startswith(f"done: head {steps} steps, fine_tuning {steps} steps; best eval loss {best['loss']:.4f} "
                                f"at {best['phase']} epoch {best['epoch']:g}")
    assert (model / "hparams").is_dir() and not (head / "hparams").exists()  # one HParams row for the whole run

    # Fine-tuning starts from the trained head and the pretrained module, with an optimizer of its own.
    start = str(model / "model.ckpt-0")
    np.testing.assert_array_equal(tf.train.load_variable(start, HEAD_KERNEL), tf.train.load_variable(str(head), HEAD_KERNEL))
    assert not np.array_equal(tf.train.load_variable(start, HEAD_KERNEL),
                              tf.train.load_variable(str(head / "model.ckpt-0"), HEAD_KERNEL))
    np.testing.assert_array_equal(tf.train.load_variable(start, MODULE_KERNEL), module_value(pretrained, MODULE_KERNEL))
    np.testing.assert_array_equal(tf.train.load_variable(start, f"{HEAD_KERNEL}/Adam"), 0)
    # Batch norm frozen (a pretrained module's default): the stored statistics stay bit for bit, the weights learn.
    end = str(model / f"model.ckpt-{steps}")
    np.testing.assert_array_equal(tf.train.load_variable(end, MODULE_MEAN), module_value(pretrained, MODULE_MEAN))
    assert not np.array_equal(tf.train.load_variable(end, MODULE_KERNEL), module_value(pretrained, MODULE_KERNEL))
    assert "recalibrat" not in out  # nothing to recalibrate, and no recalibration graph built to find that out

    # Run again: nothing is trained or evaluated again.
    state = {path: os.path.getmtime(path) for path in (head / "checkpoint", model / "checkpoint")}
    assert run_main(project, tmp_path, *in_phases(pretrained)) == 0
    assert {path: os.path.getmtime(path) for path in state} == state
    assert len(evaluations(tmp_path)) == 3
    assert "trained before" in capsys.readouterr().out


@pytest.mark.slow
def test_a_head_snapshot_that_fine_tuning_never_beats_stays_the_best_and_serves_the_fine_tuning_configuration(
        project, pretrained, tmp_path, capsys):  # noqa: F811 (fixtures)
    # Fine-tuning at a learning rate that wrecks the network: its evaluations never beat the head's.
    wrecking = in_phases(pretrained, "--learning_rate", "1.0", "--train_epochs", "1")
    assert run_main(project, tmp_path, *wrecking) == 0
    logged = evaluations(tmp_path)
    assert [(entry["phase"], entry["new_best"]) for entry in logged] == [("head", True), ("fine_tuning", False)]
    record = BestCheckpoint(str(tmp_path / "best")).record
    assert (record["phase"], record["step"]) == ("head", 2 * STEPS_PER_EPOCH)
    assert f"best eval loss {record['loss']:.4f} at head epoch 2," in capsys.readouterr().out.splitlines()[-1]
    # The head's snapshot, restored into the fine-tuning model (images through the module, not cached features),
    # evaluates to what the head phase recorded (up to float rounding: the features are computed again).
    assert run_main(project, tmp_path, *wrecking, "--mode", "evaluate", "--model", "best") == 0
    printed = dict(line.split(" = ") for line in capsys.readouterr().out.splitlines() if " = " in line)
    assert float(printed["loss"]) == pytest.approx(record["loss"], abs=1e-5)
    assert float(printed["accuracy"]) == record["metrics"]["accuracy"]
    assert int(printed["global_step"]) == record["step"]


# run.py that stops for good at a point of a training in phases, for a SIGKILL there: in PAUSE_PHASE at its step
# PAUSE_STEP (a periodic checkpoint written two steps before), or at the phase's start when PAUSE_STEP is -1.
PAUSING_RUN = """
import os, sys, time
from library.training import hooks, run_loop
pause_phase, pause_step = os.environ["PAUSE_PHASE"], int(os.environ["PAUSE_STEP"])
current = {}
announce, after_run = run_loop.Training.announce, hooks.StopOnNonFiniteLossHook.after_run

def pause():
    print("paused", file=sys.stderr, flush=True)
    time.sleep(600)

def announcing(self, step):
    current["phase"] = self.run.phase
    announce(self, step)
    if self.run.phase == pause_phase and pause_step < 0:
        pause()

def stepping(self, run_context, run_values):
    after_run(self, run_context, run_values)
    step = int(run_values.results["step"]) + 1  # read beside the train op: now and then one more
    if current["phase"] == pause_phase and step >= pause_step - 2 and not current.get("slept"):
        current["slept"] = True
        time.sleep(1.5)  # save_checkpoints_secs 1: a checkpoint falls before the pause
    if current["phase"] == pause_phase and step >= pause_step:
        pause()

run_loop.Training.announce, hooks.StopOnNonFiniteLossHook.after_run = announcing, stepping
import run
sys.exit(run.main(sys.argv[1:]))
"""


def checkpoint_step(directory):
    """The step of the latest checkpoint in ``directory``; 0 when there is none."""
    latest = tf.train.latest_checkpoint(str(directory))
    return int(latest.rsplit("-", 1)[1]) if latest else 0


@pytest.mark.parametrize("phase, step", [("head", 4), ("fine_tuning", -1), ("fine_tuning", 4)],
                         ids=["in_the_head_phase", "at_the_phase_boundary", "in_the_fine_tuning_phase"])
@pytest.mark.slow
def test_sigkill_anywhere_in_a_run_in_phases_then_the_same_command_ends_at_the_same_steps(
        project, pretrained, tmp_path, phase, step):  # noqa: F811 (fixtures)
    arguments = ["--project_file", str(project), "--config_set", "tiny", "--model_dir", str(tmp_path / "model"),
                 "--best_model_dir", str(tmp_path / "best"), *in_phases(pretrained, "--save_checkpoints_secs", "1")]
    environment = {**os.environ, "PAUSE_PHASE": phase, "PAUSE_STEP": str(step)}
    process = subprocess.Popen([sys.executable, "-c", PAUSING_RUN, *arguments], cwd=ROOT, env=environment,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert any("paused" in line for line in process.stderr), "run finished before it could be killed"
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    head, model = tmp_path / "model" / "head", tmp_path / "model"
    steps = 2 * STEPS_PER_EPOCH
    killed_at = {"head": checkpoint_step(head), "fine_tuning": checkpoint_step(model)}
    head_files = {name: os.path.getmtime(head / name) for name in os.listdir(head) if name.startswith("model.ckpt-")}
    if phase == "head":
        assert 0 < killed_at["head"] < steps and not os.path.exists(model / "checkpoint")
    else:
        assert killed_at["head"] == steps and [entry["phase"] for entry in evaluations(tmp_path)][:1] == ["head"]
        assert killed_at["fine_tuning"] == (0 if step < 0 else killed_at["fine_tuning"])

    result = subprocess.run([sys.executable, os.path.join(ROOT, "run.py"), *arguments], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert checkpoint_step(head) == steps and tf.train.load_variable(str(model), "global_step") == steps
    assert [(entry["phase"], entry["global_step"]) for entry in evaluations(tmp_path)] == [
        ("head", steps), ("fine_tuning", STEPS_PER_EPOCH), ("fine_tuning", steps)]
    resumed = killed_at[phase]
    if phase == "head":
        assert f"model_dir {head}, resuming at step {resumed}" in result.stdout
    else:  # the head phase is not trained again: its checkpoints are the ones the killed run wrote
        assert f"model_dir {head}, trained before" in result.stdout
        assert {name: os.path.getmtime(head / name) for name in head_files} == head_files
        assert (f"resuming at step {resumed}" if resumed else f"starting from {head / f'model.ckpt-{steps}'}") \
            in result.stdout.splitlines()[3]
    assert result.stdout.splitlines()[-1].startswith(f"done: head {steps} steps, fine_tuning {steps} steps; best")


def test_early_stopping_ends_when_the_loss_stops_improving_and_a_resumed_run_remembers_the_count(
        project, pretrained, tmp_path, capsys):  # noqa: F811 (fixtures)
    # A head that cannot learn (its steps are below float32's resolution): the loss is the same at every evaluation.
    still = ("--hub_module", pretrained, "--no-fine_tuning", "--learning_rate", "1e-30", "--dropout_rate", "0",
             "--train_epochs", "20", "--epochs_between_evals", "1")
    assert run_main(project, tmp_path, *still, "--early_stopping_evaluations", "2") == 0
    lines = capsys.readouterr().out.splitlines()
    logged = evaluations(tmp_path)
    assert [(entry["epoch"], entry["new_best"]) for entry in logged] == [(1, True), (2, False), (3, False)]
    assert logged[0]["loss"] == logged[1]["loss"] == logged[2]["loss"]
    assert tf.train.load_variable(str(tmp_path / "model"), "global_step") == 3 * STEPS_PER_EPOCH
    assert BestCheckpoint(str(tmp_path / "best")).record["step"] == STEPS_PER_EPOCH
    assert ("early stopping: the eval loss has not improved on the best snapshot's in 2 evaluations; training ends "
            "here") in lines
    assert lines[-1].startswith(f"done: {3 * STEPS_PER_EPOCH} of {20 * STEPS_PER_EPOCH} steps (stopped early: no "
                                "better eval loss in 2 evaluations); best eval loss")

    # Run again: it stays stopped. With more patience it goes on from the count in evaluations.jsonl.
    assert run_main(project, tmp_path, *still, "--early_stopping_evaluations", "2") == 0
    assert "trained before" in capsys.readouterr().out and len(evaluations(tmp_path)) == 3
    assert run_main(project, tmp_path, *still, "--early_stopping_evaluations", "3") == 0
    assert [entry["epoch"] for entry in evaluations(tmp_path)] == [1, 2, 3, 4]
    assert tf.train.load_variable(str(tmp_path / "model"), "global_step") == 4 * STEPS_PER_EPOCH
    assert "no better eval loss in 3 evaluations" in capsys.readouterr().out


def test_print_config_explains_the_phases(project, pretrained, capsys):  # noqa: F811 (fixtures)
    assert run.main(["--project_file", str(project), "--config_set", "tiny", "--model_dir", "out/x",
                     *in_phases(pretrained), "--print_config"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-3:] == [
        "# training in 2 phases, one after the other, each with its own steps and epochs:",
        "#   head: 2 epochs of the head alone on the frozen module's cached features, evaluated at the end; in "
        "out/x/head (fine_tuning False, cache_features True, head_epochs 0, train_epochs 2, epochs_between_evals 2, "
        "learning_rate 0.001, learning_rate_warmup_epochs 0.0, batch_norm_recalibration_batches 0)",
        "#   fine_tuning: 2 epochs of the whole network from that head; in out/x"]


@pytest.mark.parametrize("argv, message", [
    (["--head_epochs", "2"], "head_epochs 2: hub_module small_cnn starts from random weights, so a head trained first "
                             "on its features learns nothing; set head_epochs 0"),
    (["--fine_tuning_batch_norm", "frozen"], "fine_tuning_batch_norm frozen: hub_module small_cnn starts from random "
                                             "weights, whose stored batch-norm statistics mean nothing; use train"),
    (["--fine_tuning_batch_norm", "stored"], "fine_tuning_batch_norm: 'stored' is not a valid {frozen,train}"),
    (["--early_stopping_evaluations", "-1"], "early_stopping_evaluations: -1 is not a valid int >= 0"),
    (["--module_learning_rate_multiplier", "0"], "module_learning_rate_multiplier: 0.0 is not a valid float > 0"),
])
def test_fine_tuning_mistakes_are_one_line_errors(project, tmp_path, capsys, argv, message):  # noqa: F811
    assert run_main(project, tmp_path, *argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "model").exists()


def test_a_cluster_refuses_phases_and_early_stopping_before_anything_is_written(project, pretrained, tmp_path, capsys,
                                                                                monkeypatch):  # noqa: F811
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["127.0.0.1:1"], "ps": ["127.0.0.1:2"]},
                                                "task": {"type": "chief", "index": 0}}))
    cluster = ("--distribution", "parameter_server")
    for argv, message in ((in_phases(pretrained), "distribution parameter_server: a training run in phases (head, "
                                                   "fine_tuning) runs on one machine only"),
                          (("--early_stopping_evaluations", "2"), "early_stopping_evaluations: with distribution "
                                                                  "parameter_server the evaluator task")):
        assert run_main(project, tmp_path, *cluster, *argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {message}") and err.count("\n") == 1, err
        assert not (tmp_path / "model").exists()


@pytest.mark.slow
def test_two_towers_train_both_phases(project, pretrained, tmp_path, capsys):  # noqa: F811 (fixtures)
    assert run_main(project, tmp_path, *in_phases(pretrained), "--distribution", "mirrored", "--num_gpus", "2") == 0
    assert "tower_1/" in (tmp_path / "model" / "head" / "graph.pbtxt").read_text()
    assert "tower_1/" in (tmp_path / "model" / "graph.pbtxt").read_text()
    assert [(entry["phase"], entry["global_step"]) for entry in evaluations(tmp_path)] == [
        ("head", 2 * STEPS_PER_EPOCH), ("fine_tuning", STEPS_PER_EPOCH), ("fine_tuning", 2 * STEPS_PER_EPOCH)]

"""run.py training in phases (the head first on cached features, then the whole network) and stopping early."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import run
from library.best_checkpoint import BestCheckpoint
from tests.conftest import ROOT, tf
from tests.test_run import STEPS_PER_EPOCH, evaluations, project, run_main, trained_once  # noqa: F401 (fixtures)

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
    assert "batch norm: nothing to recalibrate" in out

    # Run again: nothing is trained or evaluated again.
    state = {path: os.path.getmtime(path) for path in (head / "checkpoint", model / "checkpoint")}
    assert run_main(project, tmp_path, *in_phases(pretrained)) == 0
    assert {path: os.path.getmtime(path) for path in state} == state
    assert len(evaluations(tmp_path)) == 3
    assert "trained before" in capsys.readouterr().out

"""Shared test fixtures: a graph per test; the tiny data set, a trained run and a small frozen module, made once."""

import os
import shutil
import textwrap

import pytest

from tests.helpers import tf, BATCH, IMAGE_SIZE, write_images, run_main

import convert_dataset  # noqa: E402 (after tests.helpers set up TensorFlow)
from library.hub import hub_module  # noqa: E402
from project.networks import NETWORKS  # noqa: E402


@pytest.fixture(autouse=True)
def fresh_graph():
    """Every test builds its ops in a graph of its own."""
    with tf.Graph().as_default() as graph:
        yield graph


@pytest.fixture(scope="session")
def project(tmp_path_factory):
    """A converted data set and a project.yaml whose `tiny` set trains on it; returns the project file."""
    root = tmp_path_factory.mktemp("project")
    for split, seed in (("train", 0), ("test", 1)):
        write_images(root / "images" / split, seed)
        argv = ["--dataset_dir", str(root / "images" / split), "--tfrecord_filename", split,
                "--tfrecord_dir", str(root / "data" / split), "--max_edge", "20", "--num_shards", "2", "--num_workers", "1"]
        if split == "test":
            argv += ["--labels_file", str(root / "data" / "train" / "labels.txt")]
        assert convert_dataset.main(argv) == 0
    (root / "hyperparameters.yaml").write_text(textwrap.dedent(f"""\
        tiny:
          hub_module: small_cnn
          image_size: {IMAGE_SIZE}
          fine_tuning: true
          learning_rate: 1e-2
          dropout_rate: 0.
          min_crop_area: 0.8
    """))
    (root / "project.yaml").write_text(textwrap.dedent(f"""\
        tiny:
          hyperparameter_set: tiny
          train_batch_size: {BATCH}
          eval_batch_size: 5
          train_epochs: 4
          epochs_between_evals: 2
          random_seed: 0
          shuffle_buffer: 32
          train_data: {root}/data/train/train-*.tfrecord
          eval_data: {root}/data/test/test-*.tfrecord
          labels_file: {root}/data/train/labels.txt
    """))
    return root / "project.yaml"


@pytest.fixture(scope="session")
def trained_once(project, tmp_path_factory):
    """model_dir and best_model_dir of one 4-epoch run, trained once for the tests that only need a trained model."""
    out = tmp_path_factory.mktemp("trained")
    assert run_main(project, out, "--train_epochs", "4") == 0
    return out


@pytest.fixture
def trained(trained_once, tmp_path):
    """A copy of the shared trained run in this test's tmp_path, which the test may change at will."""
    for name in ("model", "best"):
        shutil.copytree(trained_once / name, tmp_path / name)
    return tmp_path


@pytest.fixture(scope="session")
def frozen_module(tmp_path_factory):
    """small_cnn at 16x16 as a module on disk, marked pretrained so that the head can train on it frozen."""
    module_dir = str(tmp_path_factory.mktemp("module") / "small_cnn")
    hub_module.export_spec(hub_module.create_spec(NETWORKS["small_cnn"], 16, {}, seed=0), module_dir)
    os.remove(os.path.join(module_dir, hub_module.RANDOM_WEIGHTS_FILE))
    return module_dir

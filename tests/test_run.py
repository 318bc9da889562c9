"""run.py end to end on a tiny generated data set: train, resume, best snapshot, other modes."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from PIL import Image

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import convert_dataset
import run
from library import evaluation_report
from library.best_checkpoint import BestCheckpoint
from library.run_loop import EVALUATIONS_FILE
from tests.conftest import ROOT, tf

COLORS = {"blue": (20, 40, 220), "green": (30, 200, 40), "red": (220, 30, 30)}
IMAGES_PER_CLASS = 8
BATCH = 8
STEPS_PER_EPOCH = len(COLORS) * IMAGES_PER_CLASS // BATCH


def write_images(folder, seed):
    """Noisy solid-color 20x20 JPEGs, one class folder per color."""
    rng = np.random.default_rng(seed)
    for name, color in COLORS.items():
        os.makedirs(folder / name)
        for index in range(IMAGES_PER_CLASS):
            pixels = np.clip(np.array(color) + rng.normal(0, 25, (20, 20, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{index}.jpg", quality=95)


@pytest.fixture(scope="module")
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
    (root / "hyperparameters.yaml").write_text(textwrap.dedent("""\
        tiny:
          hub_module: small_cnn
          image_size: 16
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


def run_main(project_file, out, *argv):
    """run.main in this process with the tiny set, its directories under ``out``."""
    return run.main(["--project_file", str(project_file), "--config_set", "tiny",
                     "--model_dir", str(out / "model"), "--best_model_dir", str(out / "best"), *argv])


def evaluations(out):
    with open(out / "model" / EVALUATIONS_FILE) as handle:
        return [json.loads(line) for line in handle]


def assert_reported(out, steps):
    """Each evaluation at ``steps`` has its JSON report beside evaluations.jsonl and its images and per-class scalars
    in the eval event files; evaluations.jsonl and the best record keep scalars only."""
    for step in steps:
        report = json.loads((out / "model" / f"evaluation-{step}.json").read_text())
        assert report["global_step"] == step and report["class_names"] == sorted(COLORS)
        assert np.sum(report["confusion_matrix"]) == report["examples"] == len(COLORS) * IMAGES_PER_CLASS
        assert [entry["support"] for entry in report["per_class"]] == [IMAGES_PER_CLASS] * len(COLORS)
        assert len(report["mistakes"]) == min(report["examples"] - report["correct"], 16)
    events = EventAccumulator(str(out / "model" / "eval"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert [image.step for image in events.Images("confusion_matrix")] == steps
    assert [scalar.step for scalar in events.Scalars("recall_per_class/red")] == steps
    for entry in evaluations(out):
        assert all(np.ndim(value) == 0 for value in entry.values())
    assert "confusion_matrix" not in BestCheckpoint(str(out / "best")).record["metrics"]


def test_train_evaluates_each_cycle_and_keeps_the_best(project, tmp_path, capsys):
    assert run_main(project, tmp_path) == 0
    out = capsys.readouterr().out
    assert tf.train.load_variable(str(tmp_path / "model"), "global_step") == 4 * STEPS_PER_EPOCH
    logged = evaluations(tmp_path)
    assert [entry["global_step"] for entry in logged] == [2 * STEPS_PER_EPOCH, 4 * STEPS_PER_EPOCH]
    assert [entry["epoch"] for entry in logged] == [2, 4]
    record = BestCheckpoint(str(tmp_path / "best")).record
    assert record["loss"] == pytest.approx(min(entry["loss"] for entry in logged))
    assert "epoch 2/4  step 6  eval loss" in out and "epoch 4/4  step 12" in out
    assert f"24 training images, {STEPS_PER_EPOCH} steps an epoch, 12 steps in all" in out
    config = (tmp_path / "model" / "config.yaml").read_text()
    assert "train_batch_size: 8  # project.yaml: tiny" in config
    assert_reported(tmp_path, [2 * STEPS_PER_EPOCH, 4 * STEPS_PER_EPOCH])

    # A finished run run again trains no further.
    mtime = os.path.getmtime(tmp_path / "model" / "checkpoint")
    assert run_main(project, tmp_path) == 0
    assert os.path.getmtime(tmp_path / "model" / "checkpoint") == mtime
    assert len(evaluations(tmp_path)) == 2

    # model: best evaluates the snapshot and reproduces its recorded loss; its report is printed and written.
    capsys.readouterr()
    report_file = tmp_path / "report.json"
    assert run_main(project, tmp_path, "--mode", "evaluate", "--model", "best", "--report_file", str(report_file)) == 0
    out = capsys.readouterr().out
    printed = dict(line.split(" = ") for line in out.splitlines() if " = " in line)
    assert float(printed["loss"]) == pytest.approx(record["loss"], rel=1e-5)
    assert int(printed["global_step"]) == record["step"]
    report = json.loads(report_file.read_text())
    assert report == json.loads((tmp_path / "model" / f"evaluation-{record['step']}.json").read_text())
    assert evaluation_report.table(report) in out
    table = out.splitlines()[out.splitlines().index(evaluation_report.table(report).splitlines()[0]) + 1:]
    for line, entry in zip(table, report["per_class"]):
        name, precision, recall, f1, support = line.split()
        assert name == entry["class"] and int(support) == entry["support"]
        assert float(recall) == pytest.approx(entry["recall"], abs=5e-5)


def test_same_seed_same_training(project, tmp_path):
    for name in ("a", "b"):
        assert run_main(project, tmp_path / name, "--train_epochs", "2") == 0
    first, second = (evaluations(tmp_path / name)[-1]["loss"] for name in ("a", "b"))
    assert first == second
    kernel = "feature_extractor/conv0/conv/kernel"
    np.testing.assert_array_equal(
        tf.train.load_variable(str(tmp_path / "a" / "model"), kernel),
        tf.train.load_variable(str(tmp_path / "b" / "model"), kernel),
    )


def test_sigkill_mid_training_then_resume_ends_at_exact_step(project, tmp_path):
    epochs = 60
    command = [sys.executable, os.path.join(ROOT, "run.py"), "--project_file", str(project), "--config_set", "tiny",
               "--model_dir", str(tmp_path / "model"), "--best_model_dir", str(tmp_path / "best"),
               "--train_epochs", str(epochs), "--epochs_between_evals", "20", "--save_checkpoints_secs", "1"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        step = 0
        while time.monotonic() < deadline and process.poll() is None:
            checkpoint = tf.train.latest_checkpoint(str(tmp_path / "model"))
            step = int(checkpoint.rsplit("-", 1)[1]) if checkpoint else 0
            if step > 20 * STEPS_PER_EPOCH:  # past the first evaluation
                break
            time.sleep(0.2)
        assert process.poll() is None, "run finished before it could be killed; make it longer"
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert 0 < step < epochs * STEPS_PER_EPOCH

    best_before = BestCheckpoint(str(tmp_path / "best")).record
    assert best_before is not None
    assert subprocess.run(command, cwd=ROOT, capture_output=True, timeout=300).returncode == 0
    assert tf.train.load_variable(str(tmp_path / "model"), "global_step") == epochs * STEPS_PER_EPOCH
    steps = [entry["global_step"] for entry in evaluations(tmp_path)]
    assert steps == sorted(set(steps)) and steps[-1] == epochs * STEPS_PER_EPOCH
    best = BestCheckpoint(str(tmp_path / "best"))
    assert best.record["loss"] <= best_before["loss"]
    assert tf.train.latest_checkpoint(str(tmp_path / "best")) == best.checkpoint_path
    reader = tf.train.load_checkpoint(best.checkpoint_path)
    assert reader.get_tensor("global_step") == best.record["step"]


def test_resumed_run_never_overwrites_a_better_snapshot(project, tmp_path):
    assert run_main(project, tmp_path, "--train_epochs", "2") == 0
    record_path = tmp_path / "best" / (os.path.basename(BestCheckpoint(str(tmp_path / "best")).checkpoint_path) + ".json")
    record = json.loads(record_path.read_text())
    record["loss"] = 1e-9  # a snapshot better than anything the next cycle can reach
    record_path.write_text(json.dumps(record))
    assert run_main(project, tmp_path, "--train_epochs", "4") == 0
    assert BestCheckpoint(str(tmp_path / "best")).record["step"] == 2 * STEPS_PER_EPOCH
    assert len(evaluations(tmp_path)) == 2


def test_non_finite_loss_stops_with_the_step_and_keeps_checkpoints(project, tmp_path, capsys):
    assert run_main(project, tmp_path, "--train_epochs", "2") == 0
    best = BestCheckpoint(str(tmp_path / "best")).record
    capsys.readouterr()
    code = run_main(project, tmp_path, "--train_epochs", "4", "--learning_rate", "1e30", "--optimizer", "SGD")
    err = capsys.readouterr().err
    assert code == 1
    assert "error: training stopped: loss became nan at step" in err or "loss became inf at step" in err
    assert tf.train.load_variable(str(tmp_path / "model"), "global_step") == 2 * STEPS_PER_EPOCH
    assert BestCheckpoint(str(tmp_path / "best")).record == best
    assert np.isfinite(tf.train.load_variable(str(tmp_path / "model"), "feature_extractor/conv0/conv/kernel")).all()


def test_predict_prints_one_line_per_image_and_writes_csv(project, tmp_path, capsys):
    assert run_main(project, tmp_path, "--train_epochs", "2") == 0
    folder = project.parent / "images" / "test" / "red"
    capsys.readouterr()
    predictions = tmp_path / "predictions.csv"
    assert run_main(project, tmp_path, "--mode", "predict", "--predict_input", str(folder),
                    "--predictions_file", str(predictions)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == IMAGES_PER_CLASS
    files = sorted(line.split("\t")[0] for line in lines)
    assert files == sorted(str(folder / f"{index}.jpg") for index in range(IMAGES_PER_CLASS))
    for line in lines:
        _, class_name, probability = line.split("\t")
        assert class_name in COLORS and 0 < float(probability) <= 1
    with open(predictions, newline="") as handle:
        assert list(csv.reader(handle)) == [["file", "class", "probability"]] + [line.split("\t") for line in lines]


def test_predict_csv_quotes_odd_file_names_and_gives_the_top_k(project, tmp_path, capsys):
    assert run_main(project, tmp_path, "--train_epochs", "2") == 0
    names = ["a,b.jpg", 'say "cheese".jpg', "plain.jpg"]
    for name in names:
        shutil.copy(project.parent / "images" / "test" / "red" / "0.jpg", tmp_path / name)
    predictions = tmp_path / "out" / "predictions.csv"
    capsys.readouterr()
    assert run_main(project, tmp_path, "--mode", "predict", "--predict_input", str(tmp_path), "--top_k", "3",
                    "--predictions_file", str(predictions)) == 0
    with open(predictions, newline="") as handle:
        header, *rows = list(csv.reader(handle))
    assert header == ["file", "class", "probability", "class_1", "probability_1", "class_2", "probability_2",
                      "class_3", "probability_3"]
    assert sorted(os.path.basename(row[0]) for row in rows) == sorted(names)
    for row in rows:
        assert row[1:3] == row[3:5] and sorted(row[3::2]) == sorted(COLORS)
        assert float(row[4]) >= float(row[6]) >= float(row[8])
    assert "\n".join("\t".join(row) for row in rows) == capsys.readouterr().out.strip()


def test_export_then_serve_jpeg_bytes(project, tmp_path, capsys):
    assert run_main(project, tmp_path, "--train_epochs", "4") == 0
    capsys.readouterr()
    assert run_main(project, tmp_path, "--mode", "export", "--export_dir", str(tmp_path / "export"), "--model", "best") == 0
    assert "SavedModel of" in capsys.readouterr().out
    (saved_model,) = os.listdir(tmp_path / "export")
    folder = project.parent / "images" / "test"
    jpegs = [(folder / name / "0.jpg").read_bytes() for name in sorted(COLORS)]
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        meta_graph = tf.compat.v1.saved_model.load(session, ["serve"], str(tmp_path / "export" / saved_model))
        signature = meta_graph.signature_def["serving_default"]
        outputs = session.run(
            {key: value.name for key, value in signature.outputs.items()},
            {signature.inputs["image_bytes"].name: jpegs},
        )
    assert outputs["probabilities"].shape == (3, 3)
    np.testing.assert_allclose(outputs["probabilities"].sum(axis=1), 1, rtol=1e-5)
    assert [name.decode() for name in outputs["class_name"]] == sorted(COLORS)


def test_export_hub_writes_a_module(project, tmp_path, capsys):
    assert run_main(project, tmp_path, "--train_epochs", "2") == 0
    assert run_main(project, tmp_path, "--mode", "export_hub", "--output", str(tmp_path / "hub")) == 0
    assert (tmp_path / "hub" / "tfhub_module.pb").exists()
    capsys.readouterr()
    # The exported module is then usable as a pretrained hub_module.
    assert run_main(project, tmp_path / "again", "--hub_module", str(tmp_path / "hub"), "--train_epochs", "2") == 0
    assert "eval loss" in capsys.readouterr().out


def test_dry_run_writes_nothing(project, tmp_path, capsys):
    assert run_main(project, tmp_path, "--dry_run") == 0
    assert "dry run: one training step and one evaluation batch ran" in capsys.readouterr().out
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("argv, message", [
    (["--mode", "evaluate"], "model: latest: no checkpoint in"),
    (["--mode", "evaluate", "--model", "/nowhere/model.ckpt-1"], "model: no checkpoint at /nowhere/model.ckpt-1"),
    (["--mode", "predict"], "predict mode needs --predict_input"),
    (["--mode", "export"], "export mode needs --export_dir"),
    (["--labels_file", "/nowhere/labels.txt"], "labels_file: /nowhere/labels.txt not found"),
    (["--train_data", "/nowhere/*.tfrecord"], "train_data: no file matches /nowhere/*.tfrecord"),
    (["--hub_module", "/nowhere/module"], "hub_module '/nowhere/module' is neither a project network"),
    (["--train_batch_size", "1000"], "train_batch_size: 1000 is larger than the 24 training images"),
    (["--mode", "predict", "--top_k", "4"], "top_k: 4 is not between 0 and the 3 classes of"),
])
def test_user_mistakes_are_one_line_errors(project, tmp_path, capsys, argv, message):
    assert run_main(project, tmp_path, *argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_parameter_server_cluster_trains_evaluates_and_snapshots(project, tmp_path):
    command = [sys.executable, "-m", "library.local_cluster", "--workers", "1", "--ps", "1", "--evaluator", "--",
               "run.py", "--project_file", str(project), "--config_set", "tiny", "--distribution", "parameter_server",
               "--model_dir", str(tmp_path / "model"), "--best_model_dir", str(tmp_path / "best")]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, start_new_session=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # Two training tasks each step on half the global batch: an epoch is twice the steps.
    total_steps = 4 * (len(COLORS) * IMAGES_PER_CLASS // (BATCH // 2))
    assert tf.train.load_variable(str(tmp_path / "model"), "global_step") == total_steps
    assert evaluations(tmp_path)[-1]["global_step"] == total_steps
    best = BestCheckpoint(str(tmp_path / "best"))
    assert tf.train.latest_checkpoint(str(tmp_path / "best")) == best.checkpoint_path
    assert best.record["loss"] == pytest.approx(min(entry["loss"] for entry in evaluations(tmp_path)))
    assert "[evaluator]" in result.stdout and "[chief]" in result.stdout
    assert_reported(tmp_path, [entry["global_step"] for entry in evaluations(tmp_path)])


def test_mirrored_on_one_device_trains_and_strategies_over_several_are_refused(project, tmp_path, capsys, monkeypatch):
    assert run_main(project, tmp_path, "--distribution", "mirrored", "--train_epochs", "2") == 0
    assert tf.train.load_variable(str(tmp_path / "model"), "global_step") == 2 * STEPS_PER_EPOCH
    capsys.readouterr()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["127.0.0.1:1"]}, "task": {"type": "chief", "index": 0}}))
    assert run_main(project, tmp_path / "collective", "--distribution", "multi_worker") == 2
    err = capsys.readouterr().err
    assert err == ("error: distribution multi_worker: this model's variables cannot be mirrored by tf.distribute "
                   "(see SUPPORTS_DISTRIBUTION_STRATEGIES in the experiment); use distribution parameter_server for "
                   "several machines or GPUs, or none\n")

"""run.py end to end on a tiny generated data set: train, resume, best snapshot, other modes."""

import csv
import errno
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import run
from library import model_directory
from library.configuration import config
from library.evaluation import hparams_summary, recalibration
from library.evaluation import report as evaluation_report
from library.evaluation.best_checkpoint import BestCheckpoint
from library.evaluation.evaluator import EVALUATIONS_FILE
from library.hub import keras_application, write_module
from project.experiment import ImageClassifier
from project import preprocessing
from project.options import OPTIONS
from tests.helpers import (BATCH, COLORS, IMAGE_SIZE, IMAGES_PER_CLASS, ROOT, STEPS_PER_EPOCH, encoded, evaluations,
                           hold_lock_in_another_process, noise, run_main, serve, tf)

TWO_TOWERS = ("--distribution", "mirrored", "--num_gpus", "2")  # two virtual CPU devices on a machine without GPUs
EVAL_CROP_FRACTION = 0.875  # the default, which the tiny set keeps
FLOWERS = pathlib.Path(ROOT).parent / "shared" / "data" / "flowers_small"  # real photos, where this machine has them


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
    assert f"batch norm: 10 moving statistics recalibrated on {STEPS_PER_EPOCH} batches in " in out  # one pass
    assert_best_holds_recalibrated_statistics(project, tmp_path, record)
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


def recalibrated_again(project, checkpoint, directory):
    """``checkpoint`` copied to ``directory`` and recalibrated there as the tiny set's run does it."""
    os.makedirs(directory)
    for name in os.listdir(os.path.dirname(checkpoint)):
        if name.startswith(os.path.basename(checkpoint) + "."):
            shutil.copy(os.path.join(os.path.dirname(checkpoint), name), directory)
    settings, _ = config.parse(OPTIONS, ["--project_file", str(project), "--config_set", "tiny"])
    experiment = ImageClassifier()
    params = {**experiment.make_params(settings.as_dict()), "steps_per_epoch": STEPS_PER_EPOCH, "train_steps": 12}
    return recalibration.recalibrate(
        os.path.join(directory, os.path.basename(checkpoint)), experiment.model_fn,
        lambda: experiment.recalibration_input_fn(params), params,
        min(settings.batch_norm_recalibration_batches, STEPS_PER_EPOCH), make_latest=False).checkpoint  # one pass


def assert_best_holds_recalibrated_statistics(project, out, record):
    """The best snapshot is a recalibrated checkpoint: the trained weights of its step, the recalibrated statistics."""
    assert os.path.basename(record["source_checkpoint"]) == f"recalibrated.ckpt-{record['step']}"
    best = BestCheckpoint(str(out / "best")).checkpoint_path
    trained = str(out / "model" / f"model.ckpt-{record['step']}")
    again = recalibrated_again(project, trained, str(out / "again"))
    mean = "feature_extractor/conv2/batch_norm/moving_mean"
    for name, source in (("feature_extractor/conv2/conv/kernel", trained), ("head/logits/kernel", trained),
                         (mean, again), ("feature_extractor/conv2/batch_norm/moving_variance", again)):
        np.testing.assert_allclose(tf.train.load_variable(best, name), tf.train.load_variable(source, name), rtol=1e-6)
    assert not np.allclose(tf.train.load_variable(best, mean), tf.train.load_variable(trained, mean), rtol=1e-3)


def test_export_best_writes_a_saved_model_of_each_new_best_from_inside_the_training_session(project, tmp_path, capsys):
    assert run_main(project, tmp_path, "--export_best") == 0
    new_bests = capsys.readouterr().out.count("* new best")
    exports = sorted((tmp_path / "best" / "export").iterdir())
    assert new_bests >= 1 and len(exports) == new_bests
    assert all((export / "saved_model.pb").is_file() and (export / "variables").is_dir() for export in exports)


@pytest.mark.slow
def test_each_training_run_is_one_row_of_the_hparams_dashboard_kept_up_to_date_when_stopped_and_resumed(
        project, trained, tmp_path, monkeypatch):
    write = hparams_summary.SessionRow.write

    def stop_after_the_first_evaluation(row, best, finished):
        path = write(row, best, finished)
        if best is not None and not finished:
            raise KeyboardInterrupt
        return path

    stopped = tmp_path / "stopped"
    with monkeypatch.context() as patch:
        patch.setattr(hparams_summary.SessionRow, "write", stop_after_the_first_evaluation)
        assert run_main(project, stopped, "--learning_rate", "3e-3") == 130
    assert_dashboard_rows(tmp_path, {"model/hparams": ("success", trained, 1e-2), "stopped/model/hparams": ("unknown", stopped, 3e-3)})
    assert BestCheckpoint(str(stopped / "best")).record["epoch"] == 2
    assert run_main(project, stopped, "--learning_rate", "3e-3") == 0  # resumed to the end
    assert_dashboard_rows(tmp_path, {"model/hparams": ("success", trained, 1e-2), "stopped/model/hparams": ("success", stopped, 3e-3)})
    assert BestCheckpoint(str(stopped / "best")).record["epoch"] == 4


def assert_dashboard_rows(logdir, expected):
    """The HParams dashboard of ``logdir`` has exactly the rows ``expected`` ({run: (status, out, learning_rate)}), each
    with the configuration of its run and the best snapshot's evaluation."""
    rows = {row.run: row for row in hparams_summary.dashboard_rows(str(logdir))}
    assert sorted(rows) == sorted(expected)
    for run, (status, out, learning_rate) in expected.items():
        row, record = rows[run], BestCheckpoint(str(out / "best")).record
        assert row.status == f"STATUS_{status.upper()}"
        assert (row.hparams["config_set"], row.hparams["learning_rate"], row.hparams["train_epochs"]) == ("tiny", learning_rate, 4)
        assert row.metrics == pytest.approx({"best/loss": record["loss"], "best/accuracy": record["metrics"]["accuracy"],
                                             "best/mean_per_class_accuracy": record["metrics"]["mean_per_class_accuracy"],
                                             "best/epoch": record["epoch"]})


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.parametrize("devices", [(), TWO_TOWERS], ids=["one_device", "two_towers"])
def test_sigkill_mid_training_then_resume_ends_at_exact_step(project, tmp_path, devices):
    epochs = 60
    command = [sys.executable, os.path.join(ROOT, "run.py"), "--project_file", str(project), "--config_set", "tiny",
               "--model_dir", str(tmp_path / "model"), "--best_model_dir", str(tmp_path / "best"),
               "--train_epochs", str(epochs), "--epochs_between_evals", "20", "--save_checkpoints_secs", "1", *devices]
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


@pytest.mark.slow
def test_sigkill_during_recalibration_loses_nothing_and_the_resumed_run_ends_at_the_same_step(project, tmp_path):
    arguments = ["--project_file", str(project), "--config_set", "tiny", "--model_dir", str(tmp_path / "model"),
                 "--best_model_dir", str(tmp_path / "best")]
    command = [sys.executable, os.path.join(ROOT, "run.py"), *arguments]
    # run.py whose recalibration waits for minutes before its batches: killed long before it ends
    slow = [sys.executable, "-c", "import sys, time; from library.evaluation import recalibration as r; "
            "collect = r.collect; r.collect = lambda *args: (time.sleep(600), collect(*args))[1]; "
            "import run; sys.exit(run.main(sys.argv[1:]))", *arguments]
    process = subprocess.Popen(slow, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stderr:
            if line.startswith("batch norm: recalibrating"):
                break
        time.sleep(1)
        assert process.poll() is None, "run finished before it could be killed"
        assert tf.train.latest_checkpoint(str(tmp_path / "model")).endswith("/model.ckpt-6")
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert not (tmp_path / "model" / EVALUATIONS_FILE).exists()

    assert subprocess.run(command, cwd=ROOT, capture_output=True, timeout=300).returncode == 0
    assert tf.train.load_variable(str(tmp_path / "model"), "global_step") == 12
    assert [entry["global_step"] for entry in evaluations(tmp_path)] == [6, 12]
    assert tf.train.latest_checkpoint(str(tmp_path / "model")).endswith("/recalibrated.ckpt-12")
    leftovers = [name for name in os.listdir(tmp_path / "model") if name.startswith("recalibrated.ckpt-")
                 and not name.startswith("recalibrated.ckpt-12.")]
    assert leftovers == []
    record = BestCheckpoint(str(tmp_path / "best")).record
    assert_best_holds_recalibrated_statistics(project, tmp_path, record)


@pytest.mark.slow
def test_resumed_run_never_overwrites_a_better_snapshot(project, tmp_path):
    assert run_main(project, tmp_path, "--train_epochs", "2") == 0
    record_path = tmp_path / "best" / (os.path.basename(BestCheckpoint(str(tmp_path / "best")).checkpoint_path) + ".json")
    record = json.loads(record_path.read_text())
    record["loss"] = 1e-9  # a snapshot better than anything the next cycle can reach
    record_path.write_text(json.dumps(record))
    assert run_main(project, tmp_path, "--train_epochs", "4") == 0
    assert BestCheckpoint(str(tmp_path / "best")).record["step"] == 2 * STEPS_PER_EPOCH
    assert len(evaluations(tmp_path)) == 2


@pytest.mark.slow
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


def test_predict_prints_one_line_per_image_and_writes_csv(project, trained, tmp_path, capsys):
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


def test_predict_csv_quotes_odd_file_names_and_gives_the_top_k(project, trained, tmp_path, capsys):
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


def test_export_then_serve_jpeg_bytes(project, trained, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0)  # two exports in the same second get two folders
    for _ in range(2):
        capsys.readouterr()
        assert run_main(project, tmp_path, "--mode", "export", "--export_dir", str(tmp_path / "export"),
                        "--model", "best") == 0
        assert "SavedModel of" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / "export")) == ["1700000000", "1700000001"]
    folder = project.parent / "images" / "test"
    outputs = serve(str(tmp_path / "export" / "1700000001"), [(folder / name / "0.jpg").read_bytes() for name in sorted(COLORS)])
    assert outputs["probabilities"].shape == (3, 3)
    np.testing.assert_allclose(outputs["probabilities"].sum(axis=1), 1, rtol=1e-5)
    assert [name.decode() for name in outputs["class_name"]] == sorted(COLORS)


def test_export_tflite_classifies_real_photos_like_the_saved_model(project, trained, tmp_path, capsys):
    models = {name: tmp_path / "tflite" / f"{name}.tflite" for name in ("float32", "uint8", "dynamic")}
    for name, flags in {"float32": (), "uint8": ("--tflite_input", "uint8"),
                        "dynamic": ("--tflite_quantize", "dynamic")}.items():
        assert run_main(project, tmp_path, "--mode", "export_tflite", "--model", "best", "--output", str(models[name]),
                        *flags) == 0
        assert f"written to {models[name]} ({models[name].stat().st_size:,} bytes)" in capsys.readouterr().out
    assert (tmp_path / "tflite" / "labels.txt").read_text() == "blue\ngreen\nred\n"
    assert models["dynamic"].stat().st_size < models["float32"].stat().st_size / 2  # int8 weights
    assert run_main(project, tmp_path, "--mode", "export", "--model", "best", "--export_dir", str(tmp_path / "export")) == 0
    (saved_model,) = os.listdir(tmp_path / "export")
    jpegs = photos_to_classify(project)
    served = serve(str(tmp_path / "export" / saved_model), jpegs)["probabilities"]
    pixels = serving_images(jpegs)
    np.testing.assert_allclose(interpret(models["float32"], np.float32, pixels / 255), served, rtol=0, atol=1e-4)
    rounded = np.round(pixels)
    np.testing.assert_allclose(interpret(models["uint8"], np.uint8, rounded),
                               interpret(models["float32"], np.float32, rounded / 255), rtol=0, atol=1e-4)
    quantized = interpret(models["dynamic"], np.float32, pixels / 255)
    assert np.mean(quantized.argmax(1) == served.argmax(1)) >= 0.98
    # The weights did change: visible on images the model is unsure of (its colors get probabilities near 1).
    unsure = serving_images([encoded(noise((20, 20), seed), "JPEG") for seed in range(4)]) / 255
    assert not np.allclose(interpret(models["dynamic"], np.float32, unsure),
                           interpret(models["float32"], np.float32, unsure), rtol=0, atol=1e-4)


def photos_to_classify(project):
    """JPEG bytes of the generated test images, and of flowers_small's 200 test photos where that folder exists."""
    folders = [project.parent / "images" / "test"] + [FLOWERS / "test"] * (FLOWERS / "test").is_dir()
    return [path.read_bytes() for folder in folders for path in sorted(folder.rglob("*.jpg"))]


def serving_images(jpegs):
    """What the serving SavedModel classifies of each JPEG: float32 [n, S, S, 3] in [0, 255], its central crop resized."""
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        encoded = tf.compat.v1.placeholder(tf.string, [])
        image = preprocessing.preprocess_for_eval(encoded, IMAGE_SIZE, EVAL_CROP_FRACTION)
        return np.stack([session.run(image, {encoded: jpeg}) for jpeg in jpegs])


def interpret(model_path, dtype, images):
    """The probabilities [n, classes] a TensorFlow Lite model gives, run on one image at a time as an app runs it;
    its input must be one ``dtype`` image [1, S, S, 3] and its output [1, 3]."""
    interpreter = tf.lite.Interpreter(model_path=str(model_path))
    interpreter.allocate_tensors()
    (image_input,), (output,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert (image_input["dtype"], list(image_input["shape"])) == (dtype, [1, IMAGE_SIZE, IMAGE_SIZE, 3])
    assert list(output["shape"]) == [1, len(COLORS)]
    probabilities = []
    for image in images:
        interpreter.set_tensor(image_input["index"], image[None].astype(dtype))
        interpreter.invoke()
        probabilities.append(interpreter.get_tensor(output["index"])[0])
    return np.array(probabilities)


@pytest.mark.slow
def test_a_keras_application_module_trains_frozen_and_fine_tuned_then_serves(project, tmp_path, capsys):
    weights, module_dir = str(tmp_path / "mobilenet_v2.h5"), str(tmp_path / "module")
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        model = keras_application.build("MobileNetV2", 32)
        session.run(tf.compat.v1.global_variables_initializer())
        model.save_weights(weights)
    assert write_module.main(["--keras_application", "MobileNetV2", "--weights", weights, "--image_size", "32",
                            "--output", module_dir]) == 0
    for flag in ("--no-fine_tuning", "--fine_tuning"):
        out = tmp_path / flag.strip("-")
        assert run_main(project, out, "--hub_module", module_dir, flag, "--fine_tuning_batch_norm", "train",
                        "--train_epochs", "2") == 0
        stdout = capsys.readouterr().out
        assert f"feature extractor: {module_dir} (pretrained); signature image_feature_vector, output default: " \
               "1280 features; input 32x32 (fixed by the module)" in stdout
        assert "eval loss" in stdout
        # Keras batch norm fine-tuned through the module's train variant is recalibrated; frozen, it is left alone.
        assert ("moving statistics recalibrated" in stdout) == (flag == "--fine_tuning")
    assert run_main(project, tmp_path / "fine_tuning", "--hub_module", module_dir, "--mode", "export",
                    "--export_dir", str(tmp_path / "export")) == 0
    (saved_model,) = os.listdir(tmp_path / "export")
    folder = project.parent / "images" / "test"
    outputs = serve(str(tmp_path / "export" / saved_model), [(folder / name / "0.jpg").read_bytes() for name in COLORS])
    assert outputs["probabilities"].shape == (3, 3)
    np.testing.assert_allclose(outputs["probabilities"].sum(axis=1), 1, rtol=1e-5)


def test_export_hub_writes_a_module(project, trained, tmp_path, capsys):
    assert run_main(project, tmp_path, "--mode", "export_hub", "--output", str(tmp_path / "hub")) == 0
    assert (tmp_path / "hub" / "tfhub_module.pb").exists()
    capsys.readouterr()
    # The exported module is then usable as a pretrained hub_module.
    assert run_main(project, tmp_path / "again", "--hub_module", str(tmp_path / "hub"), "--train_epochs", "2") == 0
    assert "eval loss" in capsys.readouterr().out


def test_dry_run_writes_nothing(project, tmp_path, capsys):
    assert run_main(project, tmp_path, "--mode", "dry_run") == 0
    assert "dry run: one training step and one evaluation batch ran" in capsys.readouterr().out
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("argv, message", [
    (["--mode", "evaluate"], "model: latest: no checkpoint in"),
    (["--mode", "evaluate", "--model", "/nowhere/model.ckpt-1"], "model: no checkpoint at /nowhere/model.ckpt-1"),
    (["--mode", "predict"], "predict mode needs --predict_input"),
    (["--mode", "export"], "export mode needs --export_dir"),
    (["--mode", "export_tflite"], "export_tflite mode needs --output FILE, e.g. --output model.tflite"),
    (["--mode", "export_tflite", "--output", "."], "output: . is a folder; give a file path, e.g. ./model.tflite"),
    (["--mode", "export_tflite", "--output", "model.tflite"], "model: latest: no checkpoint in"),
    (["--mode", "export_tflite", "--tflite_quantize", "int8"], "tflite_quantize: 'int8' is not a valid {none,dynamic}"),
    (["--mode", "export_tflite", "--tflite_input", "int8"], "tflite_input: 'int8' is not a valid {float32,uint8}"),
    (["--labels_file", "/nowhere/labels.txt"], "labels_file: /nowhere/labels.txt not found"),
    (["--train_data", "/nowhere/*.tfrecord"], "train_data: no file matches /nowhere/*.tfrecord"),
    (["--hub_module", "/nowhere/module"], "hub_module '/nowhere/module' is neither a project network"),
    (["--train_batch_size", "1000"], "train_batch_size: 1000 is larger than the 24 training images"),
    (["--no-fine_tuning"], "hub_module small_cnn starts from random weights and fine_tuning is False"),
    (["--hub_signature", "logits"], "hub_signature logits: module small_cnn has no such signature; "
                                    "it offers: default, image_feature_vector"),
    (["--hub_output", "small_cnn/conv4"], "hub_output small_cnn/conv4 of module small_cnn has shape "
                                          "(None, 4, 4, 64), not [batch, features]"),
    (["--mode", "predict", "--top_k", "4"], "top_k: 4 is not between 0 and the 3 classes of"),
    (["--distribution", "mirrored", "--num_gpus", "2", "--train_batch_size", "7"],
     "train_batch_size: 7 does not split evenly across 2 replicas; use a multiple of 2"),
])
def test_user_mistakes_are_one_line_errors(project, tmp_path, capsys, argv, message):
    assert run_main(project, tmp_path, *argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "model").exists()


def test_modules_that_cannot_be_loaded_are_one_line_errors_before_anything_is_written(project, tmp_path, capsys):
    saved_model = str(tmp_path / "tf2")
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        images = tf.compat.v1.placeholder(tf.float32, [None, 16, 16, 3])
        tf.compat.v1.saved_model.simple_save(session, saved_model, {"images": images}, {"out": images})
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{closed.getsockname()[1]}/module.tar.gz"
    closed.close()
    for handle, message in ((saved_model, f"error: hub_module {saved_model} is a TF2 SavedModel, not a TF1 Hub module"),
                            (url, f"error: hub_module {url}: cannot download it (URLError: ")):
        assert run_main(project, tmp_path, "--hub_module", handle) == 2
        err = capsys.readouterr().err
        assert err.startswith(message) and err.count("\n") == 1, err
        assert not (tmp_path / "model").exists()

@pytest.mark.slow
def test_parameter_server_cluster_trains_evaluates_and_snapshots(project, tmp_path):
    command = [sys.executable, "-m", "library.distribution.local_cluster", "--workers", "1", "--ps", "1", "--evaluator", "--",
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
    assert "[evaluator] batch norm: 10 moving statistics recalibrated" in result.stdout
    assert os.path.basename(best.record["source_checkpoint"]) == f"recalibrated.ckpt-{best.record['step']}"
    assert_reported(tmp_path, [entry["global_step"] for entry in evaluations(tmp_path)])


@pytest.mark.slow
def test_mirrored_on_one_device_trains_and_multi_worker_is_refused(project, tmp_path, capsys, monkeypatch):
    assert run_main(project, tmp_path, "--distribution", "mirrored", "--train_epochs", "2") == 0
    assert tf.train.load_variable(str(tmp_path / "model"), "global_step") == 2 * STEPS_PER_EPOCH
    capsys.readouterr()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["127.0.0.1:1"]}, "task": {"type": "chief", "index": 0}}))
    assert run_main(project, tmp_path / "collective", "--distribution", "multi_worker") == 2
    err = capsys.readouterr().err
    assert err == ("error: distribution multi_worker: this model's variables cannot be mirrored by tf.distribute "
                   "(see supports_distribution_strategies in the experiment); use distribution parameter_server for "
                   "several machines, mirrored for several GPUs of one machine, or none\n")


@pytest.mark.slow
def test_two_towers_train_and_one_device_evaluates_exports_and_resumes_their_checkpoints(project, tmp_path, capsys):
    assert run_main(project, tmp_path, *TWO_TOWERS, "--train_epochs", "2") == 0
    assert "tower_1/" in (tmp_path / "model" / "graph.pbtxt").read_text()  # the model_fn ran as two towers
    assert tf.train.load_variable(str(tmp_path / "model"), "global_step") == 2 * STEPS_PER_EPOCH  # one step a batch
    record = BestCheckpoint(str(tmp_path / "best")).record
    assert record["step"] == 2 * STEPS_PER_EPOCH

    capsys.readouterr()
    assert run_main(project, tmp_path, "--mode", "evaluate", "--model", "best") == 0
    printed = dict(line.split(" = ") for line in capsys.readouterr().out.splitlines() if " = " in line)
    assert float(printed["loss"]) == pytest.approx(record["loss"], rel=1e-5)
    assert run_main(project, tmp_path, "--mode", "export", "--export_dir", str(tmp_path / "export")) == 0
    assert len(os.listdir(tmp_path / "export")) == 1

    assert run_main(project, tmp_path, "--train_epochs", "4") == 0  # one device resumes the towers' run ...
    assert run_main(project, tmp_path, *TWO_TOWERS, "--train_epochs", "6") == 0  # ... and two towers resume that
    assert [entry["global_step"] for entry in evaluations(tmp_path)] == [6, 12, 18]


# --- no silent wrong answers, no hangs, one line per failure ---


def listing(folder):
    """{relative path: (size, mtime)} of every file below ``folder``: what a refused run must leave unchanged."""
    return {os.path.relpath(os.path.join(directory, name), folder): (os.stat(os.path.join(directory, name)).st_size,
                                                                    os.stat(os.path.join(directory, name)).st_mtime_ns)
            for directory, _, names in os.walk(folder) for name in names}


def assert_one_line_error(capsys, message):
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_a_model_dir_serves_only_the_model_it_was_trained_for(project, trained, tmp_path, capsys):
    record = json.loads((tmp_path / "model" / "trained_for.json").read_text())
    assert record == {"class_names": sorted(COLORS), "hub_module": "small_cnn", "image_size": 16}
    two_classes = tmp_path / "two-classes.txt"
    two_classes.write_text("blue\ngreen\n")
    (tmp_path / "hub").mkdir()
    before = listing(tmp_path)
    mismatch = ("holds a model trained for class_names ['blue', 'green', 'red'] (3 entries), but this configuration "
                "has ['blue', 'green'] (2 entries); use a new model_dir for a new model")
    for argv, directory in ((["--mode", "train", "--train_epochs", "4"], "model"),
                            (["--mode", "evaluate"], "model"),
                            (["--mode", "evaluate", "--model", "best"], "best"),  # the snapshot carries the record
                            (["--mode", "evaluate", "--model", tf.train.latest_checkpoint(str(tmp_path / "model"))],
                             "model"),
                            (["--mode", "predict", "--predict_input", str(project.parent / "images" / "test" / "red")],
                             "model"),
                            (["--mode", "export", "--export_dir", str(tmp_path / "export")], "model"),
                            (["--mode", "export_hub", "--output", str(tmp_path / "hub")], "model")):
        capsys.readouterr()
        assert run_main(project, tmp_path, "--labels_file", str(two_classes), *argv) == 2, argv
        assert_one_line_error(capsys, f"error: {tmp_path / directory} {mismatch}")
    capsys.readouterr()
    assert run_main(project, tmp_path, "--mode", "evaluate", "--image_size", "20") == 2
    assert_one_line_error(capsys, "holds a model trained for image_size 16, but this configuration has 20")
    assert listing(tmp_path) == before

    # export_hub replaces an earlier module, but never the user's files beside it.
    assert run_main(project, tmp_path, "--mode", "export_hub", "--output", str(tmp_path / "hub")) == 0
    (tmp_path / "hub" / "notes.txt").write_text("keep me")
    before = listing(tmp_path / "hub")
    capsys.readouterr()
    assert run_main(project, tmp_path, "--mode", "export_hub", "--output", str(tmp_path / "hub")) == 2
    assert_one_line_error(capsys, f"error: export_hub: {tmp_path / 'hub'} holds an earlier hub module but also "
                                  "'notes.txt', which replacing the module would delete")
    assert listing(tmp_path / "hub") == before


def test_a_second_training_run_on_a_model_dir_is_refused_naming_the_first(project, tmp_path, capsys):
    holder = hold_lock_in_another_process(tmp_path / "model")
    try:
        before = listing(tmp_path)
        assert run_main(project, tmp_path) == 2
        assert_one_line_error(capsys, f"error: model_dir {tmp_path / 'model'} is being trained by pid {holder.pid} on "
                                      f"host {socket.gethostname()} (lock file {tmp_path / 'model' / 'training.lock'}); "
                                      "wait for that run to end or stop it, or use another model_dir")
        assert listing(tmp_path) == before
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_sigterm_stops_training_like_ctrl_c_with_the_resume_hint(project, tmp_path):
    command = [sys.executable, os.path.join(ROOT, "run.py"), "--project_file", str(project), "--config_set", "tiny",
               "--model_dir", str(tmp_path / "model"), "--best_model_dir", str(tmp_path / "best"),
               "--train_epochs", "1000", "--epochs_between_evals", "1000"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None and not (
                tmp_path / "model" / "model.ckpt-0.index").exists():  # saved once the training session runs
            time.sleep(0.2)
        time.sleep(0.5)  # past the step-0 save, into the training steps
        assert process.poll() is None
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 143, stderr
    assert stderr.rstrip("\n").splitlines()[-1] == (
        f"interrupted; run the same command again to resume from the latest checkpoint in {tmp_path / 'model'}")
    assert "Traceback" not in stderr
    assert (tmp_path / "model" / "training.lock").read_text() == ""  # released


def damaged_copy(source, target, shard_name, damage):
    """A copy of the shards and manifest of ``source`` in ``target``, ``shard_name`` damaged; its path."""
    target.mkdir()
    for path in sorted(source.iterdir()):
        (target / path.name).write_bytes(path.read_bytes())
    shard = target / shard_name
    shard.write_bytes(damage(shard.read_bytes()))
    return shard


def test_a_damaged_shard_is_named_in_one_line_in_training_and_evaluation(project, tmp_path, capsys):
    data = project.parent / "data"
    truncated = damaged_copy(data / "train", tmp_path / "train", "train-00001-of-00002.tfrecord",
                             lambda records: records[:-100])  # cut inside its last record
    assert run_main(project, tmp_path, "--train_data", str(tmp_path / "train" / "train-*.tfrecord")) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.fullmatch(rf"error: damaged data: {truncated}, record 11: truncated record at \d+.*; "
                        "convert the data set again", err.strip().splitlines()[-1]), err

    assert tf.train.latest_checkpoint(str(tmp_path / "model"))  # the step-0 checkpoint, written before the first step
    corrupted = damaged_copy(data / "test", tmp_path / "test", "test-00000-of-00002.tfrecord",
                             lambda records: records[:200] + bytes(8) + records[208:])  # inside the first record
    assert run_main(project, tmp_path, "--mode", "evaluate", "--eval_data", str(tmp_path / "test" / "test-*.tfrecord")) == 1
    err = capsys.readouterr().err
    # The record's data starts at byte 12, after its length and the length's checksum.
    assert err == f"error: damaged data: {corrupted}, record 0: corrupted record at 12; convert the data set again\n"


def test_shards_of_two_conversions_side_by_side_are_refused_naming_both_counts(project, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for index in range(2):
        source = project.parent / "data" / "train" / f"train-0000{index}-of-00002.tfrecord"
        (data / source.name).write_bytes(source.read_bytes())
    for index in range(4):  # an interrupted conversion into 4 shards left its finished shards
        (data / f"train-0000{index}-of-00004.tfrecord").write_bytes(source.read_bytes())
    assert run_main(project, tmp_path, "--train_data", str(data / "train-*.tfrecord")) == 2
    assert_one_line_error(capsys, f"train_data: {data}/train-*.tfrecord matches the shards of 2 conversions in {data}, "
                                  "train-*-of-00002 and train-*-of-00004; convert the data set again")
    assert not (tmp_path / "model").exists()


def test_failed_writes_name_the_path_in_one_line(project, tmp_path, capsys, monkeypatch):
    assert run_main(project, tmp_path, "--model_dir", "/sys/nowhere/model") == 1  # not even root may write there
    err = capsys.readouterr().err
    assert re.fullmatch(r"error: /sys/nowhere: (Operation not permitted|Permission denied); check the path, its "
                        r"permissions and the free space\n", err), err

    full = str(tmp_path / "model" / "config.yaml")
    monkeypatch.setattr(config, "write_config", lambda *args: (_ for _ in ()).throw(
        OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), full)))
    assert run_main(project, tmp_path) == 1
    assert_one_line_error(capsys, f"error: {full}: No space left on device; check the path, its permissions")
    monkeypatch.setattr(model_directory, "write_record", lambda *args: (_ for _ in ()).throw(
        tf.errors.ResourceExhaustedError(None, None, f"{full}; No space left on device")))
    assert run_main(project, tmp_path) == 1
    assert_one_line_error(capsys, f"error: {full}; No space left on device; check the path")


def test_prediction_mistakes_are_one_line_errors_before_any_model_is_loaded(project, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "predictions").mkdir()
    images = str(project.parent / "images" / "test" / "red")
    for argv, message in [
        (["--predict_input", str(tmp_path / "empty")], f"predict_input: no files in {tmp_path / 'empty'}"),
        (["--predict_input", str(tmp_path / "*.png")], f"predict_input: no file matches {tmp_path / '*.png'}"),
        (["--predict_input", images, "--predictions_file", str(tmp_path / "predictions")],
         f"predictions_file: {tmp_path / 'predictions'} is a folder; give a file path"),
    ]:
        assert run_main(project, tmp_path, "--mode", "predict", *argv) == 2
        assert_one_line_error(capsys, message)


def test_a_labels_file_repeating_a_class_is_refused(project, tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("blue\ngreen\nred\ngreen\n")
    assert run_main(project, tmp_path, "--labels_file", str(labels)) == 2
    assert_one_line_error(capsys, f"error: labels_file: {labels}, line 4 'green' is the same name as line 2 'green'")


@pytest.mark.slow
def test_class_names_holding_dollar_signs_train_evaluate_and_report_as_they_are(project, tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("$5 #1 $6\ngreen\nprice $5-$10\n")  # mathtext stopped training at the first evaluation
    assert run_main(project, tmp_path, "--labels_file", str(labels), "--train_epochs", "2") == 0
    assert "epoch 2/2  step 6  eval loss" in capsys.readouterr().out
    report_file = tmp_path / "report.json"
    assert run_main(project, tmp_path, "--labels_file", str(labels), "--mode", "evaluate",
                    "--report_file", str(report_file)) == 0
    report = json.loads(report_file.read_text())
    assert report["class_names"] == ["$5 #1 $6", "green", "price $5-$10"]
    assert report == json.loads((tmp_path / "model" / "evaluation-6.json").read_text())
    events = EventAccumulator(str(tmp_path / "model" / "eval"), size_guidance={"images": 0})
    events.Reload()
    assert [image.step for image in events.Images("confusion_matrix")] == [6]


def copy_checkpoint(checkpoint, folder):
    """The files of ``checkpoint`` (not its folder's record) copied into ``folder``; the copy's path."""
    os.makedirs(folder, exist_ok=True)
    directory, name = os.path.split(checkpoint)
    for file in os.listdir(directory):
        if file.startswith(name + "."):
            shutil.copy(os.path.join(directory, file), folder)
    return os.path.join(folder, name)


def test_a_checkpoint_of_other_classes_is_refused_before_it_is_restored_naming_both(project, trained, tmp_path, capsys):
    five_classes = tmp_path / "five-classes.txt"
    five_classes.write_text("blue\ncyan\ngreen\nred\nwhite\n")
    assert (tmp_path / "best" / "trained_for.json").read_text() == (tmp_path / "model" / "trained_for.json").read_text()
    shutil.copytree(tmp_path / "best", tmp_path / "shipped")  # a best snapshot shipped whole carries its record
    copied = copy_checkpoint(BestCheckpoint(str(tmp_path / "best")).checkpoint_path, tmp_path / "copied")
    shape = (f"error: {copied} holds head/logits/kernel of shape [64, 3] (features x classes), but this "
             "configuration needs [64, 5]: it is a checkpoint of another model")
    record = ("holds a model trained for class_names ['blue', 'green', 'red'] (3 entries), but this configuration has "
              "['blue', 'cyan', 'green', 'red', 'white'] (5 entries)")
    images = str(project.parent / "images" / "test" / "red")
    for mode in (["--mode", "predict", "--predict_input", images], ["--mode", "evaluate"]):
        capsys.readouterr()
        assert run_main(project, tmp_path / "five", "--labels_file", str(five_classes), *mode, "--model", copied) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        warning, error = captured.err.splitlines()
        assert warning.startswith(f"warning: model: no trained_for.json beside {copied}, so what it was trained for is "
                                  "unknown: only its variables' shapes are checked") and error.startswith(shape), error
        shipped = BestCheckpoint(str(tmp_path / "shipped")).checkpoint_path
        assert run_main(project, tmp_path / "five", "--labels_file", str(five_classes), *mode, "--model", shipped) == 2
        assert_one_line_error(capsys, f"error: {tmp_path / 'shipped'} {record}")

    # Training on from the copied checkpoint (a model_dir without a record) is refused the same way.
    copy_checkpoint(copied, tmp_path / "five" / "model")
    (tmp_path / "five" / "model" / "checkpoint").write_text(f'model_checkpoint_path: "{os.path.basename(copied)}"\n')
    assert run_main(project, tmp_path / "five", "--labels_file", str(five_classes)) == 2
    assert_one_line_error(capsys, shape.replace(copied, str(tmp_path / "five" / "model" / os.path.basename(copied))))


@pytest.mark.slow
def test_a_damaged_or_removed_recalibrated_checkpoint_is_skipped_on_resume_and_left_out_of_the_state(
        project, trained, tmp_path, capsys):
    recalibrated = tmp_path / "model" / "recalibrated.ckpt-12"
    assert tf.train.latest_checkpoint(str(tmp_path / "model")) == str(recalibrated)
    (data,) = (tmp_path / "model").glob("recalibrated.ckpt-12.data-*")
    damaged = bytearray(data.read_bytes())
    damaged[len(damaged) // 2:len(damaged) // 2 + 8] = bytes(255 - value for value in damaged[len(damaged) // 2:][:8])
    data.write_bytes(bytes(damaged))
    capsys.readouterr()
    assert run_main(project, tmp_path, "--train_epochs", "6") == 0
    captured = capsys.readouterr()
    assert re.search(rf"^warning: {recalibrated} cannot be read \(.*[Cc]hecksum.*\); resuming from the checkpoint before "
                     r"it \(its files are left as they are\)$", captured.err, re.MULTILINE), captured.err
    assert "Traceback" not in captured.err and ", resuming at step 12" in captured.out
    assert [entry["global_step"] for entry in evaluations(tmp_path)] == [6, 12, 18]
    assert_state_lists_only_whole_checkpoints(tmp_path / "model", "recalibrated.ckpt-18")

    # Removed as the reading mode advised: the resumed run starts at the intact checkpoint beside it.
    for name in os.listdir(tmp_path / "model"):
        if name.startswith("recalibrated.ckpt-18."):
            os.remove(tmp_path / "model" / name)
    assert run_main(project, tmp_path, "--mode", "evaluate") == 0
    assert f"warning: model: latest: {tmp_path / 'model' / 'recalibrated.ckpt-18'} is missing; using " \
           f"{tmp_path / 'model' / 'model.ckpt-18'}" in capsys.readouterr().err
    assert run_main(project, tmp_path, "--train_epochs", "8") == 0
    captured = capsys.readouterr()
    assert f"warning: {tmp_path / 'model' / 'recalibrated.ckpt-18'} cannot be read (Checkpoint " in captured.err
    assert ", resuming at step 18" in captured.out and "Traceback" not in captured.err
    assert [entry["global_step"] for entry in evaluations(tmp_path)] == [6, 12, 18, 24]
    assert_state_lists_only_whole_checkpoints(tmp_path / "model", "recalibrated.ckpt-24")


def assert_state_lists_only_whole_checkpoints(model_dir, latest):
    """The state file names ``latest`` as the latest checkpoint, and every checkpoint it lists reads whole."""
    state = tf.train.get_checkpoint_state(str(model_dir))
    assert os.path.basename(state.model_checkpoint_path) == latest == os.path.basename(state.all_model_checkpoint_paths[-1])
    for path in state.all_model_checkpoint_paths:
        reader = tf.train.load_checkpoint(path)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)


@pytest.mark.slow
def test_readers_of_latest_during_a_training_run_evaluating_every_step_hold_their_checkpoint(project, tmp_path):
    arguments = ["--project_file", str(project), "--config_set", "tiny", "--model_dir", str(tmp_path / "model"),
                 "--best_model_dir", str(tmp_path / "best"), "--train_batch_size", str(len(COLORS) * IMAGES_PER_CLASS)]
    training = subprocess.Popen([sys.executable, "run.py", *arguments, "--train_epochs", "10000",
                                 "--epochs_between_evals", "1"],  # one step an epoch: a new recalibrated checkpoint a step
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    readers = {"evaluate": [], "predict": ["--predict_input", str(project.parent / "images" / "test" / "red")],
               "export": ["--export_dir", str(tmp_path / "export")]}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(evaluation_steps(tmp_path)) < 3:
            time.sleep(0.2)
        started = evaluation_steps(tmp_path)
        assert training.poll() is None and len(started) >= 3, "training did not evaluate in time"
        running = [(mode, subprocess.Popen([sys.executable, "run.py", *arguments, "--mode", mode, "--model", "latest",
                                            *argv], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                           text=True))
                   for mode, argv in readers.items() for _ in range(2)]
        results = {(mode, index): process.communicate(timeout=300) + (process.returncode,)
                   for index, (mode, process) in enumerate(running)}
        assert training.poll() is None, "training ended before the readers did"
        assert len(evaluation_steps(tmp_path)) > len(started) + 3  # the recalibrated checkpoint changed meanwhile
    finally:
        training.kill()
        training.wait()
    for (mode, _), (stdout, stderr, code) in results.items():
        assert code == 0 and "Traceback" not in stderr, (mode, stderr[-2000:])
    assert len(os.listdir(tmp_path / "export")) == 2


def evaluation_steps(out):
    """The steps evaluations.jsonl lists so far (empty before the first evaluation)."""
    path = out / "model" / EVALUATIONS_FILE
    return [json.loads(line)["global_step"] for line in path.read_text().splitlines()] if path.exists() else []


def test_predict_skips_a_file_name_that_is_not_utf8_in_a_folder_or_a_pattern_with_a_warning(
        project, trained, tmp_path, capsys, caplog):
    folder = tmp_path / "photos"
    folder.mkdir()
    red = (project.parent / "images" / "test" / "red" / "0.jpg").read_bytes()
    (folder / "fine.jpg").write_bytes(red)
    with open(os.path.join(os.fsencode(folder), b"bad\xff.jpg"), "wb") as handle:  # the converter skips it too
        handle.write(red)
    for source in (folder, folder / "*.jpg"):
        caplog.clear()
        capsys.readouterr()
        assert run_main(project, tmp_path, "--mode", "predict", "--predict_input", str(source)) == 0
        (line,) = capsys.readouterr().out.splitlines()
        assert line.split("\t")[0] == str(folder / "fine.jpg")
        assert f"skipped {folder}/bad\ufffd.jpg: the name is not valid UTF-8; rename it" in caplog.messages


def test_predict_escapes_tabs_newlines_and_backslashes_of_file_names_on_stdout_and_the_csv_keeps_them(
        project, trained, tmp_path, capsys):
    names = ["tab\there.jpg", "two\nlines.jpg", "back\\slash.jpg"]
    (tmp_path / "photos").mkdir()
    for name in names:
        shutil.copy(project.parent / "images" / "test" / "red" / "0.jpg", tmp_path / "photos" / name)
    predictions = tmp_path / "predictions.csv"
    capsys.readouterr()
    assert run_main(project, tmp_path, "--mode", "predict", "--predict_input", str(tmp_path / "photos"),
                    "--predictions_file", str(predictions)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(len(line.split("\t")) == 3 for line in lines)
    assert sorted(os.path.basename(line.split("\t")[0]) for line in lines) == ["back\\\\slash.jpg", "tab\\there.jpg",
                                                                                "two\\nlines.jpg"]
    with open(predictions, newline="") as handle:
        assert sorted(os.path.basename(row["file"]) for row in csv.DictReader(handle)) == sorted(names)


def test_a_best_model_dir_that_cannot_be_written_is_refused_before_training_starts(project, tmp_path, capsys):
    assert run_main(project, tmp_path, "--best_model_dir", "/sys/nowhere/best") == 1  # not even root may write there
    err = capsys.readouterr().err
    assert re.fullmatch(r"error: /sys/nowhere.*(Operation not permitted|Permission denied).*; check the path, its "
                        r"permissions and the free space\n", err), err
    assert os.listdir(tmp_path / "model") == ["training.lock"]  # no checkpoint, no record: nothing trained

"""The modes besides training: evaluate, predict and export the checkpoint ``model`` names, or check the graph and
input (dry_run, benchmark_input). Each is a function of one ``library.training.invocation.Run``, named as its mode."""

import csv
import io
import json
import os
import shutil
import tempfile

from library import atomic_file
from library.configuration.config import ConfigError
from library.evaluation import report as evaluation_report
from library.evaluation.evaluator import evaluate_checkpoint
from library.experiment import capability
from library.tensorflow_env import import_tensorflow
from library.training.hooks import StopOnNonFiniteLossHook
from library.training.invocation import Run

tf = import_tensorflow()
ModeKeys = tf.estimator.ModeKeys


def evaluate(run: Run) -> int:
    """Evaluate the checkpoint ``model`` names and print its metrics and report (written to ``report_file`` too);
    nothing is written into model_dir (Estimator's event file goes to the held checkpoint's private folder)."""
    settings = run.settings
    with run.held_checkpoint() as checkpoint:
        results, report = evaluate_checkpoint(run, run.estimator(checkpoint.folder), checkpoint.path,
                                              write_summaries=lambda *drawn: None)
    print(f"checkpoint {checkpoint.name}")
    for key in sorted(results):
        print(f"{key} = {results[key]:.6g}" if isinstance(results[key], float) else f"{key} = {results[key]}")
    if report is not None:
        print(evaluation_report.table(report))
        if settings.report_file:
            evaluation_report.write_json(settings.report_file, report)
            print(f"report written to {settings.report_file}")
    return 0


def predict(run: Run) -> int:
    """Print one tab-separated line per input of ``predict_input`` (and write them as CSV on request)."""
    settings = run.settings
    required(run, "predict_input", "(a folder, a file pattern, or comma-separated files)")
    if settings.predictions_file:
        check_not_a_folder("predictions_file", settings.predictions_file, "predictions.csv")
    input_fn = run.experiment.predict_input_fn(run.params, settings.predict_input)
    rows = []
    with run.held_checkpoint() as checkpoint:
        for prediction in run.estimator(checkpoint.folder).predict(input_fn, checkpoint_path=checkpoint.path):
            row = run.experiment.prediction_row(prediction, run.params)
            print("\t".join(escaped(value) for value in row.values()), flush=True)
            rows.append(row)
    if settings.predictions_file:
        atomic_file.write_text(settings.predictions_file, csv_text(rows))
    return 0


def required(run: Run, option: str, what: str):
    """The value of ``option``, which this mode needs: a ConfigError saying ``what`` to give when it is unset."""
    value = getattr(run.settings, option)
    if not value:
        raise ConfigError(f"{run.settings.mode} mode needs --{option} {what}")
    return value


def check_not_a_folder(option: str, path: str, example_name: str) -> None:
    """ConfigError when the file path ``path`` given for ``option`` is a folder, suggesting ``example_name`` in it."""
    if tf.io.gfile.isdir(path):
        raise ConfigError(f"{option}: {path} is a folder; give a file path, e.g. {os.path.join(path, example_name)}")


# What a tab-separated line shows for the characters that would split it, or act on a terminal.
_ESCAPES = {code: f"\\x{code:02x}" for code in [*range(0x20), 0x7f]} | {
    ord("\\"): "\\\\", ord("\t"): "\\t", ord("\n"): "\\n", ord("\r"): "\\r"}


def escaped(value: str) -> str:
    """``value`` for a tab-separated line: backslashes, tabs, newlines and other control characters as escapes
    (``\\``, ``\\t``, ``\\n``, ``\\x1b``), so that a file name holding one cannot split or fake a line."""
    return value.translate(_ESCAPES)


def csv_text(rows: list) -> str:
    """``rows`` (dicts with the same keys) as CSV under a header row, quoted where a value needs it."""
    text = io.StringIO()
    if rows:
        writer = csv.DictWriter(text, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return text.getvalue()


def export_saved_model(run: Run, estimator, export_dir, checkpoint) -> str:
    """Export a SavedModel (the experiment's serving input) under ``export_dir/<timestamp>``.

    Estimator names the folder by the second, so two exports in the same second (two runs, or a run and the best
    snapshot's export) would collide: each is written in a private staging folder, then renamed to the first free
    timestamp from its own on."""
    atomic_file.remove_stale_temporaries(export_dir, "export")  # of exports a kill interrupted
    staging = atomic_file.temporary_name(os.path.join(export_dir, "export"))
    try:
        path = estimator.export_saved_model(staging, lambda: run.experiment.serving_input_receiver_fn(run.params),
                                            checkpoint_path=checkpoint)
        path = path.decode() if isinstance(path, bytes) else path
        timestamp = int(os.path.basename(path))
        while True:
            target = os.path.join(export_dir, str(timestamp))
            try:
                tf.io.gfile.rename(path, target, overwrite=False)
                return target
            except tf.errors.AlreadyExistsError:
                timestamp += 1
    finally:
        if tf.io.gfile.exists(staging):
            tf.io.gfile.rmtree(staging)


def export(run: Run) -> int:
    """Write a SavedModel of the checkpoint ``model`` names."""
    export_dir = required(run, "export_dir", "DIR")
    with run.held_checkpoint() as checkpoint:
        path = export_saved_model(run, run.estimator(checkpoint.folder), export_dir, checkpoint.path)
    print(f"SavedModel of {checkpoint.name} written to {path}")
    return 0


def export_hub(run: Run) -> int:
    """Write the feature extractor of the checkpoint ``model`` names as a TF1 hub module."""
    export_feature_extractor = capability(run.experiment, "export_feature_extractor")
    output = required(run, "output", "DIR")
    with run.held_checkpoint() as checkpoint:
        try:
            export_feature_extractor(run.params, checkpoint.path, output)
        except ValueError as error:  # an --output that cannot be replaced, a checkpoint without the module's variables
            raise ConfigError(f"export_hub: {error}") from None
    print(f"hub module of {checkpoint.name} written to {output}")
    return 0


def export_tflite(run: Run) -> int:
    """Write a TensorFlow Lite model of the checkpoint ``model`` names (and the experiment's files beside it)."""
    output = required(run, "output", "FILE, e.g. --output model.tflite")
    check_not_a_folder("output", output, "model.tflite")
    export_model = capability(run.experiment, "export_tflite")
    with run.held_checkpoint() as checkpoint:
        export_model(run.params, checkpoint.path, output)
    print(f"TensorFlow Lite model of {checkpoint.name} written to {output} ({tf.io.gfile.stat(output).length:,} bytes)")
    return 0


def dry_run(run: Run) -> int:
    """Build the graph and input once and run one training and one evaluation step, writing nothing."""
    scratch = tempfile.mkdtemp(prefix="dry_run-")
    try:
        run = run.with_params(steps_per_epoch=1, train_steps=1)
        estimator = run.estimator(scratch)
        estimator.train(run.input_fn(ModeKeys.TRAIN), max_steps=1, hooks=[StopOnNonFiniteLossHook()])
        results = estimator.evaluate(run.input_fn(ModeKeys.EVAL), steps=1)
        print(f"dry run: one training step and one evaluation batch ran (eval loss {results['loss']:.4f}); nothing written")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def benchmark_input(run: Run) -> int:
    """Print the training input's speed alone as JSON (images/s over ``benchmark_batches`` batches)."""
    measure = capability(run.experiment, "benchmark_input")
    print(json.dumps(measure(run.params, run.settings.benchmark_batches)))
    return 0

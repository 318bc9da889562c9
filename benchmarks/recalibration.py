"""Row 6: what batch-norm recalibration adds to an evaluation in the run loop.

The `default` set with its feature extractor fine-tuned on batch statistics (``--fine_tuning
--fine_tuning_batch_norm train``: moving averages updated in training, so there is something to
recalibrate; the default for a pretrained module keeps them frozen) evaluates a
checkpoint of its own (one training step) on the benchmark records, as the run loop does at
the end of a training cycle (``library/cycle_evaluation.py``: graphs and sessions built once,
timed here after a first, untimed evaluation), twice:

* ``recalibrated``: a ``batch_norm_recalibration.Recalibrator`` (the training graph over
  ``batch_norm_recalibration_batches`` batches of ``train_batch_size`` training images, the
  recalibrated checkpoint written), then the evaluation of the recalibrated checkpoint;
* ``evaluation alone``: the evaluation of the checkpoint as trained.

Both include the evaluation report, as in the run loop. The recalibration's cost is bounded by
its batch count, not by the evaluation data: the ratio falls as the evaluation set grows.
"""

import contextlib
import os
import shutil
import tempfile
import time

from benchmarks import measure, project_config
from benchmarks.report import target
from library import batch_norm_recalibration, run_loop
from library.cycle_evaluation import CheckpointEvaluation
from library.tensorflow_env import import_tensorflow
from project.experiment import ImageClassifier

tf = import_tensorflow()
experiment = ImageClassifier()
ModeKeys = tf.estimator.ModeKeys


def run(records_dir: str, work_dir: str, budget, rounds: int, max_extra: int, quiet_wait: float, log=print) -> dict:
    """Row 6: evaluation time with batch-norm recalibration / evaluation alone (a ratio of seconds)."""
    settings, params = project_config.settings_and_params(records_dir, "--fine_tuning", "--fine_tuning_batch_norm",
                                                          "train")
    run = run_loop.Run(settings, experiment, params).with_params(steps_per_epoch=1, train_steps=1)
    params = run.params
    batches = settings.batch_norm_recalibration_batches
    model_dir = tempfile.mkdtemp(prefix="recalibration-", dir=work_dir)
    evaluation = CheckpointEvaluation(lambda features, labels, mode: experiment.model_fn(features, labels, mode, params),
                                      run.input_fn(ModeKeys.EVAL), session_config=run_loop.session_config(settings))
    recalibrator = batch_norm_recalibration.recalibrator(experiment, params, batches,
                                                         run_loop.session_config(settings))
    try:
        estimator = run.estimator(model_dir)
        estimator.train(lambda: experiment.input_fn(params, ModeKeys.TRAIN), max_steps=1)
        checkpoint = tf.train.latest_checkpoint(model_dir)
        seconds = {}

        def evaluated(path):
            """The checkpoint's metrics and report, as run_loop.Training.evaluate_and_snapshot makes them."""
            return run_loop.evaluation_results(estimator, params, evaluation.evaluate(path)[1])[0]

        def recalibrated():
            started = time.perf_counter()
            path = recalibrator.recalibrate(checkpoint).checkpoint
            seconds["recalibration"] = time.perf_counter() - started
            return evaluated(path)

        def timed(evaluate):
            started = time.perf_counter()
            results = evaluate()
            elapsed = time.perf_counter() - started
            return 1 / elapsed, {"seconds": elapsed, "accuracy": results["accuracy"],
                                 "recalibration_seconds": seconds.get("recalibration", 0.0)}

        loops = {"recalibrated": lambda: timed(recalibrated),
                 "evaluation alone": lambda: timed(lambda: evaluated(checkpoint))}
        log(f"  recalibration: {params['hub_module']} fine-tuned, {batches} batches of {params['train_batch_size']}, "
            f"evaluation batch {params['eval_batch_size']}, {params['image_size']}x{params['image_size']}")
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), contextlib.redirect_stderr(devnull):
            recalibrated()  # builds the graphs and sessions, as a run's first evaluation does
            done = measure.rounds(loops, rounds, budget, max_extra, quiet_wait, log)
    finally:
        evaluation.close()
        recalibrator.close()
        shutil.rmtree(model_dir, ignore_errors=True)
    summary = measure.ratio_summary(done, "evaluation alone", "recalibrated")  # rates: the inverse ratio of seconds
    return {
        "id": "recalibration",
        "title": "evaluation time with batch-norm recalibration vs evaluation alone",
        "figures": {
            "model": params["hub_module"],
            "batches": batches,
            "train_batch_size": params["train_batch_size"],
            "eval_batch_size": params["eval_batch_size"],
            "image_size": params["image_size"],
            "seconds_recalibrated": measure.median_detail(done, "recalibrated", "seconds"),
            "seconds_recalibration": measure.median_detail(done, "recalibrated", "recalibration_seconds"),
            "seconds_alone": measure.median_detail(done, "evaluation alone", "seconds"),
            "time_ratio": summary["ratio"],
        },
        "targets": [target("evaluation: time with batch-norm recalibration / alone", summary["ratio"], "<=", 1.5, "",
                           summary)],
        "references": [],
    }

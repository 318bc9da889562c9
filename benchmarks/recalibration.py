"""Row 6: what batch-norm recalibration adds to an evaluation in the run loop.

The `default` set with its feature extractor fine-tuned on batch statistics (``--fine_tuning
--fine_tuning_batch_norm train``: moving averages updated in training, so there is something to
recalibrate; the default for a pretrained module keeps them frozen) evaluates a
checkpoint of its own (one training step) on the benchmark records, as the run loop does at
the end of a training cycle (``library/evaluation/evaluator.py``: graphs and sessions built once,
timed here after a first, untimed evaluation), twice:

* ``recalibrated``: a ``recalibration.Recalibrator`` (the training graph over
  ``batch_norm_recalibration_batches`` batches of ``train_batch_size`` training images, the
  recalibrated checkpoint written), then the evaluation of the recalibrated checkpoint;
* ``evaluation alone``: the evaluation of the checkpoint as trained.

Both include the evaluation report, as in the run loop. The recalibration's cost is bounded by
its batch count, not by the evaluation data: the ratio falls as the evaluation set grows.
"""

import os
import shutil
import tempfile
import time

from benchmarks import measure, project_config, report
from benchmarks.report import RowText
from library.evaluation import recalibration
from library.tensorflow_env import import_tensorflow
from library.evaluation import evaluator
from library.evaluation.evaluator import CheckpointEvaluation
from library.training import invocation
from project.experiment import ImageClassifier

tf = import_tensorflow()
experiment = ImageClassifier()
ModeKeys = tf.estimator.ModeKeys


TEXT = RowText(
    method=(
        "The `default` set fine-tuned on batch statistics (`--fine_tuning --fine_tuning_batch_norm train`, {model}, "
        "{image_size}x{image_size}): a checkpoint evaluated "
        "over the {images:,} benchmark records as the run loop evaluates it at the end of a training cycle (graphs "
        "and sessions built once, by a first evaluation left out of the timing; the report included), with "
        "batch-norm recalibration first ({batches} batches of {train_batch_size} training images through the "
        "training graph, the recalibrated checkpoint written, then evaluated) against the evaluation of the "
        "checkpoint as trained (evaluation batch {eval_batch_size})."
    ),
    results=(
        "{seconds_recalibrated:.2f} s with recalibration (of which {seconds_recalibration:.2f} s recalibrating), "
        "{seconds_alone:.2f} s alone (ratio {time_ratio:.3f}).",
    ),
    findings=(
        "The recalibration's part grows with its batch count, not with the evaluation data: the ratio falls as "
        "the evaluation set grows."
    ),
    not_met=(
        "A run made on a quiet machine before this row had 3 rounds measured 1.53 from a single round, against "
        "1.36-1.38 in two rounds of the run before: first check the spread column. The recalibration is "
        "{batches} training batches forward through the training graph plus a checkpoint write, a fixed cost; "
        "fewer batches (`batch_norm_recalibration_batches`: from 5 on, accuracy no longer moved in "
        "batch_norm_study.md) make it cheaper."
    ),
)


def row(context) -> dict:
    """Row 6: evaluation time with batch-norm recalibration / evaluation alone (a ratio of seconds)."""
    settings, params = project_config.settings_and_params(context, "--fine_tuning", "--fine_tuning_batch_norm", "train")
    run = invocation.Run(settings, experiment, params).with_params(steps_per_epoch=1, train_steps=1)
    params = run.params
    batches = settings.batch_norm_recalibration_batches
    model_dir = tempfile.mkdtemp(prefix="recalibration-", dir=context.output_dir)
    evaluation = CheckpointEvaluation(lambda features, labels, mode: experiment.model_fn(features, labels, mode, params),
                                      run.input_fn(ModeKeys.EVAL), session_config=invocation.session_config(settings))
    recalibrator = recalibration.recalibrator(experiment, params, batches,
                                                         invocation.session_config(settings))
    try:
        estimator = run.estimator(model_dir)
        estimator.train(lambda: experiment.input_fn(params, ModeKeys.TRAIN), max_steps=1)
        checkpoint = tf.train.latest_checkpoint(model_dir)
        seconds = {}

        def evaluated(path):
            """The checkpoint's metrics and report, as evaluator.Evaluator.evaluate makes them."""
            return evaluator.evaluation_results(estimator, params, evaluation.evaluate(path)[1])[0]

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
        context.log(f"  recalibration: {params['hub_module']} fine-tuned, {batches} batches of "
                    f"{params['train_batch_size']}, evaluation batch {params['eval_batch_size']}, "
                    f"{params['image_size']}x{params['image_size']}")
        if not context.quick:  # untimed: builds the graphs and sessions, as a run's first evaluation does
            measure.quietly(recalibrated)()
        done = context.rounds({name: measure.quietly(loop) for name, loop in loops.items()})
    finally:
        evaluation.close()
        recalibrator.close()
        shutil.rmtree(model_dir, ignore_errors=True)
    summary = measure.ratio_summary(done, "evaluation alone", "recalibrated")  # rates: the inverse ratio of seconds
    figures = {
        "model": os.path.basename(params["hub_module"]),
        "batches": batches,
        "train_batch_size": params["train_batch_size"],
        "eval_batch_size": params["eval_batch_size"],
        "image_size": params["image_size"],
        "images": experiment.train_examples(params),  # evaluation reads the training records
        "seconds_recalibrated": measure.median_detail(done, "recalibrated", "seconds"),
        "seconds_recalibration": measure.median_detail(done, "recalibrated", "recalibration_seconds"),
        "seconds_alone": measure.median_detail(done, "evaluation alone", "seconds"),
        "time_ratio": summary["ratio"],
    }
    return report.row(
        "recalibration", "evaluation time with batch-norm recalibration vs evaluation alone", figures,
        [report.target("evaluation: time with batch-norm recalibration / alone", summary["ratio"], "<=", 1.5, "",
                       noise=summary, measured="{seconds_recalibrated:.1f} vs {seconds_alone:.1f} s")],
        text=TEXT,
    )

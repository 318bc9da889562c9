"""Row 5: what the evaluation report adds to an evaluation's time.

The `default` set, with the images through its frozen module (no feature cache), evaluates a
checkpoint of its own (one training step from the random start) on the benchmark records, as
the run loop does after a training cycle, twice:

* ``with report``: ``evaluator.evaluate_checkpoint`` (the confusion matrix and the worst
  mistakes streamed with the other metrics, then the images drawn and the summaries
  written) and the JSON report written beside evaluations.jsonl;
* ``without``: the same Estimator evaluation with the report's metrics left out of the
  model_fn's EstimatorSpec, nothing drawn or written.

Each is a whole ``Estimator.evaluate`` call (graph, session, restoring the checkpoint, one
pass over the data), which is what a person waits for; one untimed evaluation with the report
comes first, as matplotlib's import is paid once per process, not per evaluation. The CPU time
the two take is given as a reference: on a machine that others keep busy it moves far less
than the wall time.
"""

import os
import shutil
import statistics
import tempfile
import time

from benchmarks import measure, project_config, report
from benchmarks.report import RowText
from library.evaluation import report as evaluation_report
from library.tensorflow_env import import_tensorflow
from library.evaluation import evaluator
from library.training import invocation
from project.experiment import ImageClassifier

tf = import_tensorflow()
experiment = ImageClassifier()
ModeKeys = tf.estimator.ModeKeys


def without_report(features, labels, mode, params):
    """The project's model_fn with the evaluation report's metrics left out."""
    spec = experiment.model_fn(features, labels, mode, params)
    if mode != ModeKeys.EVAL:
        return spec
    metrics = {name: metric for name, metric in spec.eval_metric_ops.items()
               if name != evaluation_report.CONFUSION_MATRIX and not name.startswith(evaluation_report.MISTAKES)}
    return spec._replace(eval_metric_ops=metrics)


def timed(evaluate) -> tuple:
    """(evaluations/s, details) of one call of ``evaluate``, which returns the scalar results."""
    started = time.perf_counter()
    results = evaluate()
    seconds = time.perf_counter() - started
    return 1 / seconds, {"seconds": seconds, "accuracy": results["accuracy"]}


TEXT = RowText(
    method=(
        "A whole `Estimator.evaluate` of a checkpoint of the `default` set ({model}, {image_size}x{image_size}, "
        "batch {batch_size}, {classes} classes, the images through the frozen module: `--no-cache_features`) "
        "over the {images:,} benchmark records, as the run loop runs it after a training cycle: with the "
        "evaluation report (the confusion matrix and the 16 most confident mistakes streamed with the other "
        "metrics, then the two images drawn with matplotlib, the summaries and the JSON written) against the "
        "same evaluation with the report's metrics left out of the EstimatorSpec. One untimed evaluation with "
        "the report comes first: matplotlib's import (~0.5 s) is paid once per process. (In training the images "
        "are drawn in a thread of their own while training goes on, row 7; here, as `--mode evaluate` does, "
        "before the evaluation returns.)"
    ),
    results=(
        "{seconds_with_report:.2f} s with the report, {seconds_without:.2f} s without (ratio {time_ratio:.3f}); "
        "CPU time {cpu_seconds_with_report:.1f} s vs {cpu_seconds_without:.1f} s (median of every round, "
        "disturbed ones included).",
    ),
    findings=(
        "The report's cost is mostly fixed (drawing two images, writing the JSON and the summaries), so its share "
        "falls as the evaluation set grows and rises as an evaluation gets cheaper: on cached features an "
        "evaluation is a pass of the head over stored features, and the fixed part weighs more."
    ),
)


def row(context) -> dict:
    """Row 5: evaluation time with the report / without (a ratio of seconds, so lower is better)."""
    settings, params = project_config.settings_and_params(context)
    model_dir = tempfile.mkdtemp(prefix="evaluation-", dir=context.output_dir)
    try:
        run = invocation.Run(settings, experiment, params).with_params(steps_per_epoch=1, train_steps=1)
        estimator = run.estimator(model_dir)
        estimator.train(lambda: experiment.input_fn(params, ModeKeys.TRAIN), max_steps=1)
        checkpoint = tf.train.latest_checkpoint(model_dir)
        bare = tf.estimator.Estimator(without_report, model_dir, estimator.config, estimator.params)

        def with_report():
            results, evaluation = evaluator.evaluate_checkpoint(run, estimator, checkpoint)
            evaluation_report.write_json(evaluation_report.json_path(model_dir, results["global_step"]), evaluation)
            return results

        def without():
            return evaluator.plain(bare.evaluate(lambda: experiment.input_fn(params, ModeKeys.EVAL),
                                                checkpoint_path=checkpoint))

        loops = {"with report": lambda: timed(with_report), "without": lambda: timed(without)}
        context.log(f"  evaluation: {params['hub_module']}, batch {params['eval_batch_size']}, "
                    f"{params['image_size']}x{params['image_size']}, {params['num_classes']} classes")
        if not context.quick:  # untimed: the first report of a process imports matplotlib (~0.5 s), once per run
            measure.quietly(with_report)()
        done = context.rounds({name: measure.quietly(loop) for name, loop in loops.items()})
    finally:
        shutil.rmtree(model_dir, ignore_errors=True)
    # Rates are evaluations/s, so without / with is the time with the report over the time without.
    summary = measure.ratio_summary(done, "without", "with report")
    cpu_seconds = {name: statistics.median(r[name].cores * r[name].seconds for r in done) for name in loops}
    figures = {
        "model": os.path.basename(params["hub_module"]),
        "batch_size": params["eval_batch_size"],
        "image_size": params["image_size"],
        "classes": params["num_classes"],
        "images": experiment.train_examples(params),  # evaluation reads the training records
        "seconds_with_report": measure.median_detail(done, "with report", "seconds"),
        "seconds_without": measure.median_detail(done, "without", "seconds"),
        "time_ratio": summary["ratio"],
        "cpu_seconds_with_report": cpu_seconds["with report"],
        "cpu_seconds_without": cpu_seconds["without"],
    }
    return report.row(
        "evaluation",
        "evaluation time with the report (confusion matrix, per-class figures, worst mistakes) vs without",
        figures,
        [report.target("evaluation: time with the report / without", summary["ratio"], "<=", 1.10, "", noise=summary,
                       measured="{seconds_with_report:.1f} vs {seconds_without:.1f} s")],
        text=TEXT,
        references=[report.reference("evaluation: CPU time with the report / without, every round",
                                     cpu_seconds["with report"] / cpu_seconds["without"])],
    )

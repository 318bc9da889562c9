"""Row 10: fine-tuning steps/s through run.py against a bare Session loop over the same graph and input.

The documented fine-tuning recipe (``--hyperparameter_set mobilenet``: the module trained with the
head, its batch norm frozen) on the small CNN as a hub module (``project_config``), its
fine-tuning phase alone (``--head_epochs 0``: a head phase changes the starting values, not a
step), in two loops, a fresh graph each round:

* ``run.py``: ``run.main`` in this process, as a user runs it (the run loop's hooks, the cycles
  hook, the progress bar, summaries, checkpoints), its steps timed by a hook of their own
  (``waiting.timed_steps``); it trains one epoch of a few shards, so that its window is one epoch's
  steps, and evaluates once, after the window, on one shard;
* ``session``: row 3's bare ``tf.compat.v1.Session`` loop running only the model_fn's train_op over
  the same ``input_fn``.

Steady state over the same window of steps after a warm-up.
"""

import os
import shutil
import tempfile

from benchmarks import measure, project_config, report, waiting
from benchmarks.report import RowText
from benchmarks.training import Steps, session_loop, training_params, window
from project import feature_extractor

# A fine-tuning step takes ~0.5 s on 2 quiet cores, as row 3's end to end.
STEPS = {"full": Steps(3, 15, 0), "quick": Steps(1, 2, 0)}
# run.py trains whole epochs: 3 of the 8 shards (~750 images, ~23 steps) hold the full window; --quick's 200 all.
TRAIN_SHARDS = {"full": "train-0000[0-2]-of-*.tfrecord", "quick": "train-*.tfrecord"}
RECIPE = ("--hyperparameter_set", "mobilenet", "--head_epochs", "0", "--train_epochs", "1", "--epochs_between_evals",
          "1", "--random_seed", "0")


def recipe_argv(context, out: str) -> list:
    """run.py arguments of the fine-tuning recipe on the benchmark records, its directories under ``out``."""
    records = context.records_dir
    return project_config.run_argv(
        context, *RECIPE, "--train_data", os.path.join(records, TRAIN_SHARDS[context.size]),
        "--eval_data", os.path.join(records, "train-00000-of-*.tfrecord"),
        "--model_dir", os.path.join(out, "model"), "--best_model_dir", os.path.join(out, "best"))


def run_py_loop(context, steps: Steps) -> tuple:
    """(steps/s, median and slowest step) of run.py's fine-tuning steps over the window of ``steps``."""
    out = tempfile.mkdtemp(prefix="fine-tuning-", dir=context.output_dir)
    try:
        with waiting.timed_steps() as events:
            waiting.run_quietly(recipe_argv(context, out))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return window([end for kind, _, end in events if kind == "train"], steps)


TEXT = RowText(
    method=(
        "The documented fine-tuning recipe (`--hyperparameter_set mobilenet`: the module trained with the head, its "
        "batch norm {batch_norm}) on {model} at {image_size}x{image_size}, batch {batch_size}, its fine-tuning phase "
        "alone (`--head_epochs 0`: a head phase changes where the weights start, not a step): `run.py` as a user "
        "runs it (`run.main` in the suite's process: the run loop's hooks, the cycles hook, the progress bar, "
        "summaries and checkpoints; one epoch of 3 shards, evaluated once at its end on one shard), its steps "
        "timed by a hook, against row 3's bare Session loop running only the train_op over the same `input_fn`, a "
        "fresh graph each round: steady state over {timed_steps} steps after {warmup_steps} (the step-0 "
        "checkpoint and summary, and the evaluation, fall outside)."
    ),
    results=(
        "{steps_per_sec_run_py:.2f} vs {steps_per_sec_session:.2f} steps/s; median step {step_ms_median_run_py:.0f} "
        "ms vs {step_ms_median_session:.0f} ms, slowest {step_ms_max_run_py:.0f} ms vs {step_ms_max_session:.0f} ms.",
    ),
    not_met=(
        "A fine-tuning step is heavy (the whole network forward and backward), so what run.py adds per step (its "
        "hooks fetch the loss and the global step) is a fraction of a percent of it: a miss is first a question "
        "for the spread column. Measured by hand on flowers_small's 800 training photos (5 warm-up + 20 timed "
        "steps, 3 rounds, another process on about one of the 2 cores): 1.00 and 1.01, one round 0.74 while "
        "another process took a core."
    ),
)


def row(context) -> dict:
    """Row 10: steps/s of the fine-tuning recipe through run.py / a bare Session loop."""
    steps = STEPS[context.size]
    settings, params = project_config.parsed(recipe_argv(context, context.output_dir))
    params = training_params(settings, params)
    model = os.path.basename(params["hub_module"])
    context.log(f"  fine-tuning through run.py: {model}, batch {settings.train_batch_size}, batch norm "
                f"{feature_extractor.batch_norm_mode(params)}, {steps.warmup} warm-up + {steps.timed} timed steps")
    done = context.rounds({"run.py": lambda: run_py_loop(context, steps),
                           "session": lambda: session_loop(settings, params, steps)})
    summary = measure.ratio_summary(done, "run.py", "session")
    figures = {
        "model": model, "batch_size": settings.train_batch_size, "image_size": params["image_size"],
        "batch_norm": feature_extractor.batch_norm_mode(params),
        "warmup_steps": steps.warmup, "timed_steps": steps.timed,
        **{f"steps_per_sec_{key}": measure.median_value(done, name) for name, key in (("run.py", "run_py"),
                                                                                       ("session", "session"))},
        **{f"step_ms_{kind}_{key}": measure.median_detail(done, name, f"step_ms_{kind}")
           for kind in ("median", "max") for name, key in (("run.py", "run_py"), ("session", "session"))},
        "ratio": summary["ratio"],
    }
    return report.row(
        "fine_tuning", "fine-tuning steps/s through run.py vs a bare Session loop, same graph and input", figures,
        [report.target("fine-tuning: run.py / bare Session, steps/s", summary["ratio"], ">=", 0.95, "",
                       noise=summary, measured="{steps_per_sec_run_py:.2f} vs {steps_per_sec_session:.2f} steps/s")],
        text=TEXT,
    )

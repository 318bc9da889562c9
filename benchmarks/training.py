"""Rows 3 and 4: training steps/s with the real input vs a cached batch, and Estimator.train vs a bare Session.

The `default` set (batch 32) on the small CNN as a 224x224 hub module (``project_config``) in
three configurations: as the set trains its module (fine_tuning False: the feature extractor runs
forward only, the head trains), the same with ``--cache_features`` (the head trains on the
module's features, computed once: the target of row 3's head-only line) and end to end
(``--fine_tuning``: the whole small CNN trains). Loops over the model_fn's train_op, each in
a fresh graph:

* ``estimator`` (as is): ``Estimator.train`` as the run loop calls it (run_loop.make_estimator's
  RunConfig, the run loop's hooks, summaries every 100 steps, checkpoints every
  save_checkpoints_secs) over the real ``input_fn``;
* ``session`` (both configurations): a bare ``tf.compat.v1.Session`` loop running only the
  train_op, same input;
* ``synthetic`` (both): the same Session loop fed one real preprocessed batch cached in memory
  (``Dataset.from_tensors(batch).repeat()``), so the input costs nothing.

Rates are taken over a steady-state window of steps after a warm-up (graph building,
session creation, the first checkpoint and summary fall outside it; the head-only window
of the full suite spans 100 steps, so it holds one periodic summary). The checkpoint cost
is added back, amortized: the longest checkpoint save over save_checkpoints_secs. After
the window, the Session loops trace a few steps for per-op timing and the wait for input.
"""

import collections
import contextlib
import os
import re
import shutil
import statistics
import tempfile
import time

from benchmarks import measure, project_config
from benchmarks.report import target
from library import distribution, run_loop
from library.hooks import ProgressBarHook, StopOnNonFiniteLossHook
from library.tensorflow_env import filtered_stderr, import_tensorflow
from project.experiment import ImageClassifier

tf = import_tensorflow()
experiment = ImageClassifier()
ModeKeys = tf.estimator.ModeKeys
END_TO_END_SECONDS = 50  # a round of the end-to-end loops on a quiet 2-core machine, kept for them
# A head's step on cached features takes ~0.3 ms: this many times the head-only steps make a window long enough.
CACHED_FEATURES_STEPS = 20
TRACED_STEPS = 5  # steps run with a full trace after the timed window: per-op timing, and the wait for input
# The cached batch has nothing to tune; without tf.data's autotuning thread, closing its session does
# not wait for that thread's timed sleep (seconds, growing with the run: see RESULTS.md, row 4).
NOTHING_TO_TUNE = tf.data.Options()
NOTHING_TO_TUNE.autotune.enabled = False
TRACE_NOISE = re.compile(r"GPU trace was not collected")  # logged by every traced step on a machine without a GPU


class StepTimes(tf.estimator.SessionRunHook):
    """Records when each training step ends."""

    def __init__(self):
        self.times = []

    def after_run(self, run_context, run_values):
        self.times.append(time.perf_counter())


class CheckpointTimes(tf.estimator.CheckpointSaverListener):
    """Records how long each checkpoint save takes."""

    def __init__(self):
        self.seconds = []

    def before_save(self, session, global_step_value):
        self._started = time.perf_counter()

    def after_save(self, session, global_step_value):
        self.seconds.append(time.perf_counter() - self._started)


def window_rate(times: list, warmup: int, steps: int) -> float:
    """Steps/s over the ``steps`` steps after the first ``warmup`` (``times``: when each step ended)."""
    return steps / (times[warmup + steps - 1] - times[warmup - 1])


def training_params(settings, params) -> dict:
    """params plus the epoch figures run_loop.train adds before it builds the Estimator."""
    plan = run_loop.plan_training(settings, experiment.train_examples(params), settings.train_batch_size)
    return {**params, "steps_per_epoch": plan.steps_per_epoch, "train_steps": plan.total_steps}


def estimator_loop(settings, params, warmup: int, steps: int, work_dir: str):
    """Steps/s of Estimator.train over the real input, configured and hooked as run_loop.Training.in_cycles does."""
    model_dir = tempfile.mkdtemp(prefix="estimator-", dir=work_dir)
    try:
        estimator = run_loop.Run(settings, experiment, params).estimator(model_dir)
        step_times, checkpoints = StepTimes(), CheckpointTimes()
        total = warmup + steps
        hooks = [
            StopOnNonFiniteLossHook(),
            ProgressBarHook(0, total, settings.train_batch_size, "benchmark"),
            step_times,
        ]
        train_input_fn = distribution.training_input_fn(experiment.input_fn, params, settings.distribution, {})
        with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):  # the progress bar, drawn
            started = time.perf_counter()
            estimator.train(train_input_fn, max_steps=total, hooks=hooks, saving_listeners=[checkpoints])
            ended = time.perf_counter()
    finally:
        shutil.rmtree(model_dir, ignore_errors=True)
    times = step_times.times
    return window_rate(times, warmup, steps), {
        "step_ms_median": 1000 * statistics.median(b - a for a, b in zip(times[warmup - 1:], times[warmup:])),
        "step_ms_max": 1000 * max(b - a for a, b in zip(times[warmup - 1:], times[warmup:])),
        "checkpoint_seconds": max(checkpoints.seconds),
        "end_seconds": ended - times[-1],  # the final checkpoint, hooks' end, closing the session
        "call_seconds": ended - started,
    }


def one_batch(params):
    """One real training batch (features, labels) as numpy arrays."""
    with tf.Graph().as_default():
        element = tf.compat.v1.data.make_one_shot_iterator(experiment.input_fn(params, ModeKeys.TRAIN)).get_next()
        with tf.compat.v1.Session() as session:
            return session.run(element)


def session_loop(settings, params, warmup: int, steps: int, cached_batch=None):
    """Steps/s of a bare Session running the model_fn's train_op: over input_fn, or over ``cached_batch`` repeated."""
    with tf.Graph().as_default():
        if settings.random_seed is not None:
            tf.compat.v1.set_random_seed(settings.random_seed)  # as RunConfig.tf_random_seed does
        tf.compat.v1.train.get_or_create_global_step()  # Estimator creates it before input_fn and model_fn
        if cached_batch is None:
            dataset = experiment.input_fn(params, ModeKeys.TRAIN)
        else:
            dataset = tf.data.Dataset.from_tensors(cached_batch).repeat().with_options(NOTHING_TO_TUNE)
        iterator = tf.compat.v1.data.make_initializable_iterator(dataset)
        features, labels = iterator.get_next()
        train_op = experiment.model_fn(features, labels, ModeKeys.TRAIN, params).train_op
        initializers = [
            tf.compat.v1.global_variables_initializer(), tf.compat.v1.local_variables_initializer(),
            tf.compat.v1.tables_initializer(), iterator.initializer,
        ]
        with tf.compat.v1.Session(config=run_loop.session_config(settings)) as session:
            session.run(initializers)
            times = []
            for _ in range(warmup + steps):
                session.run(train_op)
                times.append(time.perf_counter())
            profile = traced_profile(session, train_op)
    intervals = [b - a for a, b in zip(times[warmup - 1:], times[warmup:])]
    return window_rate(times, warmup, steps), {
        "step_ms_median": 1000 * statistics.median(intervals),
        "step_ms_max": 1000 * max(intervals),
        **profile,
    }


def traced_profile(session, train_op) -> dict:
    """Per-op timing of a few fully traced steps: ms a step per op type, and how long the step waits for input.

    ``input_wait_ms`` is IteratorGetNext's time (median over the steps): near zero when the
    batch is always ready. ``op_ms``: each op type's summed run time per step (mean).
    """
    options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
    waits, op_ms = [], collections.Counter()
    for _ in range(TRACED_STEPS):
        metadata = tf.compat.v1.RunMetadata()
        with filtered_stderr(TRACE_NOISE):
            session.run(train_op, options=options, run_metadata=metadata)
        wait = 0.0
        for device in metadata.step_stats.dev_stats:
            for node in device.node_stats:
                milliseconds = node.all_end_rel_micros / 1000
                op_ms[op_type(node)] += milliseconds / TRACED_STEPS
                if node.node_name.startswith("IteratorGetNext"):
                    wait += milliseconds
        waits.append(wait)
    return {"input_wait_ms": statistics.median(waits), "op_ms": dict(op_ms)}


def op_type(node) -> str:
    """The op type of a traced node (its timeline label reads "name = Type(inputs)")."""
    label = node.timeline_label
    return label.split(" = ", 1)[1].split("(", 1)[0] if " = " in label else node.node_name.split(":")[0]


def run(records_dir: str, work_dir: str, warmup: int, steps: int, fine_tuning_steps: int, input_rate: float,
        budget, rounds: int, head_only_rounds: int, max_extra: int, quiet_wait: float, log=print) -> tuple:
    """Rows 3 and 4. ``input_rate``: row 2's pipeline images/s, to say what share of the machine the input takes.

    Each loop's rate varies by a few percent from one graph and session to the next (thread
    placement, memory), even on a quiet machine, so the cheap head-only loops run
    ``head_only_rounds`` rounds, the end-to-end ones ``rounds``.
    """
    # Images through the frozen module every step (the `default` set caches its features: the cached-features loops)
    settings, params = project_config.settings_and_params(records_dir, "--no-cache_features")
    params = training_params(settings, params)
    tuned_settings, tuned_params = project_config.settings_and_params(records_dir, "--fine_tuning")
    tuned_params = training_params(tuned_settings, tuned_params)
    features_settings, features_params = project_config.settings_and_params(
        records_dir, "--cache_features", "--model_dir", os.path.join(work_dir, "cached-features", "model"))
    features_params = training_params(features_settings, features_params)
    cached = one_batch(params)  # the same preprocessing in both configurations
    cached_features = one_batch(features_params)  # computes the feature cache first, outside every timed window
    tuned_warmup = min(warmup, 5)
    head_loops = {
        "estimator": lambda: estimator_loop(settings, params, warmup, steps, work_dir),
        "session": lambda: session_loop(settings, params, warmup, steps),
        "synthetic": lambda: session_loop(settings, params, warmup, steps, cached),
        "features session": lambda: session_loop(features_settings, features_params, warmup,
                                                 steps * CACHED_FEATURES_STEPS),
        "features synthetic": lambda: session_loop(features_settings, features_params, warmup,
                                                   steps * CACHED_FEATURES_STEPS, cached_features),
    }
    tuned_loops = {
        "fine-tuning session": lambda: session_loop(tuned_settings, tuned_params, tuned_warmup, fine_tuning_steps),
        "fine-tuning synthetic": lambda: session_loop(tuned_settings, tuned_params, tuned_warmup, fine_tuning_steps,
                                                      cached),
    }
    log(f"  training, head only: {params['hub_module']}, batch {settings.train_batch_size}, {params['image_size']}x"
        f"{params['image_size']}, {warmup} warm-up + {steps} timed steps")
    head_budget = measure.Budget(budget.left() - END_TO_END_SECONDS * rounds)
    head_done = measure.rounds(head_loops, head_only_rounds, head_budget, max_extra, quiet_wait, log)
    log(f"  training, end to end (--fine_tuning): {tuned_warmup} warm-up + {fine_tuning_steps} timed steps")
    tuned_done = measure.rounds(tuned_loops, rounds, budget, max_extra, quiet_wait, log)
    done = {**{name: head_done for name in head_loops}, **{name: tuned_done for name in tuned_loops}}
    head_only = measure.ratio_summary(head_done, "session", "synthetic")
    head_only_features = measure.ratio_summary(head_done, "features session", "features synthetic")
    end_to_end = measure.ratio_summary(tuned_done, "fine-tuning session", "fine-tuning synthetic")
    overhead = measure.ratio_summary(head_done, "estimator", "session")

    def detail(name, key):
        return measure.median_detail(done[name], name, key)

    rates = {name: measure.median_value(done[name], name) for name in done}
    batch = settings.train_batch_size
    input_ms_per_step = 1000 * batch / input_rate  # the whole machine's time the input work of one step takes

    def op_profile(real, synthetic, prefix):
        """The op types that take most of a step, real input vs cached batch (per-op timing of traced steps)."""
        used = measure.used_samples(done[real], real, synthetic)

        def mean_op_ms(name):
            total = collections.Counter()
            for r in used:
                total.update(r[name].details["op_ms"])
            return collections.Counter({kind: ms / len(used) for kind, ms in total.items()})

        real_ms, cached_ms = mean_op_ms(real), mean_op_ms(synthetic)
        top = [kind for kind, _ in (real_ms + cached_ms).most_common(3)]
        return {
            f"{prefix}_ops_ms_real": sum(real_ms.values()),
            f"{prefix}_ops_ms_synthetic": sum(cached_ms.values()),
            f"{prefix}_top_ops": [[kind, real_ms[kind], cached_ms[kind]] for kind in top],
        }

    def expected(synthetic_step_ms):
        """The ratio if the input's work simply added to each step on the shared cores."""
        return synthetic_step_ms / (synthetic_step_ms + input_ms_per_step)

    common = {
        "model": params["hub_module"],
        "batch_size": batch,
        "image_size": params["image_size"],
        "input_images_per_sec_alone": input_rate,
        "input_ms_per_step_alone": input_ms_per_step,
    }
    training_row = {
        "id": "training",
        "title": "training steps/s, real input_fn vs a cached batch",
        "figures": {
            **common,
            "end_to_end_warmup_steps": tuned_warmup,
            "end_to_end_timed_steps": fine_tuning_steps,
            "end_to_end_steps_per_sec_real_input": rates["fine-tuning session"],
            "end_to_end_steps_per_sec_synthetic": rates["fine-tuning synthetic"],
            "end_to_end_real_vs_synthetic": end_to_end["ratio"],
            "end_to_end_step_ms_real": detail("fine-tuning session", "step_ms_median"),
            "end_to_end_step_ms_synthetic": detail("fine-tuning synthetic", "step_ms_median"),
            "end_to_end_input_wait_ms": detail("fine-tuning session", "input_wait_ms"),
            "end_to_end_expected_from_cpu_sharing": expected(detail("fine-tuning synthetic", "step_ms_median")),
            **op_profile("fine-tuning session", "fine-tuning synthetic", "end_to_end"),
            "head_only_warmup_steps": warmup,
            "head_only_timed_steps": steps,
            "head_only_steps_per_sec_real_input": rates["session"],
            "head_only_steps_per_sec_synthetic": rates["synthetic"],
            "head_only_real_vs_synthetic": head_only["ratio"],
            "head_only_step_ms_real": detail("session", "step_ms_median"),
            "head_only_step_ms_synthetic": detail("synthetic", "step_ms_median"),
            "head_only_input_wait_ms": detail("session", "input_wait_ms"),
            "head_only_input_wait_ms_synthetic": detail("synthetic", "input_wait_ms"),
            "head_only_expected_from_cpu_sharing": expected(detail("synthetic", "step_ms_median")),
            **op_profile("session", "synthetic", "head_only"),
            "cached_features_timed_steps": steps * CACHED_FEATURES_STEPS,
            "cached_features_steps_per_sec_real_input": rates["features session"],
            "cached_features_steps_per_sec_synthetic": rates["features synthetic"],
            "cached_features_real_vs_synthetic": head_only_features["ratio"],
            "cached_features_step_ms_real": detail("features session", "step_ms_median"),
            "cached_features_step_ms_synthetic": detail("features synthetic", "step_ms_median"),
        },
        "targets": [
            target("training: small CNN end to end (fine_tuning), real input_fn / cached batch", end_to_end["ratio"],
                   ">=", 0.95, "", end_to_end),
            target("training: head only on the frozen small CNN module with cache_features, real input_fn / cached batch",
                   head_only_features["ratio"], ">=", 0.95, "", head_only_features),
        ],
        "references": [{"name": "training: head only without cache_features (images through the frozen module "
                                "every step, the `default` set as is), real / cached", "value": head_only["ratio"],
                        "unit": ""}],
    }
    checkpoint_seconds = detail("estimator", "checkpoint_seconds")
    amortized = settings.save_checkpoints_secs / (settings.save_checkpoints_secs + checkpoint_seconds)
    overhead_row = {
        "id": "framework_overhead",
        "title": "Estimator.train vs a bare Session loop, same graph and input",
        "figures": {
            **common,
            "warmup_steps": warmup,
            "timed_steps": steps,
            "steps_per_sec_estimator": rates["estimator"],
            "steps_per_sec_session": rates["session"],
            "steady_state_ratio": overhead["ratio"],
            "step_ms_median_estimator": detail("estimator", "step_ms_median"),
            "step_ms_median_session": detail("session", "step_ms_median"),
            "step_ms_max_estimator": detail("estimator", "step_ms_max"),
            "step_ms_max_session": detail("session", "step_ms_max"),
            "checkpoint_seconds": checkpoint_seconds,
            "save_checkpoints_secs": settings.save_checkpoints_secs,
            "end_of_training_seconds_max": max(r["estimator"].details["end_seconds"] for r in head_done),
            "estimator_vs_session": overhead["ratio"] * amortized,
        },
        "targets": [target("framework: Estimator.train / bare Session, steps/s", overhead["ratio"] * amortized,
                           ">=", 0.95, "", overhead)],
    }
    return training_row, overhead_row

"""Rows 7 and 8: the time a person waits for a training run, whole `run.py` runs timed from outside.

7. cycles: ``run.py`` training a few epochs and evaluating after every epoch against the same
   epochs evaluated once at the end (~200 training and ~60 test images converted from the
   benchmark photos at 192 px, small_cnn trained end to end at 128x128, batch 16). Timestamps
   of every training step and evaluation (:func:`timed_steps`) give the idle wall time from a
   cycle's last training step to the evaluation and from the evaluation to the next cycle's
   first step.
8. feature cache: head-only training on the frozen, pretrained EfficientNet-Lite0 (the `default`
   set as is, on the cycles row's small set) with ``cache_features`` against without: the time
   of an epoch (from the steps' timestamps, graph building and the caching pass left out), the
   caching pass (training and evaluation features, computed before training) against one
   uncached epoch, and the accuracy each reaches.
"""

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from unittest import mock

import run
from benchmarks import measure, project_config, report
from benchmarks.report import RowText
from library.data import feature_cache
from library.tensorflow_env import import_tensorflow
from library.evaluation import evaluator
from project import cached_features

tf = import_tensorflow()
ModeKeys = tf.estimator.ModeKeys
SMALL_SET = {"train": 100, "test": 30}  # at most, images per class of each split of the cycles row (2 classes)
CYCLES_IMAGE_SIZE = {"full": 128, "quick": 64}
CYCLES_BATCH = 16


class StepTimes(tf.estimator.SessionRunHook):
    """Appends (kind, start, end) of every step of an Estimator call to ``events``."""

    def __init__(self, kind: str, events: list):
        self.kind, self.events = kind, events

    def before_run(self, run_context):
        self.started = time.perf_counter()

    def after_run(self, run_context, run_values):
        self.events.append((self.kind, self.started, time.perf_counter()))


@contextlib.contextmanager
def timed_steps():
    """Within the block, every step of Estimator.train and evaluate calls and every in-session evaluation
    (evaluator.CheckpointEvaluation) appends (kind, start, end) to the yielded list."""
    events = []
    original = {"train": tf.estimator.Estimator.train, "evaluate": tf.estimator.Estimator.evaluate,
                "checkpoint": evaluator.CheckpointEvaluation.evaluate}

    def hooked(kind):
        def call(self, *args, hooks=None, **kwargs):  # first, so that a step ends before other hooks' work
            return original[kind](self, *args, hooks=[StepTimes(kind, events), *(hooks or [])], **kwargs)
        return call

    def timed_evaluation(self, checkpoint):
        started = time.perf_counter()
        try:
            return original["checkpoint"](self, checkpoint)
        finally:
            events.append(("evaluate", started, time.perf_counter()))

    with mock.patch.object(tf.estimator.Estimator, "train", hooked("train")), \
            mock.patch.object(tf.estimator.Estimator, "evaluate", hooked("evaluate")), \
            mock.patch.object(evaluator.CheckpointEvaluation, "evaluate", timed_evaluation):
        yield events


def gaps(events: list) -> dict:
    """Idle seconds from the last training step to the evaluation's start, and from its end to the next step."""
    found = {"train_to_eval": [], "eval_to_train": []}
    for (kind, _, end), (next_kind, start, _) in zip(events, events[1:]):
        if kind != next_kind:
            found["train_to_eval" if kind == "train" else "eval_to_train"].append(start - end)
    return found


def run_quietly(argv: list) -> None:
    """run.py's main with its output discarded; raises unless it succeeds."""
    with measure.quiet_output():
        code = run.main(argv)
    if code:
        raise RuntimeError(f"run.py {' '.join(argv)} exited with {code}")


def small_set(photos_dir: str, work_dir: str) -> tuple:
    """(records folder, {split: images}) of ~200 training and ~60 test images of the benchmark photos, converted
    once: the last SMALL_SET["test"] photos of each class for testing, up to SMALL_SET["train"] before them."""
    records = os.path.join(work_dir, "small-set")
    counts = {}
    for split in ("train", "test"):
        folder = os.path.join(work_dir, "small-set-photos", split)
        for name in sorted(entry.name for entry in os.scandir(photos_dir) if entry.is_dir()):
            os.makedirs(os.path.join(folder, name), exist_ok=True)
            photos = sorted(os.listdir(os.path.join(photos_dir, name)))
            test_start = len(photos) - SMALL_SET["test"]
            chosen = photos[test_start:] if split == "test" else photos[:min(SMALL_SET["train"], test_start)]
            counts[split] = counts.get(split, 0) + len(chosen)
            for photo in chosen:
                if not os.path.exists(os.path.join(folder, name, photo)):
                    os.link(os.path.join(photos_dir, name, photo), os.path.join(folder, name, photo))
        if os.path.exists(os.path.join(records, split, f"{split}-manifest.json")):
            continue
        argv = [sys.executable, os.path.join(project_config.ROOT, "convert_dataset.py"), "--dataset_dir", folder,
                "--tfrecord_filename", split, "--tfrecord_dir", os.path.join(records, split),
                "--max_edge", "192", "--num_workers", "1"]
        if split == "test":
            argv += ["--labels_file", os.path.join(records, "train", "labels.txt")]
        # as users run it (and as row 1 does): its spawned workers then never re-import a caller's __main__
        result = subprocess.run(argv, capture_output=True, text=True, cwd=project_config.ROOT)
        if result.returncode:
            raise RuntimeError(f"{' '.join(argv[1:])} exited with {result.returncode}: {result.stderr[-500:]}")
    return records, counts


def cycles_run(records: str, work_dir: str, epochs: int, between: int, *extra: str) -> tuple:
    """(1 / seconds, details) of one run.py training run of ``epochs`` epochs, evaluating every ``between``."""
    out = tempfile.mkdtemp(prefix="cycles-", dir=work_dir)
    argv = ["--project_file", os.path.join(project_config.ROOT, "project.yaml"), "--config_set", "default",
            "--train_data", os.path.join(records, "train", "train-*.tfrecord"),
            "--eval_data", os.path.join(records, "test", "test-*.tfrecord"),
            "--labels_file", os.path.join(records, "train", "labels.txt"), "--hub_module", "small_cnn", "--fine_tuning",
            "--train_batch_size", str(CYCLES_BATCH), "--random_seed", "0",
            "--train_epochs", str(epochs), "--epochs_between_evals", str(between),
            "--early_stopping_evaluations", "0",  # every run trains all its epochs
            "--model_dir", os.path.join(out, "model"), "--best_model_dir", os.path.join(out, "best"), *extra]
    try:
        with timed_steps() as events:
            started = time.perf_counter()
            run_quietly(argv)
            seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(out, ignore_errors=True)
    found = gaps(events)
    return 1 / seconds, {"seconds": seconds, "train_to_eval_max": max(found["train_to_eval"]),
                         "eval_to_train_max": max(found["eval_to_train"] or [0.0]),
                         "train_to_eval_median": statistics.median(found["train_to_eval"]),
                         "eval_to_train_median": statistics.median(found["eval_to_train"] or [0.0])}


CYCLES_EPOCHS = {"full": 6, "quick": 1}  # a run of 6 epochs takes ~8 s on 2 quiet cores

CYCLES_TEXT = RowText(
    method=(
        "`run.py` training {epochs} epochs of {training_images} images (small_cnn trained end to end, "
        "{image_size}x{image_size}, batch {batch_size}), evaluating its {test_images} test images after every "
        "epoch, against the same run evaluating once at the end: whole `run.main` calls in the suite's process, "
        "graph building included, after one untimed run that loads what later runs reuse (matplotlib, the "
        "network's module spec). The target is measured with batch-norm recalibration off, as the issue that set "
        "it measured it (the recalibration did not exist yet); one round with it on, as fine-tuning runs by "
        "default, is the reference. Timestamps of every training step and of every evaluation (recalibration "
        "included) give the idle wall time between cycles."
    ),
    results=(
        "recalibration off: {seconds_every_epoch:.1f} s evaluating every epoch, {seconds_once:.1f} s once "
        "(ratio {time_ratio:.2f}).",
        "recalibration on: {seconds_every_epoch_recalibrated:.1f} s vs {seconds_once_recalibrated:.1f} s "
        "(ratio {time_ratio_recalibrated:.2f}).",
        "from a cycle's last training step to its evaluation: median {train_to_eval_median_every_epoch:.2f} s, at "
        "most {train_to_eval_max_every_epoch:.2f} s; from the evaluation's end to the next cycle's first step: "
        "median {eval_to_train_median_every_epoch:.2f} s. The run evaluating once: "
        "{train_to_eval_max_once:.2f} s from its last step to its evaluation.",
    ),
    findings=(
        "Before issue 15 the same comparison measured 2.07x: every cycle ended its `Estimator.train` call (a final "
        "checkpoint, closing the session, waiting for tf.data's autotuning thread: 20 s once, after a 20 s cycle), "
        "then built a recalibration graph and an evaluation graph (`Estimator.evaluate`), each with a session and "
        "a restore, and a new training graph whose input refilled its shuffle buffer: 1-2 s from a cycle's last "
        "step to its evaluation and 2-4 s from the evaluation to the next step on this machine under load. Now "
        "autotuning is off, every cycle runs in one training session, the recalibration and evaluation graphs are "
        "built once per run, the evaluation input is restarted and the report's images (~0.2 s of matplotlib) are "
        "drawn in threads of their own while training goes on (library/evaluation/evaluator.py), so those waits are "
        "hundredths of a second. What remains is work: the test images through the model, the report's figures, "
        "and with recalibration on, at most one pass of the training images through the training graph (here 12 "
        "batches of 16: about the forward work of an epoch of training on a set this small)."
    ),
    not_met=(
        "The remaining cost is the work of each evaluation, not waiting (see the gaps above); on 2 shared cores a "
        "single round varies by 10-20% (by hand, three warm rounds in a row gave 1.13, 1.05 and 1.30), so first "
        "check the spread column."
    ),
)


def run_figures(done: list, names) -> dict:
    """Each run's seconds and idle gaps, medians over the rounds ``done`` (none when no round ran)."""
    keys = ("seconds", "train_to_eval_max", "train_to_eval_median", "eval_to_train_median")
    return {f"{key}_{name.replace(' ', '_').replace(',', '')}": measure.median_detail(done, name, key)
            for name in names for key in keys if done}


def cycles_row(context) -> dict:
    """Row 7: the wall time of a run evaluated after every epoch / evaluated once at the end.

    The target is measured as the issue that set it measured it, before batch-norm recalibration
    existed (``--batch_norm_recalibration_batches 0``): the waiting around evaluations. One more
    round with recalibration on, as a fine-tuned run has it by default, is a reference.
    """
    epochs, image_size = CYCLES_EPOCHS[context.size], CYCLES_IMAGE_SIZE[context.size]
    records, counts = small_set(context.photos_dir, context.output_dir)
    work_dir = context.output_dir
    on = ("--image_size", str(image_size))
    off = (*on, "--batch_norm_recalibration_batches", "0")
    loops = {"every epoch": lambda: cycles_run(records, work_dir, epochs, 1, *off),
             "once": lambda: cycles_run(records, work_dir, epochs, epochs, *off)}
    recalibrated = {"every epoch, recalibrated": lambda: cycles_run(records, work_dir, epochs, 1, *on),
                    "once, recalibrated": lambda: cycles_run(records, work_dir, epochs, epochs, *on)}
    context.log(f"  cycles: {epochs} epochs of {counts['train']} images, small_cnn fine-tuned, batch {CYCLES_BATCH}, "
                f"{image_size}x{image_size}")
    if not context.quick:
        # Untimed: the first run of a process also loads what later runs reuse (matplotlib, the network's module
        # spec), which would count against whichever run came first.
        cycles_run(records, work_dir, 1, 1, *off)
    done = context.rounds(loops)
    summary = measure.ratio_summary(done, "once", "every epoch")  # rates are 1/s: the time ratio every / once
    done_recalibrated, recalibrated_ratio = [], None
    if not context.quick:  # a reference, left out of the quick run: the same code as the rounds above
        context.log("  cycles with batch-norm recalibration (reference)")
        done_recalibrated = context.rounds(recalibrated, 1)
        recalibrated_ratio = measure.ratio_summary(done_recalibrated, "once, recalibrated",
                                                   "every epoch, recalibrated")["ratio"]
    figures = {
        "epochs": epochs, "training_images": counts["train"], "test_images": counts["test"],
        "image_size": image_size, "batch_size": CYCLES_BATCH,
        "time_ratio": summary["ratio"],
        "time_ratio_recalibrated": recalibrated_ratio,
        **run_figures(done, loops),
        **run_figures(done_recalibrated, recalibrated),
    }
    return report.row(
        "cycles", f"{epochs} epochs evaluated after every epoch vs once at the end, wall time", figures,
        [report.target("cycles: evaluating every epoch / once, wall time (batch-norm recalibration off)",
                       summary["ratio"], "<=", 1.25, "", noise=summary,
                       measured="{seconds_every_epoch:.1f} vs {seconds_once:.1f} s")],
        text=CYCLES_TEXT,
        references=[report.reference("cycles: the same with batch-norm recalibration, as fine-tuning runs by default",
                                     recalibrated_ratio)],
    )


def head_only_run(argv: list, work_dir: str, cached: bool) -> tuple:
    """(1 / seconds an epoch, details) of a run.py training run; with ``cached``, the caching pass timed first."""
    out = tempfile.mkdtemp(prefix="cache-", dir=work_dir)
    argv = [*argv, "--model_dir", os.path.join(out, "model"), "--best_model_dir", os.path.join(out, "best")]
    argv.append("--cache_features" if cached else "--no-cache_features")
    settings, params = project_config.parsed(argv)
    try:
        caching = 0.0
        if cached:
            started = time.perf_counter()
            for mode in (ModeKeys.TRAIN, ModeKeys.EVAL):
                feature_cache.ensure(cached_features.cache_path(params, mode),
                                     lambda path, mode=mode: cached_features.write_cache(params, mode, path))
            caching = time.perf_counter() - started
        with timed_steps() as events:
            run_quietly(argv)
        with open(os.path.join(out, "model", "evaluations.jsonl")) as handle:
            accuracy = [json.loads(line) for line in handle][-1]["accuracy"]
    finally:
        shutil.rmtree(out, ignore_errors=True)
    steps_per_epoch = project_config.experiment.train_examples(params) // settings.train_batch_size
    ends = [end for kind, _, end in events if kind == "train"]
    epoch = (ends[-1] - ends[0]) / (len(ends) - 1) * steps_per_epoch
    return 1 / epoch, {"epoch_seconds": epoch, "caching_seconds": caching, "accuracy": accuracy}


def cache_argv(data: dict, module: str, epochs: int) -> list:
    """run.py arguments of the `default` set training the head on ``module`` frozen for ``epochs`` epochs, evaluated
    once; ``data``: train_data, eval_data and labels_file."""
    return ["--project_file", os.path.join(project_config.ROOT, "project.yaml"), "--config_set", "default",
            *[text for option, value in data.items() for text in (f"--{option}", value)], "--hub_module", module,
            "--random_seed", "0", "--train_epochs", str(epochs), "--epochs_between_evals", str(epochs)]


CACHE_EPOCHS = 1  # of the small set: 6 steps of 32 images, ~6 s through EfficientNet-Lite0 on 2 quiet cores

CACHE_TEXT = RowText(
    method=(
        "Head-only training (the `default` set: the frozen module, only the head trains) with {network} on the "
        "cycles row's small set ({epochs} epoch, one evaluation at the end), with `cache_features` against "
        "without, same seed. An epoch's time comes from the training steps' timestamps (graph building left out); "
        "the caching pass (training and evaluation features, written before training) is timed apart."
    ),
    results=(
        "an epoch: {epoch_seconds_uncached:.2f} s uncached, {epoch_seconds_cached:.3f} s cached ({speedup:.1f}x).",
        "the caching pass: {caching_seconds:.1f} s, {caching_vs_uncached_epoch:.2f} uncached epochs.",
        "accuracy at the end: {accuracy_uncached:.2%} uncached, {accuracy_cached:.2%} cached (generated images of "
        "two photographs: the figure that matters is on real photos, below).",
    ),
    findings=(
        "Accuracy on real photos, measured by hand with `benchmarks/feature_cache_study.sh` (flowers_small: 5 "
        "classes, 800 training and 200 test photos at 192 px; a frozen small_cnn module of our own, trained 15 "
        "epochs from scratch on the same photos at 96x96, 65.5% test accuracy, exported with `--mode export_hub`; "
        "head only, 10 epochs, the `default` hyperparameters, seeds 0-9; one test photo is 0.5 point): test "
        "accuracy 62.15% uncached (57.5-65.0), 63.00% with `cache_features` (centre crops, 60.5-64.5), 62.45% "
        "with `cached_views: 4` (60.5-66.0). Paired by seed, cached minus uncached +0.85 points (standard error "
        "0.68), `cached_views: 4` minus uncached +0.30 (0.44): both within a point of the uncached runs, and the "
        "spread between seeds (2.2 points uncached) is larger than either difference. Whole runs (start-up, the "
        "caching pass and the evaluation included) took 21-25 s uncached, 9-12 s cached and 14-16 s with 4 views, "
        "on the 2 cores shared with other work."
    ),
    not_met=(
        "An epoch of cached features is a few milliseconds of dense-layer work, so the ratio is large and noisy "
        "rather than small; a figure under 10x means the cached epoch's time was dominated by something other "
        "than the head (check the noise column: another process on the cores)."
    ),
)


def cache_row(context) -> dict:
    """Row 8: an epoch's time without the feature cache / with it, head only on the pretrained network."""
    records, _ = small_set(context.photos_dir, context.output_dir)
    data = {"train_data": os.path.join(records, "train", "train-*.tfrecord"),
            "eval_data": os.path.join(records, "test", "test-*.tfrecord"),
            "labels_file": os.path.join(records, "train", "labels.txt")}
    network = project_config.pretrained_network(context)
    argv = cache_argv(data, network, CACHE_EPOCHS)
    loops = {"uncached": lambda: head_only_run(argv, context.output_dir, False),
             "cached": lambda: head_only_run(argv, context.output_dir, True)}
    context.log(f"  feature cache: head only on {network}, {CACHE_EPOCHS} epoch")
    done = context.rounds(loops)
    summary = measure.ratio_summary(done, "cached", "uncached")

    def detail(name, key):
        return measure.median_detail(done, name, key)

    figures = {
        "network": os.path.basename(network), "epochs": CACHE_EPOCHS,
        "epoch_seconds_uncached": detail("uncached", "epoch_seconds"),
        "epoch_seconds_cached": detail("cached", "epoch_seconds"),
        "speedup": summary["ratio"],
        "caching_seconds": detail("cached", "caching_seconds"),
        "caching_vs_uncached_epoch": detail("cached", "caching_seconds") / detail("uncached", "epoch_seconds"),
        "accuracy_uncached": detail("uncached", "accuracy"),
        "accuracy_cached": detail("cached", "accuracy"),
    }
    return report.row(
        "feature_cache", f"head-only training on the frozen {figures['network']}, epoch time without vs with "
                         "cache_features", figures,
        [report.target("feature cache: epoch without / with cache_features", summary["ratio"], ">=", 10, "x",
                       noise=summary,
                       measured="{epoch_seconds_uncached:.2f} vs {epoch_seconds_cached:.3f} s an epoch")],
        text=CACHE_TEXT,
        references=[report.reference("feature cache: caching pass / one uncached epoch",
                                     figures["caching_vs_uncached_epoch"], "x")],
    )

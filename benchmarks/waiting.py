"""Rows 7 and 8: the time a person waits for a training run, whole `run.py` runs timed from outside.

7. cycles: ``run.py`` training 10 epochs and evaluating after every epoch against the same
   10 epochs evaluated once at the end (~200 training and ~60 test images converted from the
   benchmark photos at 192 px, small_cnn trained end to end at 128x128, batch 16). Timestamps
   of every training step and evaluation (:func:`timed_steps`) give the idle wall time from a
   cycle's last training step to the evaluation and from the evaluation to the next cycle's
   first step.
8. feature cache: head-only training on the frozen, pretrained EfficientNet-Lite0 (the `default`
   set as is, on the cycles row's small set) with ``cache_features`` against without: the time of an epoch (from the steps' timestamps,
   graph building and the caching pass left out), the caching pass (training and evaluation
   features, computed before training) against one uncached epoch, and the accuracy each reaches.
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
from benchmarks import measure, project_config
from benchmarks.report import target
from library import cycle_evaluation, feature_cache
from library.tensorflow_env import import_tensorflow
from project import cached_features

tf = import_tensorflow()
ModeKeys = tf.estimator.ModeKeys
SMALL_SET = {"train": 100, "test": 30}  # at most, images per class of each split of the cycles row (2 classes)
CYCLES_IMAGE_SIZE = 128
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
    (cycle_evaluation.CheckpointEvaluation) appends (kind, start, end) to the yielded list."""
    events = []
    original = {"train": tf.estimator.Estimator.train, "evaluate": tf.estimator.Estimator.evaluate,
                "checkpoint": cycle_evaluation.CheckpointEvaluation.evaluate}

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
            mock.patch.object(cycle_evaluation.CheckpointEvaluation, "evaluate", timed_evaluation):
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
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), contextlib.redirect_stderr(devnull):
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
            "--image_size", str(CYCLES_IMAGE_SIZE), "--train_batch_size", str(CYCLES_BATCH), "--random_seed", "0",
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


def cycles_row(photos_dir: str, work_dir: str, epochs: int, budget, rounds: int, max_extra: int, quiet_wait: float,
               log=print) -> dict:
    """Row 7: the wall time of ``epochs`` epochs evaluated after every epoch / evaluated once at the end.

    The target is measured as the issue that set it measured it, before batch-norm recalibration
    existed (``--batch_norm_recalibration_batches 0``): the waiting around evaluations. One more
    round with recalibration on, as a fine-tuned run has it by default, is a reference.
    """
    records, counts = small_set(photos_dir, work_dir)
    off = ("--batch_norm_recalibration_batches", "0")
    loops = {"every epoch": lambda: cycles_run(records, work_dir, epochs, 1, *off),
             "once": lambda: cycles_run(records, work_dir, epochs, epochs, *off)}
    recalibrated = {"every epoch, recalibrated": lambda: cycles_run(records, work_dir, epochs, 1),
                    "once, recalibrated": lambda: cycles_run(records, work_dir, epochs, epochs)}
    log(f"  cycles: {epochs} epochs of {counts['train']} images, small_cnn fine-tuned, batch {CYCLES_BATCH}, "
        f"{CYCLES_IMAGE_SIZE}x{CYCLES_IMAGE_SIZE}")
    reference_seconds = 2 * 60  # a round of the recalibrated pair on a quiet 2-core machine, kept for it
    # Untimed: the first run of a process also loads what later runs reuse (matplotlib, the network's module spec),
    # which would count against whichever run came first.
    cycles_run(records, work_dir, 1, 1, *off)
    done = measure.rounds(loops, rounds, measure.Budget(budget.left() - reference_seconds), max_extra, quiet_wait, log)
    summary = measure.ratio_summary(done, "once", "every epoch")  # rates are 1/s: the time ratio every / once
    log("  cycles with batch-norm recalibration (reference)")
    done_recalibrated = measure.rounds(recalibrated, 1, budget, 0, quiet_wait, log)
    recalibrated_summary = measure.ratio_summary(done_recalibrated, "once, recalibrated", "every epoch, recalibrated")

    def detail(name, key):
        return measure.median_detail(done_recalibrated if name in recalibrated else done, name, key)

    return {
        "id": "cycles",
        "title": f"{epochs} epochs evaluated after every epoch vs once at the end, wall time",
        "figures": {
            "epochs": epochs, "training_images": counts["train"], "test_images": counts["test"],
            "image_size": CYCLES_IMAGE_SIZE, "batch_size": CYCLES_BATCH,
            **{f"seconds_{name.replace(' ', '_').replace(',', '')}": detail(name, "seconds")
               for name in [*loops, *recalibrated]},
            "time_ratio": summary["ratio"],
            "time_ratio_recalibrated": recalibrated_summary["ratio"],
            **{f"{key}_{name.replace(' ', '_').replace(',', '')}": detail(name, key) for name in [*loops, *recalibrated]
               for key in ("train_to_eval_max", "train_to_eval_median", "eval_to_train_median")},
        },
        "targets": [target("cycles: evaluating every epoch / once, wall time (batch-norm recalibration off)",
                           summary["ratio"], "<=", 1.25, "", summary)],
        "references": [{"name": "cycles: the same with batch-norm recalibration, as fine-tuning runs by default",
                        "value": recalibrated_summary["ratio"], "unit": ""}],
    }


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


def cache_row(argv: list, work_dir: str, budget, rounds: int, max_extra: int, quiet_wait: float, log=print) -> dict:
    """Row 8: an epoch's time without the feature cache / with it, on the same run.py arguments ``argv``."""
    loops = {"uncached": lambda: head_only_run(argv, work_dir, False),
             "cached": lambda: head_only_run(argv, work_dir, True)}
    log(f"  feature cache: head only, {' '.join(argv[argv.index('--train_epochs'):][:2])}")
    done = measure.rounds(loops, rounds, budget, max_extra, quiet_wait, log)
    summary = measure.ratio_summary(done, "cached", "uncached")

    def detail(name, key):
        return measure.median_detail(done, name, key)

    caching_vs_epoch = detail("cached", "caching_seconds") / detail("uncached", "epoch_seconds")
    return {
        "id": "feature_cache",
        "title": "head-only training on a frozen module, epoch time without vs with cache_features",
        "figures": {
            "epoch_seconds_uncached": detail("uncached", "epoch_seconds"),
            "epoch_seconds_cached": detail("cached", "epoch_seconds"),
            "speedup": summary["ratio"],
            "caching_seconds": detail("cached", "caching_seconds"),
            "caching_vs_uncached_epoch": caching_vs_epoch,
            "accuracy_uncached": detail("uncached", "accuracy"),
            "accuracy_cached": detail("cached", "accuracy"),
        },
        "targets": [target("feature cache: epoch without / with cache_features", summary["ratio"], ">=", 10, "x",
                           summary)],
        "references": [{"name": "feature cache: caching pass / one uncached epoch", "value": caching_vs_epoch,
                        "unit": "x"}],
    }

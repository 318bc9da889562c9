"""Fine-tuning on real photos: test accuracy at every epoch, seconds an epoch and what evaluation costs, per setting.

Not part of `make bench`: it needs ../shared/data/flowers_small converted into out/flowers/dataset
(README, "Batch-norm recalibration") and takes hours on 2 cores. From the project root::

    python -m benchmarks.fine_tuning_study run --settings head,frozen --seeds 0,1,2   # each run in a process of its own
    python -m benchmarks.fine_tuning_study table                                        # what the runs measured

Every run is ``run.py --config_set default --hyperparameter_set mobilenet`` (the documented
fine-tuning command) on those photos, with a setting's options (:data:`SETTINGS`), a seed, and an
evaluation after every epoch; it appends one JSON line to ``out/fine_tuning_study/runs.jsonl``
(a run already there is not run again). Measured in the run's process: test accuracy and loss
of every evaluation (by phase), seconds a fine-tuning epoch (the training steps alone), every
evaluation's seconds (the evaluation graph's first build, a caching pass and recalibration
included), every recalibration's seconds, the wall time of the whole command, and the same
wall time less the evaluations: the run without evaluation, which the 1.15x target compares with.
``--without_evaluation`` runs a setting with every evaluation left out (no evaluation graph, no
caching of the evaluation images, no best snapshot): that run's wall time, measured back to back
with the setting's, is the other way to the same ratio.
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from unittest import mock

from library.tensorflow_env import import_tensorflow

tf = import_tensorflow()

import run  # noqa: E402
from benchmarks.waiting import timed_steps  # noqa: E402
from library.evaluation import evaluator, recalibration  # noqa: E402
from library.training import run_loop  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "out", "flowers", "dataset")
STUDY = os.path.join(ROOT, "out", "fine_tuning_study")
FINE_TUNING_EPOCHS = 3
HEAD = ()  # the head phase's epochs come from the study's --head_epochs
# name: (run.py options, what it is). Each fine-tunes FINE_TUNING_EPOCHS epochs unless its options say otherwise.
SETTINGS = {
    "head": (("--hyperparameter_set", "default", "--train_epochs", "30"), "the frozen head alone, 30 epochs (cached)"),
    "frozen": (HEAD, "head first, then all at lr 1e-5 (the mobilenet set), batch norm frozen"),
    "train": (HEAD + ("--fine_tuning_batch_norm", "train"), "the same, batch norm on batch statistics, recalibrated"),
    "frozen_1e-4": (HEAD + ("--learning_rate", "1e-4"), "head first, all at 1e-4, batch norm frozen"),
    "frozen_1e-4_head_1e-3": (HEAD + ("--learning_rate", "1e-3", "--module_learning_rate_multiplier", "0.1"),
                              "head first, module 1e-4 / head 1e-3, batch norm frozen"),
    "frozen_3e-5_head_3e-4": (HEAD + ("--learning_rate", "3e-4", "--module_learning_rate_multiplier", "0.1"),
                              "head first, module 3e-5 / head 3e-4, batch norm frozen"),
    "frozen_1e-4_warmup": (HEAD + ("--learning_rate", "1e-4", "--learning_rate_warmup_epochs", "1"),
                           "head first, all at 1e-4 after a 1-epoch linear warm-up, batch norm frozen"),
    "frozen_1e-5_smoothing": (HEAD + ("--xentropy_label_smoothing", "0.1"),
                              "head first, all at 1e-5, label smoothing 0.1, batch norm frozen"),
    "frozen_crop50": (HEAD + ("--min_crop_area", "0.5"), "head first, all at 1e-5, training crops of 50-100% of "
                                                         "the image (not 8-100%), batch norm frozen"),
    "frozen_1e-5_head_1e-4": (HEAD + ("--learning_rate", "1e-4", "--module_learning_rate_multiplier", "0.1"),
                              "head first, module 1e-5 / head 1e-4, batch norm frozen"),
    "frozen_3e-6": (HEAD + ("--learning_rate", "3e-6",), "head first, all at 3e-6, batch norm frozen"),
    "random_head": (("--head_epochs", "0", "--fine_tuning_batch_norm", "train"),
                    "the seed's recipe: a random head, all at 1e-5, batch norm on batch statistics"),
}


def run_argv(setting: str, seed: int, head_epochs: int, directory: str) -> list:
    """run.py's arguments of ``setting`` with ``seed`` and ``head_epochs``, its directories under ``directory``."""
    options, _ = SETTINGS[setting]
    return ["--project_file", os.path.join(ROOT, "project.yaml"), "--config_set", "default",
            "--hyperparameter_set", "mobilenet", "--train_data", os.path.join(DATA, "train", "train-*.tfrecord"),
            "--eval_data", os.path.join(DATA, "test", "test-*.tfrecord"),
            "--labels_file", os.path.join(DATA, "train", "labels.txt"), "--random_seed", str(seed),
            "--train_epochs", str(FINE_TUNING_EPOCHS), "--epochs_between_evals", "1", "--keep_checkpoint_max", "1",
            "--early_stopping_evaluations", "0",  # every evaluation of every run, for the table
            "--model_dir", os.path.join(directory, "model"), "--best_model_dir", os.path.join(directory, "best"),
            "--head_epochs", str(head_epochs), *options]


@contextlib.contextmanager
def timed_phases():
    """Within the block, (phase, start, end) of every training phase and the seconds of every recalibration."""
    phases, recalibrations = [], []
    in_cycles, recalibrate = run_loop.Training.in_cycles, recalibration.Recalibrator.recalibrate

    def timed_cycles(self, step):
        started = time.perf_counter()
        try:
            return in_cycles(self, step)
        finally:
            phases.append((self.run.phase, started, time.perf_counter()))

    def timed_recalibration(self, *args, **kwargs):
        result = recalibrate(self, *args, **kwargs)
        if result.statistics:
            recalibrations.append(result.seconds)
        return result

    with mock.patch.object(run_loop.Training, "in_cycles", timed_cycles), \
            mock.patch.object(recalibration.Recalibrator, "recalibrate", timed_recalibration):
        yield phases, recalibrations


def training_seconds(events: list, start: float, end: float) -> float:
    """Seconds of training steps between ``start`` and ``end``: each step from the previous one's end (or its own
    start after an evaluation), so the pauses for evaluations are left out."""
    seconds, previous = 0.0, None
    for kind, step_start, step_end in events:
        if not start <= step_start <= end:
            continue
        if kind == "train":
            seconds += step_end - (previous if previous is not None else step_start)
            previous = step_end
        else:
            previous = None
    return seconds


def without_evaluation() -> contextlib.AbstractContextManager:
    """Within the block, a training run's evaluations do nothing (and so build nothing)."""
    return mock.patch.object(evaluator.Evaluator, "evaluate", lambda self, checkpoint: checkpoint)


def measure_without_evaluation(setting: str, seed: int, head_epochs: int) -> dict:
    """The wall time of ``setting`` with ``seed`` run without any evaluation, in this process, and the seconds of a
    fine-tuning epoch in it (how fast the shared machine was meanwhile)."""
    directory = os.path.join(STUDY, "runs", f"{setting}-{seed}-head{head_epochs}-without-evaluation")
    load_before = os.getloadavg()
    with without_evaluation(), timed_steps() as events, timed_phases() as (phases, _):
        started = time.perf_counter()
        code = run.main(run_argv(setting, seed, head_epochs, directory))
        wall = time.perf_counter() - started
    if code:
        raise SystemExit(f"run.py exited with {code}")
    return {"setting": setting, "seed": seed, "head_epochs": head_epochs, "without_evaluation": True,
            "wall_seconds": wall, "load_before": load_before, "load_after": os.getloadavg(),
            "fine_tuning_epoch_seconds": training_seconds(events, *phases[-1][1:]) / FINE_TUNING_EPOCHS}


def measure(setting: str, seed: int, head_epochs: int) -> dict:
    """One run of ``setting`` with ``seed`` in this process: what it reached at every evaluation and what it cost."""
    directory = os.path.join(STUDY, "runs", f"{setting}-{seed}-head{head_epochs}")
    argv = run_argv(setting, seed, head_epochs, directory)
    load_before = os.getloadavg()
    with timed_steps() as events, timed_phases() as (phases, recalibrations):
        started = time.perf_counter()
        code = run.main(argv)
        wall = time.perf_counter() - started
    if code:
        raise SystemExit(f"run.py {' '.join(argv)} exited with {code}")
    with open(os.path.join(directory, "model", evaluator.EVALUATIONS_FILE)) as handle:
        logged = [json.loads(line) for line in handle]
    evaluation_seconds = [end - start for kind, start, end in events if kind == "evaluate"]
    last_phase = phases[-1]
    epochs = FINE_TUNING_EPOCHS if last_phase[0] else None
    return {
        "setting": setting, "seed": seed, "head_epochs": head_epochs, "options": argv[argv.index("--head_epochs"):],
        "load_before": load_before,
        "evaluations": [{"phase": entry.get("phase"), "epoch": entry["epoch"], "accuracy": entry["accuracy"],
                         "loss": entry["loss"], "new_best": entry.get("new_best")} for entry in logged],
        "phase_seconds": {phase or "training": end - start for phase, start, end in phases},
        "fine_tuning_epoch_seconds": training_seconds(events, *last_phase[1:]) / epochs if epochs else None,
        "evaluation_seconds": evaluation_seconds, "recalibration_seconds": recalibrations,
        "wall_seconds": wall, "wall_seconds_without_evaluation": wall - sum(evaluation_seconds),
        "time_ratio": wall / (wall - sum(evaluation_seconds)),
        "best": json.load(open(os.path.join(directory, "best", os.path.basename(
            tf.train.latest_checkpoint(os.path.join(directory, "best"))) + ".json"))),
        "load_after": os.getloadavg(),
    }


def done_runs(path: str) -> list:
    """The runs recorded in ``path`` so far."""
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def run_all(settings: list, seeds: list, head_epochs: int, results: str, evaluated: bool = True) -> None:
    """Each (setting, seed) not recorded yet, one after the other, each in a process of its own (nice 5)."""
    for seed in seeds:
        for setting in settings:
            key = (setting, seed, head_epochs, not evaluated)
            if any((entry["setting"], entry["seed"], entry.get("head_epochs", 15), entry.get("without_evaluation", False))
                   == key for entry in done_runs(results)):
                continue
            name = f"{setting}-{seed}-head{head_epochs}" + ("" if evaluated else "-without-evaluation")
            print(f"{time.strftime('%H:%M:%S')} {name}", flush=True)
            log = os.path.join(STUDY, "logs", f"{name}.log")
            os.makedirs(os.path.dirname(log), exist_ok=True)
            with open(log, "w") as handle:
                subprocess.run(["nice", "-n", "5", sys.executable, "-m", "benchmarks.fine_tuning_study", "one",
                                setting, str(seed), "--head_epochs", str(head_epochs), "--results", results,
                                *([] if evaluated else ["--without_evaluation"])],
                               cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, check=False)


def table(results: str) -> str:
    """Markdown: every run's test accuracy after each epoch (the head phase's as epoch 0), time and evaluation cost."""
    lines = ["| setting | head epochs | seed | head | fine-tuning epochs | best snapshot | s / fine-tuning epoch | "
             "evaluations (s) | recalibration (s) | wall s | / without evaluation |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for entry in done_runs(results):
        if entry.get("without_evaluation"):
            epoch = entry.get("fine_tuning_epoch_seconds")
            lines.append(f"| {entry['setting']} without evaluation | {entry['head_epochs']} | {entry['seed']} | - | - | - "
                         f"| {f'{epoch:.0f}' if epoch else '-'} | - | - | {entry['wall_seconds']:.0f} | - |")
            continue
        head = [e for e in entry["evaluations"] if e["phase"] in ("head", None)]
        tuned = [e for e in entry["evaluations"] if e["phase"] == "fine_tuning"]
        epoch = entry["fine_tuning_epoch_seconds"]
        lines.append(" | ".join([
            f"| {entry['setting']}", str(entry.get("head_epochs", 15)) if tuned else "-", str(entry["seed"]),
            " ".join(f"{e['accuracy']:.1%}" for e in head[-1:] if tuned) or
            " ".join(f"{e['accuracy']:.1%}" for e in head[4::5]),
            " ".join(f"{e['accuracy']:.1%}" for e in tuned) or "-",
            f"{entry['best']['metrics']['accuracy']:.1%} ({entry['best'].get('phase', '')} {entry['best']['epoch']:g})",
            f"{epoch:.0f}" if epoch else "-",
            " ".join(f"{seconds:.0f}" for seconds in entry["evaluation_seconds"]),
            " ".join(f"{seconds:.0f}" for seconds in entry["recalibration_seconds"]) or "-",
            f"{entry['wall_seconds']:.0f}", f"{entry['time_ratio']:.2f} |"]))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fine_tuning_study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("run", "one", "table"))
    parser.add_argument("setting", nargs="?", help="one: the setting")
    parser.add_argument("seed", nargs="?", type=int, help="one: the seed")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="run: comma-separated settings")
    parser.add_argument("--seeds", default="0", help="run: comma-separated seeds")
    parser.add_argument("--head_epochs", type=int, default=30, help="run, one: epochs of the head phase")
    parser.add_argument("--without_evaluation", action="store_true", help="run, one: leave every evaluation out")
    parser.add_argument("--results", default=os.path.join(STUDY, "runs.jsonl"))
    args = parser.parse_args(argv)
    if args.command == "table":
        print(table(args.results))
    elif args.command == "run":
        run_all(args.settings.split(","), [int(seed) for seed in args.seeds.split(",")], args.head_epochs, args.results,
                evaluated=not args.without_evaluation)
    else:
        entry = (measure_without_evaluation if args.without_evaluation else measure)(args.setting, args.seed,
                                                                                     args.head_epochs)
        os.makedirs(os.path.dirname(args.results), exist_ok=True)
        with open(args.results, "a") as handle:
            handle.write(json.dumps(entry) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

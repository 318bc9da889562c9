"""The generic run loop: train in cycles with evaluation and a best snapshot, or evaluate, predict, export.

It knows nothing about the data or the network: a project hands ``main`` an instance of
``library.experiment.Experiment`` (the contract; ``project/experiment.py`` is this
project's). ``mode`` is the one switch: every mode is a function of one :class:`Run`, and a
training run keeps its state in one :class:`Training`.

When the model_fn's evaluation metrics include a ``confusion_matrix`` (and optionally the
``mistakes/*`` of ``library/evaluation/report.py``), every evaluation also gets a report,
its classes named by ``params["class_names"]``: in TensorBoard's eval run, as
``model_dir/evaluation-<step>.json`` in training, printed (and in ``report_file``) by
``evaluate``. Only scalar results go into evaluations.jsonl and the best-snapshot record.
"""

import contextlib
import csv
import dataclasses
import io
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from typing import Optional

import numpy as np

from library import atomic_file, model_directory
from library.configuration import config
from library.configuration.config import ConfigError
from library.distribution import strategies, towers
from library.evaluation import hparams_summary, recalibration
from library.evaluation import report as evaluation_report
from library.evaluation.best_checkpoint import BestCheckpoint, json_ready
from library.experiment import Experiment
from library.tensorflow_env import first_line, import_tensorflow, use_graph_mode
from library.training import checkpoints, phases as training_phases
from library.training.cycles import Background, CheckpointEvaluation, CyclesHook, write_scalar_summaries
from library.training.hooks import NonFiniteLossError, ProgressBarHook, StopOnNonFiniteLossHook

tf = import_tensorflow()
ModeKeys = tf.estimator.ModeKeys
EVALUATIONS_FILE = "evaluations.jsonl"


def seed_everything(seed) -> None:
    """Seed Python and numpy; TensorFlow's graph seed goes through RunConfig.tf_random_seed."""
    if seed is not None:
        random.seed(seed)
        np.random.seed(seed)


def session_config(settings) -> tf.compat.v1.ConfigProto:
    """Session options: soft placement (GPU code falls back to CPU), XLA on request."""
    session = tf.compat.v1.ConfigProto(allow_soft_placement=True)
    session.gpu_options.allow_growth = True
    if settings.xla:
        session.graph_options.optimizer_options.global_jit_level = tf.compat.v1.OptimizerOptions.ON_1
    return strategies.with_virtual_cpus(session, settings.distribution, settings.num_gpus)


@dataclasses.dataclass(frozen=True)
class Run:
    """One invocation: the resolved settings, the project's experiment and the params it derived from them."""

    settings: config.Config
    experiment: Experiment
    params: dict
    phase: Optional[str] = None  # the phase of a training run in phases (library/training/phases.py)
    log_dir: Optional[str] = None  # the folder of evaluations.jsonl when it is not model_dir (a phase's: the run's)
    warm_start_from: Optional[str] = None  # a checkpoint whose trainable variables start a model_dir without one

    def estimator(self, model_dir=None, *, strategy=None, tf_config=None,
                  save_checkpoints_steps=None) -> tf.estimator.Estimator:
        """The experiment's model_fn in an Estimator configured from the run options (and a strategy or towers to train
        with), warm-started from ``warm_start_from`` while its model_dir holds no checkpoint."""
        settings = self.settings
        model_fn = self.experiment.model_fn
        if isinstance(strategy, towers.Towers):
            model_fn, strategy = strategy.replicate(model_fn), None
        run_config = tf.estimator.RunConfig(
            model_dir=model_dir or settings.model_dir,
            tf_random_seed=settings.random_seed,
            save_checkpoints_secs=None if save_checkpoints_steps else settings.save_checkpoints_secs,
            save_checkpoints_steps=save_checkpoints_steps,
            keep_checkpoint_max=settings.keep_checkpoint_max,
            session_config=strategies.with_device_filters(session_config(settings), settings.distribution,
                                                            tf_config or {}),
            log_step_count_steps=None,  # the progress bar reports speed instead
            train_distribute=strategy,
        )
        warm_start = tf.estimator.WarmStartSettings(self.warm_start_from) if self.warm_start_from else None
        return tf.estimator.Estimator(model_fn, config=run_config, params=self.params, warm_start_from=warm_start)

    def with_params(self, **extra) -> "Run":
        """This run with ``extra`` added to the params (e.g. a training run's step counts for the model_fn)."""
        return dataclasses.replace(self, params={**self.params, **extra})

    def input_fn(self, mode):
        """The experiment's input_fn of ``mode`` over this run's params, as Estimator calls it."""
        return lambda: self.experiment.input_fn(self.params, mode)

    def held_checkpoint(self):
        """The checkpoint that ``model`` names, held for a ``with`` block (a training run may rotate it away meanwhile)
        once it is known to be one of a model trained for this configuration (library/training/checkpoints.py)."""
        return checkpoints.held(self.settings, self.experiment.model_identity(self.params),
                                self.experiment.checkpoint_shapes(self.params))


def global_step_of(model_dir: str) -> int:
    """The step of the latest checkpoint in ``model_dir``, 0 when there is none."""
    path = tf.train.latest_checkpoint(model_dir)
    return 0 if path is None else int(tf.train.load_variable(path, "global_step"))


class EvaluationLog:
    """Every evaluation of a run, one JSON line each, so a resumed run knows what was evaluated and since when the
    loss has not improved; the entries of a run in phases name their phase, and each phase reads its own."""

    def __init__(self, model_dir: str, phase: Optional[str] = None):
        self._path = os.path.join(model_dir, EVALUATIONS_FILE)
        self._phase = phase
        self.entries = []
        if tf.io.gfile.exists(self._path):
            with tf.io.gfile.GFile(self._path) as handle:
                self.entries = [json.loads(line) for line in handle if line.strip()]

    def _own(self) -> list:
        return [entry for entry in self.entries if entry.get("phase") == self._phase]

    @property
    def last_step(self):
        own = self._own()
        return own[-1]["global_step"] if own else None

    def evaluations_without_improvement(self) -> int:
        """This phase's evaluations since its last new best (an entry that does not say counts as one)."""
        count = 0
        for entry in reversed(self._own()):
            if entry.get("new_best", True):
                break
            count += 1
        return count

    def append(self, entry: dict) -> None:
        self.entries.append({"phase": self._phase, **entry} if self._phase else entry)
        atomic_file.write_text(self._path, "".join(json.dumps(e) + "\n" for e in self.entries))


def plain(results: dict) -> dict:
    """Evaluation results as JSON-ready Python numbers."""
    return {key: json_ready(value) for key, value in results.items()}


def evaluate_checkpoint(run: Run, estimator, checkpoint, write_summaries=evaluation_report.write_summaries) -> tuple:
    """Evaluate ``checkpoint`` on the evaluation data: see :func:`evaluation_results`."""
    results = estimator.evaluate(run.input_fn(ModeKeys.EVAL), checkpoint_path=checkpoint)
    return evaluation_results(estimator, run.params, results, write_summaries)


def evaluation_results(estimator, params, results: dict, write_summaries=evaluation_report.write_summaries) -> tuple:
    """(scalar results as plain numbers, the evaluation report or None); the report also goes to TensorBoard
    through ``write_summaries(eval_dir, report, arrays)``."""
    scalars, arrays = evaluation_report.split(results)
    scalars = plain(scalars)
    report = evaluation_report.build(arrays, params.get("class_names"), scalars["global_step"])
    if report is not None:
        write_summaries(estimator.eval_dir(), report, arrays)
    return scalars, report


def evaluation_summary(results: dict, epoch: float, epochs: int, record, improved: bool, phase=None) -> str:
    """One line a person can scan: where training is (in which phase), how it did, the best so far."""
    line = f"{epoch_label(phase, epoch)}/{epochs}  step {results['global_step']}  eval loss {results['loss']:.4f}"
    if "accuracy" in results:
        line += f"  accuracy {results['accuracy']:.2%}"
    if record:
        line += f"  best loss {record['loss']:.4f} ({epoch_label(record.get('phase'), record['epoch'])})"
    return line + ("  * new best" if improved else "")


def epoch_label(phase: Optional[str], epoch: float) -> str:
    """``epoch 3``, or ``head epoch 3`` in a phase: epochs count within their phase."""
    return f"{phase + ' ' if phase else ''}epoch {epoch:g}"


@dataclasses.dataclass(frozen=True)
class TrainingPlan:
    """How many steps make an epoch, a cycle between evaluations and the whole run."""

    examples: int
    images_per_step: int
    steps_per_epoch: int
    cycle_steps: int
    total_steps: int


def plan_training(settings, examples: int, images_per_step: int) -> TrainingPlan:
    """Step counts from the epoch options; an epoch drops its last partial batch."""
    steps_per_epoch = examples // images_per_step
    if steps_per_epoch == 0:
        raise ConfigError(f"train_batch_size: {settings.train_batch_size} is larger than the {examples} training images; lower it")
    return TrainingPlan(examples, images_per_step, steps_per_epoch,
                        settings.epochs_between_evals * steps_per_epoch, settings.train_epochs * steps_per_epoch)


def training_strategy(run: Run):
    """The tf.distribute strategy to train with, or for ``mirrored`` with a model no strategy can mirror the towers
    that replicate it (None on one device)."""
    settings = run.settings
    if settings.distribution == "mirrored" and not run.experiment.supports_distribution_strategies:
        devices = strategies.mirrored_devices(settings.num_gpus)
        return towers.Towers(tuple(devices)) if len(devices) > 1 else None
    strategy = strategies.train_strategy(settings.distribution, settings.num_gpus)
    if strategy is None or run.experiment.supports_distribution_strategies:
        return strategy
    raise ConfigError(
        f"distribution {settings.distribution}: this model's variables cannot be mirrored by tf.distribute "
        "(see supports_distribution_strategies in the experiment); use distribution parameter_server for several "
        "machines, mirrored for several GPUs of one machine, or none"
    )


def train(run: Run) -> int:
    """Train to ``train_epochs``, on one machine in cycles (phase after phase, when the experiment names phases),
    in a cluster with ``train_and_evaluate``.

    Everything is checked before anything is written; the chief (the one task outside a
    cluster) then holds model_dir's training lock and records what the model is trained for.
    """
    settings = run.settings
    tf_config = strategies.read_tf_config(settings.distribution)
    strategy = training_strategy(run)
    images_per_step = strategies.images_per_step(settings.train_batch_size, strategy, tf_config)
    phases = phase_runs(run)
    plans = [plan_training(phase.settings, run.experiment.train_examples(phase.params), images_per_step)
             for phase in phases]
    identity = run.experiment.model_identity(run.params)
    directories = (settings.model_dir, settings.best_model_dir)  # the best snapshot carries the record too
    for directory in directories:
        model_directory.check_record(directory, identity)
    task_type = tf_config.get("task", {}).get("type", "chief")
    in_cluster = settings.distribution in strategies.CLUSTER_DISTRIBUTIONS
    if in_cluster and settings.early_stopping_evaluations:
        raise ConfigError(f"early_stopping_evaluations: with distribution {settings.distribution} the evaluator task "
                          "evaluates beside training and cannot stop it; set it to 0")
    if task_type != "chief":
        return Training.start(run, plans[0], strategy=strategy, tf_config=tf_config).run_task(task_type)
    with model_directory.training_lock(settings.model_dir):
        checkpoints.resume_from_readable(settings.model_dir, run.experiment.checkpoint_shapes(run.params))
        for directory in reversed(directories):  # a read-only best_model_dir fails first, before any training
            model_directory.write_record(directory, identity)
        config.write_config(settings, settings.model_dir)
        if in_cluster:
            return Training.start(run, plans[0], strategy=strategy, tf_config=tf_config).run_task(task_type)
        return train_in_phases(phases, plans, strategy)


def phase_runs(run: Run) -> list:
    """The :class:`Run` of each phase the experiment names for this run, in order; ``[run]`` when it names none."""
    settings = run.settings
    phases = run.experiment.training_phases(settings.as_dict())
    if not phases:
        return [run]
    if settings.distribution in strategies.CLUSTER_DISTRIBUTIONS:
        raise ConfigError(f"distribution {settings.distribution}: a training run in phases "
                          f"({', '.join(phase.name for phase in phases)}) runs on one machine only; "
                          "use distribution none or mirrored, or train each phase as a run of its own")
    runs = []
    for index, phase in enumerate(phases):
        phase_settings = training_phases.phase_settings(settings, phase, last=index == len(phases) - 1)
        params = run.experiment.make_params(phase_settings.as_dict()) if phase.values else run.params
        runs.append(Run(phase_settings, run.experiment, params, phase=phase.name, log_dir=settings.model_dir))
    return runs


def train_in_phases(phases: list, plans: list, strategy) -> int:
    """Train each phase in cycles, in order, each after the first from the previous one's last checkpoint;
    a phase trained (or stopped early) before is not trained again. Prints the start of each and the outcome."""
    trainings, warm_start = [], None
    run_settings = phases[-1].settings  # the last phase trains with the run's own settings, in its model_dir
    hparams_row = hparams_summary.SessionRow(run_settings.model_dir, run_settings.as_dict())
    with sigterm_as_interrupt():
        for index, (phase, plan) in enumerate(zip(phases, plans)):
            if phase.settings.model_dir != run_settings.model_dir:  # train() made model_dir's own resumable
                checkpoints.resume_from_readable(phase.settings.model_dir, phase.experiment.checkpoint_shapes(phase.params))
            phase = dataclasses.replace(phase, warm_start_from=warm_start)
            training = Training.start(phase, plan, strategy=strategy, tf_config={}, hparams_row=hparams_row,
                                      final=index == len(phases) - 1)
            step = global_step_of(phase.settings.model_dir)
            training.announce(step)
            hparams_row.write(training.best.record, finished=training.final and training.finished(step))
            training.in_cycles(step)
            trainings.append(training)
            warm_start = tf.train.latest_checkpoint(phase.settings.model_dir)
    print_outcome(trainings)
    return 0


def print_outcome(trainings: list) -> None:
    """The line that ends a training run: the steps of each phase (and why one stopped early), the best snapshot."""
    best = trainings[-1].best
    record = best.record
    if record is None:
        return
    steps = ", ".join(training.outcome() for training in trainings)
    accuracy = record["metrics"].get("accuracy")
    print(f"done: {steps}; best eval loss {record['loss']:.4f} at {epoch_label(record.get('phase'), record['epoch'])}"
          + (f", accuracy {accuracy:.2%}" if accuracy is not None else "")
          + f"; snapshot in {best.best_model_dir}", flush=True)


@dataclasses.dataclass
class Training:
    """A training run's state: the run, its plan, the Estimator, the best snapshot and the evaluation log."""

    run: Run
    plan: TrainingPlan
    estimator: tf.estimator.Estimator
    best: BestCheckpoint
    log: EvaluationLog
    train_input_fn: object
    hparams_row: hparams_summary.SessionRow  # the run's row, shared by its phases
    final: bool = True  # the run's last phase (or its only training): its end ends the run
    keep_latest: Optional[str] = None  # the checkpoint evaluated last before an early stop

    @classmethod
    def start(cls, run: Run, plan: TrainingPlan, *, strategy, tf_config: dict, hparams_row=None,
              final: bool = True) -> "Training":
        """The state of this task's training, once the checks have passed; ``hparams_row``: the run's HParams row
        when it trains in phases (by default this training's own), ``final``: whether this training ends the run."""
        settings = run.settings
        run = run.with_params(steps_per_epoch=plan.steps_per_epoch, train_steps=plan.total_steps)
        in_cluster = settings.distribution in strategies.CLUSTER_DISTRIBUTIONS
        estimator = run.estimator(strategy=strategy, tf_config=tf_config,
                                  save_checkpoints_steps=plan.cycle_steps if in_cluster else None)

        def export_best(snapshot):
            export_saved_model(run, estimator, os.path.join(settings.best_model_dir, "export"), snapshot)

        best = BestCheckpoint(settings.best_model_dir, on_new_best=export_best if settings.export_best else None)
        train_input_fn = strategies.training_input_fn(run.experiment.input_fn, run.params, settings.distribution,
                                                        tf_config)
        if isinstance(strategy, towers.Towers):
            train_input_fn = strategy.input_fn(train_input_fn)
        log = EvaluationLog(run.log_dir or settings.model_dir, run.phase)
        return cls(run, plan, estimator, best, log, train_input_fn,
                   hparams_row or hparams_summary.SessionRow(settings.model_dir, settings.as_dict()), final)

    def run_task(self, task_type: str) -> int:
        """This task's part of a cluster run; prints the start and the outcome."""
        step = global_step_of(self.run.settings.model_dir)
        self.announce(step)
        if task_type == "chief":
            self.hparams_row.write(self.best.record, finished=self.finished(step))
        self.in_cluster(task_type)
        if task_type in ("chief", "evaluator"):
            print_outcome([self])
        return 0

    def announce(self, step: int) -> None:
        """Print what trains (the experiment's description), how many steps, where, and from which step or checkpoint."""
        settings, plan = self.run.settings, self.plan
        description = self.run.experiment.describe(self.run.params)
        if description:
            print(description, flush=True)
        if self.finished(step):
            state = ", trained before"
        elif step:
            state = f", resuming at step {step}"
        else:
            state = f", starting from {self.run.warm_start_from}" if self.run.warm_start_from else ""
        print(f"{self.run.phase + ': ' if self.run.phase else ''}{plan.examples} training images, "
              f"{plan.steps_per_epoch} steps an epoch, {plan.total_steps} steps in all; model_dir {settings.model_dir}"
              + state, flush=True)

    def finished(self, step: int) -> bool:
        """Whether this training has nothing left to train at ``step``: all its steps, or it stopped early."""
        return step >= self.plan.total_steps or self.stops_early()

    def stops_early(self) -> bool:
        """Whether the loss has not improved for ``early_stopping_evaluations`` evaluations of this phase in a row
        (counted from evaluations.jsonl, so a resumed run remembers)."""
        patience = self.run.settings.early_stopping_evaluations
        return patience > 0 and self.log.evaluations_without_improvement() >= patience

    def outcome(self) -> str:
        """The steps trained, and why training stopped short of them: e.g. ``head 375 steps``."""
        step = global_step_of(self.run.settings.model_dir)
        name = f"{self.run.phase} " if self.run.phase else ""
        if step >= self.plan.total_steps:
            return f"{name}{step} steps"
        return (f"{name}{step} of {self.plan.total_steps} steps (stopped early: no better eval loss in "
                f"{self.log.evaluations_without_improvement()} evaluations)")

    def in_cycles(self, step: int) -> None:
        """Alternate training ``epochs_between_evals`` epochs and evaluating, from ``step`` on, in one training session
        (library/training/cycles.py: no graph to rebuild, no session to reopen between cycles), until the last step
        or an early stop."""
        settings, plan = self.run.settings, self.plan
        evaluation = CheckpointEvaluation(
            lambda features, labels, mode: self.run.experiment.model_fn(features, labels, mode, self.run.params),
            self.run.input_fn(ModeKeys.EVAL),
            recalibration.recalibrator(self.run.experiment, self.run.params, self.recalibration_batches(),
                                                  session_config(settings)),
            self.estimator.config.session_config, settings.random_seed)
        drawing = Background()  # the report's images are drawn while training goes on

        def evaluate_cycle(checkpoint) -> bool:
            """Evaluate ``checkpoint``; True when training is to stop early after it."""
            evaluated = self.evaluate_and_snapshot(evaluation, checkpoint,
                                                   drawing.later(evaluation_report.write_summaries))
            stop = self.stops_early() and self.log.last_step < plan.total_steps
            if stop:
                print(f"early stopping: the eval loss has not improved on the best snapshot's in "
                      f"{settings.early_stopping_evaluations} evaluations; {self.run.phase or 'training'} ends here",
                      flush=True)
                self.keep_latest = evaluated
            return stop

        try:
            at_cycle_end = step > 0 and (step % plan.cycle_steps == 0 or step >= plan.total_steps)
            if at_cycle_end and self.log.last_step != step:  # stopped between training and its evaluation
                evaluate_cycle(tf.train.latest_checkpoint(settings.model_dir))
            if self.finished(step):
                return
            cycles = CyclesHook(plan, os.path.join(settings.model_dir, "model.ckpt"), evaluate_cycle)
            self.keep_latest = None
            try:
                self.estimator.train(self.train_input_fn, max_steps=plan.total_steps,
                                     hooks=[StopOnNonFiniteLossHook(), cycles])
            finally:
                cycles.close()
            if self.keep_latest is None:
                evaluate_cycle(tf.train.latest_checkpoint(settings.model_dir))
            elif recalibration.is_recalibrated(self.keep_latest):
                # Estimator saved the stopped step once more as trained: the evaluated statistics stay the latest
                recalibration.make_latest_checkpoint(self.keep_latest)
        finally:
            try:
                drawing.finish()
            finally:
                evaluation.close()

    def in_cluster(self, task_type: str) -> None:
        """This task's part of a cluster run: the chief and workers train, the evaluator evaluates and snapshots."""
        settings = self.run.settings

        def on_evaluation(results, epoch, improved):
            self.report(*evaluation_results(self.estimator, self.run.params, results), epoch, improved)

        hooks = [StopOnNonFiniteLossHook()]
        if task_type == "chief":
            hooks.append(ProgressBarHook(0, self.plan.total_steps, self.plan.images_per_step, "training"))
        strategies.train_and_evaluate(
            self.estimator, self.train_input_fn, self.run.input_fn(ModeKeys.EVAL),
            max_steps=self.plan.total_steps, best=self.best, steps_per_epoch=self.plan.steps_per_epoch,
            hooks=hooks, on_evaluation=on_evaluation,
            recalibration=recalibration.evaluator_hook(
                settings.model_dir, self.run.experiment, self.run.params, self.recalibration_batches(),
                session_config(settings)),
        )

    def recalibration_batches(self) -> int:
        """batch_norm_recalibration_batches, at most one pass over the training images: the recalibration input
        repeats them in a fixed order, so more batches would only count some images twice; 0 when training updates
        no batch-norm statistics."""
        if not self.run.experiment.updates_batch_norm(self.run.params):
            return 0
        return min(self.run.settings.batch_norm_recalibration_batches,
                   self.plan.examples // self.run.settings.train_batch_size)

    def evaluate_and_snapshot(self, evaluation: CheckpointEvaluation, checkpoint: str, write_summaries) -> str:
        """Evaluate ``checkpoint`` (batch norm recalibrated), log it, and snapshot it if its loss is the best so far;
        the report goes to TensorBoard through ``write_summaries`` (see :func:`evaluation_results`). Returns the
        checkpoint evaluated (the recalibrated one, if any)."""
        checkpoint, results = evaluation.evaluate(checkpoint)
        write_scalar_summaries(self.estimator.eval_dir(), results)
        results, report = evaluation_results(self.estimator, self.run.params, results, write_summaries)
        epoch = results["global_step"] / self.plan.steps_per_epoch
        improved = self.best.update_if_better(checkpoint, results, epoch, phase=self.run.phase)
        self.report(results, report, epoch, improved)
        return checkpoint

    def report(self, results: dict, report, epoch: float, improved: bool) -> None:
        """Keep an evaluation's report beside the log, log it for resumed runs and print its one-line summary."""
        settings = self.run.settings
        if report is not None:
            evaluation_report.write_json(evaluation_report.json_path(settings.model_dir, results["global_step"]), report)
        self.log.append({"epoch": round(epoch, 3), **results, "new_best": improved, "time": time.time()})
        self.hparams_row.write(self.best.record, finished=self.final and self.finished(results["global_step"]))
        print(evaluation_summary(results, epoch, settings.train_epochs, self.best.record, improved, self.run.phase),
              flush=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM (e.g. from a job scheduler), raised in the main thread like Ctrl-C's KeyboardInterrupt."""


def _raise_terminated(signum, frame):
    raise Terminated


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM stops training as Ctrl-C does: checkpoints saved so far stay, and main says how to resume."""
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    if not settings.predict_input:
        raise ConfigError("predict mode needs --predict_input (a folder, a file pattern, or comma-separated files)")
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
    import tensorflow as tf

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
    if not run.settings.export_dir:
        raise ConfigError("export mode needs --export_dir DIR")
    with run.held_checkpoint() as checkpoint:
        path = export_saved_model(run, run.estimator(checkpoint.folder), run.settings.export_dir, checkpoint.path)
    print(f"SavedModel of {checkpoint.name} written to {path}")
    return 0


def export_hub(run: Run) -> int:
    """Write the feature extractor of the checkpoint ``model`` names as a TF1 hub module."""
    output = run.settings.output
    if not output:
        raise ConfigError("export_hub mode needs --output DIR")
    with run.held_checkpoint() as checkpoint:
        try:
            run.experiment.export_feature_extractor(run.params, checkpoint.path, output)
        except ValueError as error:  # an --output that cannot be replaced, a checkpoint without the module's variables
            raise ConfigError(f"export_hub: {error}") from None
    print(f"hub module of {checkpoint.name} written to {output}")
    return 0


def export_tflite(run: Run) -> int:
    """Write a TensorFlow Lite model of the checkpoint ``model`` names (and the experiment's files beside it)."""
    output = run.settings.output
    if not output:
        raise ConfigError("export_tflite mode needs --output FILE, e.g. --output model.tflite")
    check_not_a_folder("output", output, "model.tflite")
    with run.held_checkpoint() as checkpoint:
        run.experiment.export_tflite(run.params, checkpoint.path, output)
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
    print(json.dumps(run.experiment.benchmark_input(run.params, run.settings.benchmark_batches)))
    return 0


MODES = {"train": train, "evaluate": evaluate, "predict": predict, "export": export, "export_hub": export_hub,
         "export_tflite": export_tflite, "dry_run": dry_run, "benchmark_input": benchmark_input}


def main(settings, experiment: Experiment) -> int:
    """Run the mode the settings ask for; user mistakes end in one line on stderr and exit code 2, failures of
    the data or the disk in one line and exit code 1, an interruption with how to resume (130, SIGTERM 143)."""
    use_graph_mode()
    seed_everything(settings.random_seed)
    params = None
    try:
        params = experiment.make_params(settings.as_dict())
        return MODES[settings.mode](Run(settings, experiment, params))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except NonFiniteLossError as error:
        print(f"error: training stopped: {error}. Checkpoints up to the last good one and the best snapshot "
              f"are intact; lower the learning_rate or check the data, then run again.", file=sys.stderr)
        return 1
    except tf.errors.DataLossError as error:
        where = experiment.damaged_record(params) if params else None
        print(f"error: damaged data: {where}; convert the data set again" if where else
              f"error: damaged file: {first_line(error)}; restore or remove it", file=sys.stderr)
        return 1
    except (OSError, tf.errors.PermissionDeniedError, tf.errors.ResourceExhaustedError) as error:
        print(f"error: {storage_problem(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as interruption:
        print(f"\ninterrupted; run the same command again to resume from the latest checkpoint in {settings.model_dir}",
              file=sys.stderr)
        return 143 if isinstance(interruption, Terminated) else 130


def storage_problem(error) -> str:
    """One line for a failed read or write (a read-only model_dir, a full disk): the path and what went wrong."""
    if isinstance(error, OSError):
        problem = f"{error.filename}: {error.strerror}" if error.filename else str(error)
    else:  # TensorFlow's messages name the path
        problem = first_line(error)
    return problem + "; check the path, its permissions and the free space"

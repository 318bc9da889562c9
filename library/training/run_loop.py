"""The generic run loop: train in cycles with evaluation and a best snapshot, or run another mode.

It knows nothing about the data or the network: a project hands ``main`` an instance of
``library.experiment.Experiment`` (the contract; ``project/experiment.py`` is this
project's). ``mode`` is the one switch: training is :func:`train` here, every other mode a
function of ``library/training/modes.py``, each of one ``Run`` (``library/training/invocation.py``);
a training run keeps its state in one :class:`Training`, and each evaluation of it goes through
``library/evaluation/evaluator.py``.
"""

import dataclasses
import os
import sys
from typing import Optional

from library import model_directory
from library.configuration import config
from library.configuration.config import ConfigError
from library.distribution import strategies, towers
from library.evaluation import hparams_summary, recalibration
from library.evaluation.best_checkpoint import BestCheckpoint
from library.evaluation.evaluator import CheckpointEvaluation, EvaluationLog, Evaluator, epoch_label, evaluation_results
from library.experiment import Experiment
from library.tensorflow_env import first_line, import_tensorflow, use_graph_mode
from library.training import checkpoints, modes
from library.training.cycles import CyclesHook, TrainingPlan, plan_training
from library.training.hooks import (NonFiniteLossError, ProgressBarHook, StopOnNonFiniteLossHook, Terminated,
                                    sigterm_as_interrupt)
from library.training.invocation import Run, global_step_of, seed_everything, session_config
from library.training.phases import phase_runs

tf = import_tensorflow()
ModeKeys = tf.estimator.ModeKeys


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
            modes.export_saved_model(run, estimator, os.path.join(settings.best_model_dir, "export"), snapshot)

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
        evaluator = self.evaluator(CheckpointEvaluation(
            lambda features, labels, mode: self.run.experiment.model_fn(features, labels, mode, self.run.params),
            self.run.input_fn(ModeKeys.EVAL),
            recalibration.recalibrator(self.run.experiment, self.run.params, self.recalibration_batches(),
                                       session_config(settings)),
            self.estimator.config.session_config, settings.random_seed))

        def evaluate_cycle(checkpoint) -> bool:
            """Evaluate ``checkpoint``; True when training is to stop early after it."""
            evaluated = evaluator.evaluate(checkpoint)
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
            evaluator.close()

    def in_cluster(self, task_type: str) -> None:
        """This task's part of a cluster run: the chief and workers train, the evaluator evaluates and snapshots."""
        settings = self.run.settings
        evaluator = self.evaluator()

        def on_evaluation(results, epoch, improved):
            evaluator.record(*evaluation_results(self.estimator, self.run.params, results), epoch, improved)

        hooks = [StopOnNonFiniteLossHook()]
        if task_type == "chief":
            hooks.append(ProgressBarHook(0, self.plan.total_steps, self.plan.images_per_step, "training"))
        try:
            strategies.train_and_evaluate(
                self.estimator, self.train_input_fn, self.run.input_fn(ModeKeys.EVAL),
                max_steps=self.plan.total_steps, best=self.best, steps_per_epoch=self.plan.steps_per_epoch,
                hooks=hooks, on_evaluation=on_evaluation,
                recalibration=recalibration.evaluator_hook(
                    settings.model_dir, self.run.experiment, self.run.params, self.recalibration_batches(),
                    session_config(settings)),
            )
        finally:
            evaluator.close()

    def evaluator(self, engine: Optional[CheckpointEvaluation] = None) -> Evaluator:
        """What evaluates this training's checkpoints (``engine``: the in-session evaluation of its cycles; none in a
        cluster, whose evaluator task evaluates with Estimator) and keeps, logs and tells their results."""
        settings = self.run.settings
        return Evaluator(engine=engine, estimator=self.estimator, params=self.run.params, best=self.best, log=self.log,
                         hparams_row=self.hparams_row, finished=lambda step: self.final and self.finished(step),
                         model_dir=settings.model_dir, epochs=settings.train_epochs,
                         steps_per_epoch=self.plan.steps_per_epoch, phase=self.run.phase)

    def recalibration_batches(self) -> int:
        """batch_norm_recalibration_batches, at most one pass over the training images: the recalibration input
        repeats them in a fixed order, so more batches would only count some images twice; 0 when training updates
        no batch-norm statistics."""
        if not self.run.experiment.updates_batch_norm(self.run.params):
            return 0
        return min(self.run.settings.batch_norm_recalibration_batches,
                   self.plan.examples // self.run.settings.train_batch_size)


def main(settings, experiment: Experiment) -> int:
    """Run the mode the settings ask for; user mistakes end in one line on stderr and exit code 2, failures of
    the data or the disk in one line and exit code 1, an interruption with how to resume (130, SIGTERM 143)."""
    use_graph_mode()
    seed_everything(settings.random_seed)
    params = None
    try:
        params = experiment.make_params(settings.as_dict())
        mode = train if settings.mode == "train" else getattr(modes, settings.mode)
        return mode(Run(settings, experiment, params))
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

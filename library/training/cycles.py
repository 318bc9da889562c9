"""Training cycles: how many steps make an epoch, a cycle between evaluations and the whole run
(:class:`TrainingPlan`), and every cycle of a run inside one ``Estimator.train`` call (:class:`CyclesHook`): no
graph to rebuild, no session to reopen, no shuffle buffer to refill between cycles. At each cycle's last step the
hook saves a checkpoint with the training's own Saver and hands it to the run's evaluation
(``library/evaluation/evaluator.py``); a run stopped between the save and the evaluation's log entry is
evaluated on resume (``run_loop.Training.in_cycles``).
"""

import dataclasses

from library.configuration.config import ConfigError
from library.tensorflow_env import import_tensorflow
from library.training.hooks import ProgressBarHook

tf = import_tensorflow()
v1 = tf.compat.v1


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


class CyclesHook(tf.estimator.SessionRunHook):
    """Training cycles inside one ``Estimator.train`` call: a progress bar per cycle and, at the last step of every
    cycle but the run's last (Estimator saves that one itself), a checkpoint handed to ``on_cycle_end(checkpoint)``,
    which returns True to end training there (an early stop)."""

    def __init__(self, plan, checkpoint_prefix: str, on_cycle_end):
        """``plan``: a :class:`TrainingPlan`; ``checkpoint_prefix``: model_dir/model.ckpt, where Estimator saves."""
        self._plan, self._prefix, self._on_cycle_end = plan, checkpoint_prefix, on_cycle_end
        self._bar = None

    def after_create_session(self, session, coord):
        self._global_step = v1.train.get_global_step()
        self._saver = v1.get_collection(v1.GraphKeys.SAVERS)[0]  # the Scaffold's, which Estimator saves with
        self._start_bar(session, int(session.run(self._global_step)))

    def _start_bar(self, session, step: int) -> None:
        plan = self._plan
        target = min((step // plan.cycle_steps + 1) * plan.cycle_steps, plan.total_steps)
        self._bar = ProgressBarHook(step - step % plan.cycle_steps, target, plan.images_per_step,
                                    f"epochs {step // plan.steps_per_epoch}-{target // plan.steps_per_epoch}")
        self._bar.begin()
        self._bar.after_create_session(session, None)

    def before_run(self, run_context):
        return self._bar.before_run(run_context)

    def after_run(self, run_context, run_values):
        self._bar.after_run(run_context, run_values)
        # The global step fetched with the step may have been read before or after the train op incremented it;
        # near a cycle's end, read it again (as Estimator's CheckpointSaverHook does), so that no cycle is missed.
        step = int(run_values.results["step"]) + 1
        if step % self._plan.cycle_steps > 1:
            return
        step = int(run_context.session.run(self._global_step))  # the step just run
        if step % self._plan.cycle_steps or step >= self._plan.total_steps:
            return
        self._bar.close()
        checkpoint = self._saver.save(run_context.session, self._prefix, global_step=step, write_meta_graph=False)
        try:
            stop = self._on_cycle_end(checkpoint)
        except tf.errors.OutOfRangeError as error:  # the training session would take it for its input's end
            raise RuntimeError(f"evaluation of {checkpoint} failed: {error.message}") from error
        if stop:
            run_context.request_stop()
        else:
            self._start_bar(run_context.session, step)

    def close(self) -> None:
        """Close the current bar; also when training stops by an exception, so that the error starts a line."""
        if self._bar is not None:
            self._bar.close()

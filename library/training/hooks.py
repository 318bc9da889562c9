"""Training hooks: a progress bar people can read, a stop on a non-finite loss, and SIGTERM stopping training as Ctrl-C
does."""

import contextlib
import math
import signal
import sys
import time

from tqdm import tqdm

from library.tensorflow_env import import_tensorflow

tf = import_tensorflow()


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; carries the step so the message can name it."""

    def __init__(self, step: int, loss: float):
        super().__init__(f"loss became {loss} at step {step}")
        self.step = step
        self.loss = loss


class _LossHook(tf.estimator.SessionRunHook):
    """Fetches the training loss and the step the run started at.

    ``Estimator.train`` puts the model's loss in the LOSSES collection before it calls
    the hooks' ``begin``, so hooks passed to ``train`` need no handle on ``model_fn``.
    """

    def begin(self):
        self._fetches = {
            "loss": tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.LOSSES)[-1],
            "step": tf.compat.v1.train.get_global_step(),
        }

    def before_run(self, run_context):
        return tf.estimator.SessionRunArgs(self._fetches)


class StopOnNonFiniteLossHook(_LossHook):
    """Raise before any later hook (the checkpoint saver) can save non-finite weights."""

    def after_run(self, run_context, run_values):
        loss, step = run_values.results["loss"], run_values.results["step"]
        if not math.isfinite(loss):
            raise NonFiniteLossError(int(step), float(loss))


class ProgressBarHook(_LossHook):
    """A tqdm bar over the steps of one training cycle, showing loss and images/s."""

    def __init__(self, first_step: int, last_step: int, batch_size: int, description: str):
        self._first_step = first_step
        self._last_step = last_step
        self._batch_size = batch_size
        self._description = description
        self._bar = None

    def after_create_session(self, session, coord):
        step = session.run(tf.compat.v1.train.get_global_step())
        self._bar = tqdm(
            total=self._last_step - self._first_step, initial=step - self._first_step,
            desc=self._description, unit="step", file=sys.stderr, dynamic_ncols=True, leave=True,
        )
        self._step = step
        self._started = time.perf_counter()
        self._started_step = step

    def after_run(self, run_context, run_values):
        step = int(run_values.results["step"]) + 1  # the step just run
        self._bar.update(step - self._step)
        self._step = step
        elapsed = time.perf_counter() - self._started
        images_per_sec = (step - self._started_step) * self._batch_size / max(elapsed, 1e-9)
        self._bar.set_postfix(loss=f"{run_values.results['loss']:.4f}", img_s=f"{images_per_sec:.0f}", refresh=False)

    def end(self, session):
        self.close()

    def close(self):
        """End the bar's line; also when training stops by an exception (``end`` is then not called),
        so that the error message starts a line of its own."""
        if self._bar is not None:
            self._bar.close()


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

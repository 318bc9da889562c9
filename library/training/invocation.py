"""One invocation of the run loop: the resolved settings, the project's experiment and the params it derived
from them (:class:`Run`), and the session options every mode's Estimator runs with."""

import dataclasses
import random
from typing import Optional

import numpy as np

from library.configuration import config
from library.distribution import strategies, towers
from library.experiment import Experiment
from library.tensorflow_env import import_tensorflow
from library.training import checkpoints

tf = import_tensorflow()


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

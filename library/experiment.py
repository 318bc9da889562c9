"""The contract between the generic run loop and a project: what ``library.training.run_loop`` needs to know of it.

A project subclasses :class:`Experiment` once (``project/experiment.py``) and hands an
instance to ``run_loop.main``; the run loop, the cluster code and the exporters use it and
nothing else of the project. Everything the library does not need stays in the project.

Optional capabilities: an experiment may also define these methods, which the library looks for
(:func:`capability`) where a mode or an option needs one; without it that mode is a one-line
ConfigError naming what is missing, and every other mode works:

- ``recalibration_input_fn(params)``: training inputs preprocessed like evaluation, in
  training-size batches, endlessly: what batch-norm statistics are recalibrated on before each
  evaluation (``batch_norm_recalibration_batches``; ``library/evaluation/recalibration.py``);
- ``export_feature_extractor(params, checkpoint_path, output_dir)``: the feature extractor of a
  checkpoint as a TF1 Hub module (``--mode export_hub``);
- ``export_tflite(params, checkpoint_path, output_path)``: the model of a checkpoint as a
  TensorFlow Lite file, with what a user of it needs beside it (``--mode export_tflite``;
  ``library.training.tflite_export`` converts and writes);
- ``benchmark_input(params, batches) -> dict``: images/s of the training input alone
  (``--mode benchmark_input``).

Two seams the model_fn must use for ``distribution mirrored`` with a model no ``tf.distribute``
strategy can mirror (``supports_distribution_strategies`` False; ``library/distribution/towers.py``):
``towers.create_once`` for an object that owns variables (a ``hub.Module``), and
``towers.optimizer`` for the optimizer; outside a replicated training call both pass through.
"""

import abc
import dataclasses
from typing import Optional

from library.configuration.config import ConfigError


@dataclasses.dataclass(frozen=True)
class Phase:
    """One part of a training run that trains in phases (e.g. a new head on a frozen network, then the whole network).

    Each phase is a training run of its own option values, with its own global steps, epochs and evaluations;
    every phase but the last keeps its checkpoints in ``model_dir/<name>``, the last in model_dir itself. A phase
    after the first starts its trainable variables from the previous phase's last checkpoint (its optimizer afresh).
    """

    name: str  # marks the phase's evaluations (evaluations.jsonl, printed lines, the best snapshot's record)
    values: dict  # option values that differ from the run's own (the last phase: none)
    summary: str  # what the phase trains, one line for --print_config


class Experiment(abc.ABC):
    """One project: its options, its data, its model and what its predictions look like."""

    #: The ``library.configuration.config.Option`` s the project adds to the run loop's own (``library.configuration.run_options``).
    options: tuple = ()
    #: False when the model's variables cannot live in a ``tf.distribute`` strategy's scope
    #: (then only ``none``, ``parameter_server`` and a one-device ``mirrored`` run).
    supports_distribution_strategies: bool = True

    @abc.abstractmethod
    def make_params(self, values: dict) -> dict:
        """The Estimator params: option values plus what the project derives; ConfigError for bad input."""

    @abc.abstractmethod
    def train_examples(self, params) -> int:
        """Examples in one training epoch."""

    @abc.abstractmethod
    def model_fn(self, features, labels, mode, params):
        """The Estimator model_fn."""

    @abc.abstractmethod
    def input_fn(self, params, mode, input_context=None):
        """The Estimator input_fn of ``mode`` (training: repeated forever; evaluation: one pass)."""

    @abc.abstractmethod
    def predict_input_fn(self, params, source: str):
        """An input_fn over the raw inputs ``source`` names (``--predict_input``); ConfigError if there are none."""

    @abc.abstractmethod
    def prediction_row(self, prediction: dict, params) -> dict:
        """One prediction as named columns (name -> text): printed tab-separated, written as a CSV row."""

    @abc.abstractmethod
    def serving_input_receiver_fn(self, params):
        """The SavedModel's serving input."""

    def model_identity(self, params) -> dict:
        """What a checkpoint is only good for (e.g. class names, input size): recorded in model_dir, checked by every mode."""
        return {}

    def checkpoint_shapes(self, params) -> dict:
        """{variable name: (shape, what its axes are)} a checkpoint must match to be restored into this model, e.g. the
        head's kernel (features x classes): checked before anything is restored, so a checkpoint of other classes is
        refused in one line naming both shapes."""
        return {}

    def updates_batch_norm(self, params) -> bool:
        """Whether training updates batch-norm moving averages, which each evaluation then recalibrates; False spares
        building a recalibration graph that would find nothing to recalibrate. True when unknown."""
        return True

    def training_phases(self, values: dict) -> tuple:
        """The :class:`Phase` s a training run with these option values goes through, in order; empty for one
        training of the run's own values (no phases)."""
        return ()

    def describe(self, params) -> str:
        """A line printed when training starts (e.g. which network is used); empty for none."""
        return ""

    def damaged_record(self, params) -> Optional[str]:
        """Where the data is damaged (file and record), after a DataLossError that names none; None if unknown."""
        return None


# What a run that needs an optional capability the experiment lacks is told, by the capability's name.
MISSING = {
    "recalibration_input_fn": "batch_norm_recalibration_batches: this experiment has no recalibration input; "
                              "set it to 0",
    "export_feature_extractor": "export_hub: this experiment has no feature extractor to export",
    "export_tflite": "export_tflite: this experiment has no TensorFlow Lite model to export",
    "benchmark_input": "benchmark_input: this experiment has no input benchmark",
}


def capability(experiment: Experiment, name: str):
    """The experiment's optional method ``name`` (one of :data:`MISSING`); its one-line ConfigError when it has none."""
    method = getattr(experiment, name, None)
    if method is None:
        raise ConfigError(MISSING[name])
    return method

"""Synchronous in-graph replication of an Estimator model_fn over the devices of one machine ("towers").

What ``tf.contrib.estimator.replicate_model_fn`` and ``TowerOptimizer`` did in TF 1.5-1.14, for a
model whose variables cannot live in a ``tf.distribute`` strategy's scope (``hub.Module`` creates
them with import_meta_graph). In training the model_fn runs once per device on an even slice of
the global batch; the towers share one set of variables, kept on the host CPU; the gradients of
the towers' losses are averaged on the CPU and applied by one optimizer step, which increments
global_step once. Variable names are those of a one-device run, so checkpoints move freely
between both. Evaluation, prediction and export call the model_fn as it is, on one device.

Two seams for the model_fn, both pass-throughs outside a replicated training call, so one model_fn
serves every mode and device count:

- :func:`optimizer` builds its optimizer once for all towers (one set of the optimizer's own
  variables, e.g. a mixed-precision loss scale) and wraps it: ``minimize()`` records the
  tower's gradients; the replicated model_fn applies their average once all towers are built.
- :func:`create_once` builds an object that owns variables (a ``hub.Module``) in the first tower
  and hands the same object to the others: a second ``hub.Module`` would make a second set.

Of the collections a model_fn fills, the first tower's UPDATE_OPS (batch-norm moving averages)
and summaries are kept and the other towers' dropped, as replicate_model_fn did: the moving
averages follow the first tower's slice of the batch.
"""

import contextlib
import dataclasses
from typing import Callable, Optional

from library.tensorflow_env import import_tensorflow

tf = import_tensorflow()
v1 = tf.compat.v1

VARIABLE_DEVICE = "/cpu:0"
_VARIABLE_OPS = frozenset({"Variable", "VariableV2", "VarHandleOp", "AutoReloadVariable"})
FIRST_TOWER_ONLY = (v1.GraphKeys.UPDATE_OPS, v1.GraphKeys.SUMMARIES)


@dataclasses.dataclass(frozen=True)
class Towers:
    """The devices one training step is replicated on (one tower each)."""

    devices: tuple

    @property
    def num_replicas_in_sync(self) -> int:
        """Towers that share a step's global batch (named as a strategy's, for ``strategies.images_per_step``)."""
        return len(self.devices)

    def replicate(self, model_fn) -> Callable:
        """``model_fn`` replicated over these towers in training, as it is in the other modes."""
        return replicate_model_fn(model_fn, self.devices)

    @staticmethod
    def input_fn(train_input_fn) -> Callable:
        """``train_input_fn`` handed a one-pipeline input context: it batches the global batch on the host.

        An input_fn without a context may stage its batches on the first GPU; the replicated
        model_fn splits them on the host and each slice goes to its own tower's device.
        """
        return lambda: train_input_fn(input_context=tf.distribute.InputContext())


@dataclasses.dataclass
class _Replication:
    """What the towers of one replicated model_fn call leave for the single optimizer step."""

    gradients: list = dataclasses.field(default_factory=list)  # one list of (gradient, variable) per tower
    optimizer: object = None
    global_step: object = None
    shared: dict = dataclasses.field(default_factory=dict)


_active: Optional[_Replication] = None  # set while a tower's model_fn builds its graph
_OPTIMIZER_KEY = "towers.optimizer"


def optimizer(factory: Callable):
    """The model_fn's optimizer, ``factory()``: as it is on one device; in towers built once and wrapped so that
    ``minimize`` records each tower's gradients (an optimizer per tower would make its variables once per tower)."""
    if _active is None:
        return factory()
    return _TowerOptimizer(create_once(_OPTIMIZER_KEY, factory), _active)


def create_once(key: str, factory: Callable):
    """``factory()``, called only in the first tower of a replicated call; the later towers get the same object."""
    if _active is None:
        return factory()
    if key not in _active.shared:
        _active.shared[key] = factory()
    return _active.shared[key]


class _TowerOptimizer:
    """A tower's optimizer: ``minimize`` computes the tower's gradients and leaves applying them to the replication."""

    def __init__(self, inner, replication: _Replication):
        self._inner = inner
        self._replication = replication

    def minimize(self, loss, global_step=None, var_list=None, name=None):
        """Record the gradients of ``loss``; returns a no-op carrying the caller's control dependencies (UPDATE_OPS)."""
        with tf.control_dependencies(None):  # the other towers' gradients must not pull in their UPDATE_OPS
            gradients = self._inner.compute_gradients(loss, var_list=var_list, colocate_gradients_with_ops=True)
        replication = self._replication
        replication.gradients.append(gradients)
        replication.optimizer, replication.global_step = self._inner, global_step
        return tf.no_op(name=name or "tower_step")


def replicate_model_fn(model_fn, devices) -> Callable:
    """An Estimator model_fn that trains ``model_fn`` with one tower per device of ``devices``, synchronously."""
    def replicated_model_fn(features, labels, mode, params):
        if mode != tf.estimator.ModeKeys.TRAIN:
            return model_fn(features, labels, mode, params)
        with tf.device(VARIABLE_DEVICE):  # split on the host; each slice is copied to its tower's device
            feature_slices, label_slices = _split(features, len(devices)), _split(labels, len(devices))
        replication, specs = _Replication(), []
        for tower, device in enumerate(devices):
            with _tower(replication, tower, device):
                specs.append(model_fn(feature_slices[tower], label_slices[tower], mode, params))
        return _train_spec(specs, replication)

    return replicated_model_fn


def _split(structure, count: int) -> list:
    """``count`` structures like ``structure``, the n-th holding the n-th even slice of each tensor's batch."""
    slices = [tf.split(tensor, count) for tensor in tf.nest.flatten(structure)]
    return [tf.nest.pack_sequence_as(structure, [parts[tower] for parts in slices]) for tower in range(count)]


@contextlib.contextmanager
def _tower(replication: _Replication, tower: int, device: str):
    """Build tower ``tower``: its ops on ``device``, variables on the host, shared (reused) after the first tower,
    and what it adds to ``FIRST_TOWER_ONLY`` collections dropped after the first tower."""
    global _active
    graph = v1.get_default_graph()
    kept = {key: list(graph.get_collection(key)) for key in FIRST_TOWER_ONLY}
    names = contextlib.nullcontext() if tower == 0 else tf.name_scope(f"tower_{tower}")
    _active = replication
    try:
        with names, v1.device(_placement(device)), v1.variable_scope(v1.get_variable_scope(), reuse=tower > 0 or None):
            if tower > 0:
                _replace_collections(graph, {key: [] for key in FIRST_TOWER_ONLY})
            yield
    finally:
        _active = None
        if tower > 0:
            _replace_collections(graph, kept)


def _replace_collections(graph, contents: dict) -> None:
    """Set the graph's collections in place: ``get_collection_ref`` lists are what later calls read."""
    for key, values in contents.items():
        graph.get_collection_ref(key)[:] = values


def _placement(device: str) -> Callable:
    """A device function: variables on ``VARIABLE_DEVICE``, every other op on the tower's ``device``."""
    return lambda op: VARIABLE_DEVICE if op.type in _VARIABLE_OPS else device


def _train_spec(specs: list, replication: _Replication) -> tf.estimator.EstimatorSpec:
    """The first tower's spec with the mean loss and one step applying the towers' mean gradients."""
    if len(replication.gradients) != len(specs):
        raise ValueError("a replicated model_fn must build its train_op with towers.optimizer(factory).minimize")
    count = len(specs)
    with tf.device(VARIABLE_DEVICE):
        loss = tf.add_n([spec.loss for spec in specs]) / count
        averaged = []
        for tower_pairs in zip(*replication.gradients):
            variable = tower_pairs[0][1]
            gradients = [tf.convert_to_tensor(gradient) for gradient, _ in tower_pairs if gradient is not None]
            averaged.append((tf.add_n(gradients) / count if gradients else None, variable))
    with tf.control_dependencies([specs[0].train_op]):  # the first tower's UPDATE_OPS
        train_op = replication.optimizer.apply_gradients(averaged, global_step=replication.global_step)
    return specs[0]._replace(loss=loss, train_op=train_op)

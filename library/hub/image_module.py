"""Using a TF1 Hub image module by TF Hub's own conventions: where it comes from and what feeds the head.

The conventions (tensorflow/hub ``docs/common_signatures/images.md``): an image module
takes float32 RGB in [0, 1] as input ``images``; a feature-vector module's ``default``
signature gives ``[batch, num_features]``; a classification module's ``default`` gives
logits and its ``image_feature_vector`` signature the features. So the features are the
``image_feature_vector`` signature's ``default`` output where there is one, else the
``default`` signature's. The input size comes from the attached ``ImageModuleInfo`` or
the input shape; a module whose height and width are unknown takes any size.
"""

import dataclasses
import os
from typing import Optional

from library.hub import hub_module
from library.tensorflow_env import import_tensorflow

tf = import_tensorflow()
import tensorflow_hub as hub  # noqa: E402 (after TensorFlow's quiet import)

FEATURE_VECTOR_SIGNATURE = "image_feature_vector"
DEFAULT = "default"
IMAGES_INPUT = "images"
SAVED_MODEL_FILE = "saved_model.pb"  # what a TF2 SavedModel has instead of tfhub_module.pb


class ModuleError(ValueError):
    """A module that cannot be used as asked; the message is one complete line."""


class NotAModuleError(ModuleError):
    """A path that holds no module at all."""


class ModuleNotFetchedError(ModuleError):
    """A module URL that could not be downloaded (no network, wrong address)."""


@dataclasses.dataclass(frozen=True)
class ImageModuleUse:
    """Which part of a module the classifier uses, and what that part takes and gives."""

    signature: str
    input_name: str
    output: str
    feature_size: int
    fixed_image_size: Optional[tuple]  # (height, width), or None: the module takes any size
    has_train_variant: bool


def load_spec(path: str, handle: str):
    """The ModuleSpec in directory ``path`` (what ``handle`` resolved to); ModuleError when there is none."""
    if tf.io.gfile.exists(os.path.join(path, hub_module.MODULE_DEF_FILE)):
        return hub.load_module_spec(path)
    if tf.io.gfile.exists(os.path.join(path, SAVED_MODEL_FILE)):
        raise ModuleError(
            f"hub_module {handle} is a TF2 SavedModel, not a TF1 Hub module (no {hub_module.MODULE_DEF_FILE}); "
            "hub.Module needs the TF1 Hub format: on tfhub.dev pick the model's 'TF1 Hub format' version, "
            "or make a module from Keras Applications weights (python -m library.hub.write_module --keras_application)"
        )
    raise NotAModuleError(f"hub_module {handle}: no {hub_module.MODULE_DEF_FILE} in {path}, so it is no TF1 Hub module")


def resolve(handle: str) -> str:
    """The local directory of a module: a path as is, a URL downloaded into TFHUB_CACHE_DIR (once)."""
    path = handle.removeprefix("file://")
    if "://" not in path or path.startswith("gs://"):
        return path
    try:
        return hub.resolve(handle)
    except Exception as error:  # noqa: BLE001 - urllib, tarfile and TensorFlow each raise their own
        reason = " ".join(str(getattr(error, "reason", error)).split())[:200]
        raise ModuleNotFetchedError(f"hub_module {handle}: cannot download it ({type(error).__name__}: {reason})") from None


def choose(spec, handle: str, signature: Optional[str] = None, output: Optional[str] = None) -> ImageModuleUse:
    """The features to classify: ``signature``/``output`` if given, else TF Hub's feature-vector convention."""
    signatures = spec.get_signature_names()
    if signature is None:
        signature = FEATURE_VECTOR_SIGNATURE if FEATURE_VECTOR_SIGNATURE in signatures else DEFAULT
    if signature not in signatures:
        raise ModuleError(f"hub_signature {signature}: module {handle} has no such signature; "
                          f"it offers: {', '.join(sorted(signatures))}")
    input_name = image_input(spec, handle, signature)
    outputs = spec.get_output_info_dict(signature)
    output = output or DEFAULT
    if output not in outputs:
        raise ModuleError(f"hub_output {output}: signature {signature} of module {handle} has no such output; "
                          f"it offers: {', '.join(sorted(outputs))}")
    shape = outputs[output].get_shape()
    if shape.rank != 2 or shape[1] is None:
        vectors = sorted(name for name, info in outputs.items() if info.get_shape().rank == 2)
        raise ModuleError(f"hub_output {output} of module {handle} has shape {shape}, not [batch, features]; "
                          f"feature-vector outputs of signature {signature}: {', '.join(vectors) or 'none'}")
    try:
        fixed_size = tuple(hub.get_expected_image_size(spec, signature, input_name))
    except ValueError:  # neither ImageModuleInfo nor a fixed input shape: any size goes
        fixed_size = None
    return ImageModuleUse(signature, input_name, output, int(shape[1]), fixed_size,
                          hub_module.TRAIN_TAGS in spec.get_tags())


def image_input(spec, handle: str, signature: str) -> str:
    """The name of the signature's image input: ``images`` by convention, or its only input."""
    inputs = spec.get_input_info_dict(signature)
    if IMAGES_INPUT in inputs:
        return IMAGES_INPUT
    if len(inputs) == 1:
        return next(iter(inputs))
    raise ModuleError(f"hub_signature {signature} of module {handle} takes {', '.join(sorted(inputs))}, "
                      f"none of them '{IMAGES_INPUT}'; pick an image signature with hub_signature")

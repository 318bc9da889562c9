"""Keras Applications as TF1 Hub image modules: pretrained weights without tfhub.dev.

Any model of ``tf.keras.applications`` that takes ``include_top=False, pooling="avg"``
(MobileNetV2, ResNet50, EfficientNetB0, ...) becomes a module written by
``library.hub_module``'s conventions: [0, 1] RGB in, pooled features out, with the
application's own ``preprocess_input`` (which expects [0, 255]) inside the module, so
consumers feed it like any other hub image module. The ``train`` variant calls the model
with ``training=True``: batch norm on batch statistics, its moving-average updates in
UPDATE_OPS, the model's regularization losses in REGULARIZATION_LOSSES.

The weights come from an ``.h5`` file of the same application (``model.save_weights``, or
the ``*_notop.h5`` files Keras downloads into ``~/.keras/models``) or, with a network,
``imagenet`` through Keras's own download. Applications with a width multiplier (``alpha``:
MobileNet, MobileNetV2, MobileNetV3*) take the one their weights were saved with.
"""

import importlib
import inspect

from library import hub_module
from library.tensorflow_env import first_line, import_tensorflow

tf = import_tensorflow()
import tensorflow_hub as hub  # noqa: E402 (after TensorFlow's quiet import)

v1 = tf.compat.v1
IMAGENET = "imagenet"


class KerasApplicationError(ValueError):
    """A Keras application that cannot be made into a module as asked; one complete line."""


def application(name: str):
    """(constructor, preprocess_input) of ``tf.keras.applications.<name>``."""
    constructor = getattr(tf.keras.applications, name, None)
    if not callable(constructor) or not name[:1].isupper():
        known = [entry for entry in dir(tf.keras.applications) if entry[:1].isupper()]
        raise KerasApplicationError(f"--keras_application {name}: no such model in tf.keras.applications; "
                                    f"e.g. {', '.join(known[:8])}, ... ({len(known)} in all)")
    return constructor, importlib.import_module(constructor.__module__).preprocess_input


def build(name: str, image_size: int, weights=None, *, alpha=None):
    """The application without its top, pooled to one feature vector, for image_size x image_size input (of width
    ``alpha``, for applications that take one; None: the application's default)."""
    constructor, _ = application(name)
    try:
        return constructor(include_top=False, pooling="avg", weights=weights, input_shape=(image_size, image_size, 3),
                           **width_arguments(name, alpha))
    except ValueError as error:
        raise KerasApplicationError(f"--keras_application {name}: {' '.join(str(error).split())}") from None


def width_arguments(name: str, alpha) -> dict:
    """The constructor's arguments for width ``alpha`` (none for None); KerasApplicationError if ``name`` has none."""
    if alpha is None:
        return {}
    if not takes_alpha(name):
        raise KerasApplicationError(f"--alpha: {name} takes no width multiplier; leave --alpha out")
    return {"alpha": alpha}


def takes_alpha(name: str) -> bool:
    """Whether application ``name`` has a width multiplier, ``alpha`` (MobileNet, MobileNetV2, MobileNetV3*)."""
    return _alpha_parameter(name) is not None


def _alpha_parameter(name: str):
    """The ``alpha`` parameter of application ``name``'s constructor (its default is the default width), or None."""
    return inspect.signature(application(name)[0]).parameters.get("alpha")


def create_spec(name: str, image_size: int, *, alpha=None):
    """The module spec of application ``name`` (of width ``alpha``); its variables get their values at export."""
    _, preprocess_input = application(name)

    def module_fn(is_training):
        images = v1.placeholder(tf.float32, [None, image_size, image_size, 3], name="images")
        model = build(name, image_size, alpha=alpha)
        built_updates = set(model.updates)  # those of the model's own symbolic input
        features = model(preprocess_input(images * 255.0), training=is_training)
        if is_training:
            for update in model.updates:
                if update not in built_updates:
                    v1.add_to_collection(v1.GraphKeys.UPDATE_OPS, update)
            for loss in model.losses:
                v1.add_to_collection(v1.GraphKeys.REGULARIZATION_LOSSES, loss)
        hub_module.add_image_signatures(images, features, image_size)

    return hub.create_module_spec(
        module_fn, tags_and_args=[(hub_module.TRAIN_TAGS, {"is_training": True}), (set(), {"is_training": False})]
    )


def weight_values(name: str, image_size: int, weights: str, *, alpha=None) -> dict:
    """{variable name: value} of the application (of width ``alpha``) with ``weights`` (an .h5 path or ``imagenet``)."""
    if weights != IMAGENET and not tf.io.gfile.exists(weights):
        raise KerasApplicationError(f"--weights {weights}: no such file; give the .h5 weights of {name} or '{IMAGENET}'")
    with tf.Graph().as_default(), v1.Session():
        if weights == IMAGENET:
            model = _download_imagenet(name, image_size, alpha)
        else:
            model = build(name, image_size, alpha=alpha)
            try:
                model.load_weights(weights)
            except (ValueError, OSError, tf.errors.OpError) as error:  # OpError: a variable of another shape
                raise KerasApplicationError(_not_its_weights(name, weights, alpha, error)) from None
        return {variable.name.split(":")[0]: value for variable, value in zip(model.weights, model.get_weights())}


def _not_its_weights(name: str, weights: str, alpha, error) -> str:
    """The one line for an .h5 file that does not fit the application as built: what failed, and what to do."""
    cause = first_line(error) if isinstance(error, tf.errors.OpError) else " ".join(str(error).split())
    built, remedy = name, "save them with"
    if takes_alpha(name):
        width = alpha if alpha is not None else _alpha_parameter(name).default
        built, remedy = f"{name} of width alpha {width:g}", "pass the --alpha they were saved with, or save them with"
    return (f"--weights {weights}: not the weights of {built} without its top ({cause[:200]}); {remedy} "
            f"tf.keras.applications.{name}(include_top=False, ...).save_weights(PATH.h5)")


def _download_imagenet(name: str, image_size: int, alpha=None):
    """The application (of width ``alpha``) with Keras's ImageNet weights, downloaded (once) into ~/.keras/models."""
    try:
        return build(name, image_size, weights=IMAGENET, alpha=alpha)
    except KerasApplicationError:
        raise
    except Exception as error:  # noqa: BLE001 - Keras wraps every download failure in a bare Exception
        raise KerasApplicationError(
            f"--weights {IMAGENET}: Keras cannot download the ImageNet weights of {name} "
            f"({' '.join(str(error).split())[:160]}); on a machine with internet run "
            f"tf.keras.applications.{name}(include_top=False, weights='imagenet') once, copy the *_notop.h5 "
            "file it leaves in ~/.keras/models, and pass --weights PATH.h5"
        ) from None


def export(name: str, weights: str, image_size: int, output_dir: str, *, alpha=None) -> None:
    """Write application ``name`` (of width ``alpha``) with ``weights`` as a TF1 Hub module at ``output_dir``."""
    application(name)  # an unknown name, or a width it has not, is the first thing to report
    width_arguments(name, alpha)
    values = weight_values(name, image_size, weights, alpha=alpha)
    hub_module.export_spec(create_spec(name, image_size, alpha=alpha), output_dir, values)

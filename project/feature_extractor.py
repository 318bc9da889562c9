"""Where the model's feature extractor comes from, and which of its outputs feeds the head.

``hub_module`` names either a project network (``project.networks.NETWORKS``): pretrained
(``PRETRAINED``: built once into a module with its weights, in TF Hub's module cache), or
else built in memory with freshly initialized, random weights (so it must be trained:
``fine_tuning``); or a TF1 Hub module: a directory, a ``file://`` path or a URL (downloaded into
``TFHUB_CACHE_DIR`` when set), used by TF Hub's conventions (``library.hub.image_module``):
the ``image_feature_vector`` signature where there is one, unless ``hub_signature`` and
``hub_output`` say otherwise. A module written from random weights
(``python -m library.hub.write_module --network``) counts as random too.

Module specs are built or loaded once per process and reused by every model_fn call.

Pixel range: modules take float32 RGB in [0, 1], TF Hub's image-module convention
(modules carry no pixel-range field); see ``preprocessing.to_module_range``.
"""

import dataclasses
import functools
import hashlib
import inspect
import json
import sys

from library.hub import hub_module, image_module
from library.hub.image_module import ModuleNotFetchedError, NotAModuleError
from project import fine_tuning
from project.networks import NETWORKS, OPTIONS_OF, PRETRAINED, layers

BATCH_NORM_DESCRIPTIONS = {fine_tuning.FROZEN: "frozen (the module's stored statistics)",
                           fine_tuning.TRAIN: "on batch statistics (moving averages updated)"}
DEFAULT_IMAGE_SIZE = 224  # where image_size is null and the network or module does not fix a size
OFFLINE_HINT = (
    "without internet, make a pretrained module from Keras Applications weights (python -m library.hub.write_module "
    "--keras_application MobileNetV2 --weights PATH.h5 --image_size 224 --output DIR) and set --hub_module DIR, "
    "or train from scratch with --hub_module small_cnn --fine_tuning (docs/pretrained-modules.md)"
)


@dataclasses.dataclass(frozen=True)
class FeatureExtractor:
    """A module spec and how the model uses it."""

    spec: object  # hub.ModuleSpec
    use: image_module.ImageModuleUse
    random_weights: bool


def resolve(params) -> FeatureExtractor:
    """The feature extractor ``params`` name; ValueError (one line) when it cannot be used as asked."""
    name = params["hub_module"]
    if name in PRETRAINED:
        spec, random_weights = _pretrained_spec(name, configured_size(params), _own_settings(params)), False
    elif name in NETWORKS:
        spec = _network_spec(name, configured_size(params), params.get("random_seed"), _settings(params))
        random_weights = True
    else:
        spec, random_weights = _loaded_spec(name)
    return FeatureExtractor(spec, image_module.choose(spec, name, params.get("hub_signature"), params.get("hub_output")),
                            random_weights)


def input_image_size(params) -> int:
    """Height and width of the images the feature extractor takes: a module's own, or ``image_size``."""
    fixed = resolve(params).use.fixed_image_size
    if fixed is None:
        return configured_size(params)
    height, width = fixed
    if height != width:
        raise ValueError(f"hub_module {params['hub_module']} takes {height}x{width} images; "
                         "only square inputs are supported")
    return height


def check(params) -> list:
    """Refuse a feature extractor that cannot work as configured (ValueError, one line); warnings to show."""
    extractor, name = resolve(params), params["hub_module"]
    if extractor.random_weights and not params["fine_tuning"]:
        raise ValueError(
            f"hub_module {name} starts from random weights and fine_tuning is False: only the head would train, "
            "on random features; train it from scratch with --fine_tuning, or use a pretrained module "
            "(a tfhub.dev TF1 image module, python -m library.hub.write_module --keras_application, or a model of yours "
            "exported with --mode export_hub; docs/pretrained-modules.md)"
        )
    if extractor.random_weights and params["head_epochs"]:
        raise ValueError(f"head_epochs {params['head_epochs']}: hub_module {name} starts from random weights, so a "
                         "head trained first on its features learns nothing; set head_epochs 0")
    size, warnings = input_image_size(params), []
    if params["image_size"] not in (None, size):
        warnings.append(f"warning: image_size {params['image_size']} is not used: module {name} takes {size}x{size} images")
    if params["head_epochs"] and not params["fine_tuning"]:
        warnings.append(f"warning: head_epochs {params['head_epochs']} is not used: with fine_tuning False the whole "
                        "run trains the head alone")
    if trains_batch_norm(params) and not extractor.use.has_train_variant:
        warnings.append(f"warning: module {name} has no 'train' graph variant: fine-tuning runs its inference graph, "
                        "so its batch-norm statistics stay as loaded")
    return warnings


def trains_batch_norm(params) -> bool:
    """Whether fine-tuning runs the module's batch norm on batch statistics, updating its moving averages."""
    return params["fine_tuning"] and batch_norm_mode(params) == fine_tuning.TRAIN


def batch_norm_mode(params) -> str:
    """How the module's batch norm runs while fine-tuning: ``frozen`` or ``train`` (project/fine_tuning.py)."""
    return fine_tuning.batch_norm_mode(params, resolve(params).random_weights)


def describe(params) -> str:
    """Which module, signature, output and sizes are used: the line that starts a training run."""
    extractor, size = resolve(params), input_image_size(params)
    use = extractor.use
    configured = use.fixed_image_size is None or params["hub_module"] in NETWORKS  # a network is built at image_size
    origin = "image_size" if configured else "fixed by the module"
    return (
        f"feature extractor: {params['hub_module']} "
        f"({'random weights, trained from scratch' if extractor.random_weights else 'pretrained'}); "
        f"signature {use.signature}, output {use.output}: {use.feature_size} features; "
        f"input {size}x{size} ({origin}); "
        + (f"fine-tuned with the head, batch norm {BATCH_NORM_DESCRIPTIONS[batch_norm_mode(params)]}"
           if params["fine_tuning"] else "frozen, only the head trains")
    )


def network_key(params):
    """What a project network's weights depend on (the pretrained module's key, or its hyperparameters and seed);
    None for a module."""
    if params["hub_module"] in PRETRAINED:
        return _module_key(params["hub_module"], configured_size(params), _own_settings(params))
    if params["hub_module"] not in NETWORKS:
        return None
    return [_settings(params), params.get("random_seed")]


def configured_size(params) -> int:
    """The ``image_size`` option, or its default where it is null."""
    return params.get("image_size") or DEFAULT_IMAGE_SIZE


def _settings(params) -> str:
    """The hyperparameters a network may read, as a hashable key (the spec is rebuilt when one changes)."""
    from project.options import HYPERPARAMETER_OPTIONS

    return json.dumps({option.name: params.get(option.name) for option in HYPERPARAMETER_OPTIONS}, sort_keys=True)


@functools.lru_cache(maxsize=8)
def _network_spec(name, image_size, seed, settings):
    """A project network's spec, built once per process for each size, seed and hyperparameters."""
    return hub_module.create_spec(NETWORKS[name], image_size, json.loads(settings), seed=seed)


def _own_settings(params) -> str:
    """The hyperparameters a network declares itself, as a hashable key."""
    return json.dumps({option: params.get(option) for option in OPTIONS_OF[params["hub_module"]]}, sort_keys=True)


def _module_key(name, image_size, settings) -> str:
    """A pretrained network's module name in the cache: the network, its input size, and a digest of all its module
    depends on (the weights file's pinned hash, the network's own hyperparameters, the code that builds its graph)."""
    code = (inspect.getsource(sys.modules[NETWORKS[name].__module__]) + inspect.getsource(layers)
            + inspect.getsource(hub_module.create_spec) + inspect.getsource(hub_module.add_image_signatures))
    digest = hashlib.sha256(json.dumps([PRETRAINED[name].sha256, settings, code]).encode()).hexdigest()
    return f"{name}-{image_size}px-{digest[:16]}"


@functools.lru_cache(maxsize=8)
def _pretrained_spec(name, image_size, settings):
    """A pretrained network's spec, loaded from its module (built first where the cache has none), once per process."""
    spec = hub_module.create_spec(NETWORKS[name], image_size, json.loads(settings))
    directory = hub_module.pretrained_module(spec, PRETRAINED[name], _module_key(name, image_size, settings))
    return image_module.load_spec(directory, name)


@functools.lru_cache(maxsize=8)
def _loaded_spec(handle):
    """(spec, random weights?) of a module handle, loaded once per process."""
    try:
        path = image_module.resolve(handle)
    except ModuleNotFetchedError as error:
        raise ModuleNotFetchedError(f"{error}; {OFFLINE_HINT}") from None
    try:
        spec = image_module.load_spec(path, handle)
    except NotAModuleError:
        raise NotAModuleError(
            f"hub_module '{handle}' is neither a project network ({', '.join(NETWORKS)}) nor a TF1 Hub module "
            f"directory (no {hub_module.MODULE_DEF_FILE} there); fix the path, or write a module with "
            "`python -m library.hub.write_module` or `run.py --mode export_hub`"
        ) from None
    return spec, hub_module.has_random_weights(path)

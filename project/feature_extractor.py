"""Where the model's feature extractor comes from, named by the ``hub_module`` hyperparameter.

A project network name (``project.networks.NETWORKS``) builds that network's module spec
in memory; anything else is a TF1 Hub module that ``hub.load_module_spec`` resolves: a
directory, a ``file://`` path, or a URL (downloaded into ``TFHUB_CACHE_DIR`` when set).
Either way model_fn gets a ModuleSpec and wraps it in one ``hub.Module``.

Pixel range: modules take float32 RGB in [0, 1], TF Hub's image-module convention
(modules carry no pixel-range field); see ``preprocessing.to_module_range``.
"""

import os

from library import hub_module
from library.tensorflow_env import import_tensorflow
from project.networks import NETWORKS

tf = import_tensorflow()
import tensorflow_hub as hub  # noqa: E402 (after TensorFlow's quiet import)


def module_spec(params):
    """The ModuleSpec ``params["hub_module"]`` names."""
    name = params["hub_module"]
    if name in NETWORKS:
        return hub_module.create_spec(NETWORKS[name], params["image_size"], params, seed=params["random_seed"])
    return hub.load_module_spec(_checked_handle(name))


def input_image_size(params) -> int:
    """Height and width of the images the feature extractor takes: a module's own, or ``image_size``."""
    if params["hub_module"] in NETWORKS:
        return params["image_size"]
    height, width = hub.get_expected_image_size(module_spec(params))
    if height != width:
        raise ValueError(
            f"hub_module {params['hub_module']} takes {height}x{width} images; only square inputs are supported"
        )
    return height


def _checked_handle(handle):
    """``handle`` unchanged, once a local one is known to be a module directory (hub's own error is a bare IOError)."""
    if "://" in handle and not handle.startswith("file://"):
        return handle
    directory = handle.removeprefix("file://")
    if not tf.io.gfile.exists(os.path.join(directory, hub_module.MODULE_DEF_FILE)):
        raise ValueError(
            f"hub_module '{handle}' is neither a project network ({', '.join(NETWORKS)}) nor a TF1 Hub module "
            f"directory (no {hub_module.MODULE_DEF_FILE} there); fix the path, or write a module with "
            "`python -m library.hub_module` or `run.py --mode export_hub`"
        )
    return handle

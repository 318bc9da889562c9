"""Image feature extractors written for graph mode, packaged as TF1 Hub modules by library.hub_module.

A network is one module of this package that registers itself, with the hyperparameters it
reads declared beside it::

    @register("small_cnn")
    def small_cnn(images, is_training, params): ...

    @register("mobilenet_v2", options=(Option("width_multiplier", float, 1.0, "...", HP),))
    def mobilenet_v2(images, is_training, params): ...

    @register("efficientnet_lite0", weights=hub_module.PretrainedWeights(path, sha256, read))
    def efficientnet_lite0(images, is_training, params): ...

Every module here is imported when the package is, so adding a network is adding a file.
``network(images, is_training, params) -> outputs`` maps float32 RGB images [batch, S, S, 3]
in [0, 1] (the TF Hub image-module convention) to a dict with the features [batch, D] under
``default`` and named intermediate feature maps (``"<network>/<layer>"``), which the written
hub modules offer as extra outputs, as tfhub.dev modules do. ``is_training`` picks batch
statistics (and their moving-average updates) over moving averages; ``params`` is the run's
dict of options, of which a network reads its own.

A network registered with ``weights`` is pretrained: its module is built once with those values
(``library.hub_module.pretrained_module``); every other network starts from random weights.

``python -m project.networks --network NAME --output DIR`` writes one as a module, with its
pretrained weights or fresh variables (``library.hub_module``'s command line, with each
network's options as flags).
"""

import importlib
import pkgutil

NETWORKS = {}  # name -> network function
PRETRAINED = {}  # name -> library.hub_module.PretrainedWeights of the networks that have trained weights
OPTIONS = []  # the hyperparameters the networks declare (project.options adds them to the run's)
OPTIONS_OF = {}  # name -> the names of the hyperparameters that network declares


def register(name, options=(), weights=None):
    """Decorator: make ``network`` selectable as ``hub_module: name``, with its own hyperparameters (and weights)."""
    def add(network):
        if name in NETWORKS:
            raise ValueError(f"two networks are registered as {name!r}")
        NETWORKS[name] = network
        if weights is not None:
            PRETRAINED[name] = weights
        OPTIONS.extend(options)
        OPTIONS_OF[name] = tuple(option.name for option in options)
        return network

    return add


for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

"""Image feature extractors written for graph mode, packaged as TF1 Hub modules by library.hub_module.

Each network is ``network(images, is_training, params) -> outputs``: float32 RGB images
[batch, S, S, 3] in [0, 1] (the TF Hub image-module convention) to a dict with the features
[batch, D] under ``default`` and named intermediate feature maps (``"<network>/<layer>"``),
which the written hub modules offer as extra outputs, as tfhub.dev modules do.
``is_training`` picks batch statistics (and their moving-average updates) over moving
averages; ``params`` is the run's dict of options, of which a network reads its own.
"""

from project.networks.mobilenet_v2 import mobilenet_v2
from project.networks.small_cnn import small_cnn

NETWORKS = {
    "small_cnn": small_cnn,
    "mobilenet_v2": mobilenet_v2,
}

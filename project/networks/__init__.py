"""Image feature extractors written for graph mode, packaged as TF1 Hub modules by library.hub_module.

Each network is ``network(images, is_training, params) -> features``: float32 RGB images
[batch, S, S, 3] in [0, 1] (the TF Hub image-module convention) to features [batch, D].
``is_training`` picks batch statistics (and their moving-average updates) over moving
averages; ``params`` is the run's dict of options, of which a network reads its own.
"""

from project.networks.mobilenet_v2 import mobilenet_v2
from project.networks.small_cnn import small_cnn

NETWORKS = {
    "small_cnn": small_cnn,
    "mobilenet_v2": mobilenet_v2,
}

"""A small CNN that learns the 32x32 demo digits in about a minute on a CPU.

Five 3x3 convolutions with batch norm and ReLU; two of them stride 2; global average
pooling turns any input size into one 64-dimensional feature vector per image.
"""

from library.tensorflow_env import import_tensorflow
from project.networks import layers, register

tf = import_tensorflow()

# (filters, stride) of each convolution.
CONVOLUTIONS = ((16, 1), (32, 2), (32, 1), (64, 2), (64, 1))
# Made for short runs on small data: the moving statistics that evaluation uses must settle
# within a few hundred steps (at 0.99 they lag training by far, and early evaluations suffer).
BATCH_NORM_MOMENTUM = 0.9


@register("small_cnn")
def small_cnn(images, is_training, params):
    """Features [batch, 64] of float32 images [batch, S, S, 3] in [0, 1], and each convolution's feature map."""
    del params  # The registry's common signature; this network has no options.
    activations, outputs = images, {}
    for index, (filters, stride) in enumerate(CONVOLUTIONS):
        activations = tf.nn.relu(layers.conv_batch_norm(
            activations, filters, 3, stride, is_training=is_training, name=f"conv{index}", momentum=BATCH_NORM_MOMENTUM))
        outputs[f"small_cnn/conv{index}"] = activations
    return {"default": layers.global_average_pool(activations), **outputs}

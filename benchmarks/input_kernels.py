"""Reference rates for row 2: the input pipeline's per-image work without a pipeline, over JPEGs held in memory.

Each function runs per-image kernels over encoded images already in memory (a graph constant),
``batch_size`` images per ``Session.run`` on all cores, and returns images/s:

* :func:`kernel_ceiling`: exactly the training pipeline's per-image work (random crop window,
  ``decode_and_crop_jpeg``, flip, resize) and batching, without reading, parsing, shuffling and
  prefetching. The pipeline's images/s divided by this is the pipeline's efficiency.
* :func:`decode_only`: ``tf.io.decode_jpeg`` alone, the cost floor of any JPEG input.
* :func:`decode_and_crop_rate` / :func:`decode_then_crop_rate`: the training crop decoded
  alone versus the full decode followed by the same crop.
"""

import functools

from library.tensorflow_env import import_tensorflow
from project import preprocessing, record_schema
from project.input_benchmark import images_per_second
from project.input_fn import train_image

tf = import_tensorflow()

# Grappler would prune the kernels, whose outputs nothing reads; without it every one runs.
UNOPTIMIZED = tf.compat.v1.ConfigProto()
UNOPTIMIZED.graph_options.rewrite_options.disable_meta_optimizer = True


def encoded_images(pattern, limit=None):
    """The encoded JPEGs of the records of the files matching ``pattern``; the first ``limit`` if given."""
    images = []
    for path in sorted(tf.io.gfile.glob(pattern)):
        for record in tf.compat.v1.io.tf_record_iterator(path):
            example = tf.train.Example.FromString(record)
            images.append(example.features.feature[record_schema.ENCODED].bytes_list.value[0])
            if len(images) == limit:
                return images
    return images


def in_memory_rate(images, per_image, batch_size, batches, stack):
    """Images/s of ``per_image(encoded, seed)`` over random in-memory images, ``batch_size`` per run."""
    with tf.Graph().as_default():
        pool = tf.constant(images)
        picks = tf.random.uniform([batch_size], maxval=len(images), dtype=tf.int32)
        seeds = tf.random.uniform([batch_size, 2], maxval=tf.int64.max, dtype=tf.int64)
        outputs = [per_image(pool[picks[i]], seeds[i]) for i in range(batch_size)]
        step = tf.group(tf.stack(outputs) if stack else outputs)
        return images_per_second(step, batch_size, batches, config=UNOPTIMIZED)


def kernel_ceiling(images, params, batches):
    """Images/s of the training pipeline's per-image work and batching alone: what a perfect pipeline reaches."""
    per_image = functools.partial(train_image, params=params)
    return in_memory_rate(images, per_image, params["train_batch_size"], batches, stack=True)


def decode_only(images, batch_size, batches):
    """Images/s of full JPEG decodes alone."""

    def per_image(encoded, seed):
        return tf.io.decode_jpeg(encoded, channels=3)

    return in_memory_rate(images, per_image, batch_size, batches, stack=False)


def decode_and_crop_rate(images, params, batches):
    """Images/s of the training crop as the pipeline decodes it: decode_and_crop_jpeg of the window only."""

    def per_image(encoded, seed):
        return preprocessing.decode_and_random_crop(encoded, params["min_crop_area"], seed)

    return in_memory_rate(images, per_image, params["train_batch_size"], batches, stack=False)


def decode_then_crop_rate(images, params, batches):
    """Images/s of the same training crop taken after decoding the whole JPEG."""

    def per_image(encoded, seed):
        image = tf.io.decode_jpeg(encoded, channels=3)
        window = preprocessing.random_crop_window(tf.shape(image), params["min_crop_area"], seed)
        return preprocessing.crop_to_window(image, window)

    return in_memory_rate(images, per_image, params["train_batch_size"], batches, stack=False)

"""Input functions of the Estimator: TFRecords, raw image files and serving bytes, one preprocessing.

The raw files are listed and read by ``raw_images``; the input's speed is measured by ``input_benchmark``.

``input_fn`` streams the TFRecords written by ``convert_dataset.py`` (schema in
``record_schema``)::

    Dataset.list_files (sorted) -> [this pipeline's share] -> [shuffle files] -> interleave
    TFRecordDataset -> [shuffle records -> repeat] -> batch -> parse + decode + crop + [flip]
    + resize -> prefetch

(bracketed steps: training, or distributed input only). Distributed pipelines take their
share of the sorted file list before any shuffle, so pipelines without a seed still read
disjoint shards. A pattern matching nothing is checked up front, for a clear error instead
of one at the first ``session.run``. ``raw_input_fn`` feeds image files,
wrapped in the same records by a ``Dataset.from_generator``, into the same tail
(:func:`image_batches`); ``serving_input_receiver_fn`` maps encoded bytes through the same
evaluation preprocessing.

Element contract: images are float32 ``[batch, image_size, image_size, 3]`` in [0, 255]
(``preprocessing.to_module_range`` scales them in the model graph), labels int32 ``[batch]``.
Training repeats forever (the run loop asks ``Estimator.train`` for a number of steps) with a
fixed batch shape; evaluation is exactly one pass, in a deterministic order, last batch partial.
``random_seed`` fixes the file order, the shuffle and every crop and flip: crops use
stateless random ops seeded by the image's position in the stream, so parallelism does not
change them, and each epoch gets new ones.
"""

import functools
import os
import random

from library.tensorflow_env import import_tensorflow
from project import preprocessing, raw_images, record_schema

tf = import_tensorflow()

ModeKeys = tf.estimator.ModeKeys

# Bytes read ahead per open TFRecord file: few, large reads, also on network filesystems.
READ_BUFFER_BYTES = 8 * 1024 * 1024
# Shard file names held by the file-order shuffle: more than any data set has shards, so a full shuffle.
READ_ORDER_BUFFER = 100_000
# Images of a batch preprocessed at once (tf.map_fn): keeps the cores busy up to the batch's last image,
# while bounding the memory of decoded crops in flight (raw photos can be 12-megapixel).
IMAGES_IN_FLIGHT = 16


def input_fn(params, mode, input_context=None):
    """(features, labels) batches of the TFRecords of ``mode``: train_data in TRAIN, eval_data otherwise."""
    training = mode == ModeKeys.TRAIN
    option = "train_data" if training else "eval_data"
    check_shards(params[option], input_context, option)
    records = read_records(pipeline_files(params[option], input_context), params, training)
    if training:
        records = records.shuffle(params["shuffle_buffer"], seed=params["random_seed"], reshuffle_each_iteration=True)
    return image_batches(records, params, mode, input_context)


def recalibration_input_fn(params):
    """Training images preprocessed like evaluation (central crop, no flip), endlessly in full train_batch_size
    batches, in a fixed order: what batch-norm recalibration measures the statistics of (library/evaluation/recalibration.py)."""
    check_shards(params["train_data"], None, "train_data")
    records = read_records(pipeline_files(params["train_data"], None), params, training=False).repeat()
    return image_batches(records, {**params, "eval_batch_size": params["train_batch_size"]}, ModeKeys.EVAL)


def raw_input_fn(params, mode, source, class_names=None):
    """Batches read straight from image files (see ``raw_images.list_image_files``), preprocessed like input_fn.

    A Python generator reads each file, checks it with Pillow (``raw_images.decodable_image``) and
    wraps it in the same ``tf.train.Example`` the converter writes, so from there on both
    paths share every step. Unreadable files are skipped with a warning naming them. The
    generator runs in one Python thread and checks every file every epoch: fine for prediction
    and a first try; convert the folder for long training runs.
    """
    paths, labels = raw_images.list_image_files(source, class_names)
    if not paths:
        raise ValueError(f"raw_input_fn: no image files in {source!r}")
    if mode != ModeKeys.PREDICT and raw_images.UNKNOWN_LABEL in labels:
        raise ValueError("raw_input_fn: training and evaluation need a class-per-folder source and its class_names")
    order = random.Random(params["random_seed"]) if mode == ModeKeys.TRAIN else None
    records = tf.data.Dataset.from_generator(
        functools.partial(raw_images.readable_images, paths, labels, class_names or [], order),
        output_signature=tf.TensorSpec([], tf.string),
    )
    return image_batches(records, params, mode)


def serving_input_receiver_fn(params):
    """Serving input: a batch of encoded JPEG/PNG strings, preprocessed in the graph like evaluation."""
    image_bytes = tf.compat.v1.placeholder(tf.string, [None], name="image_bytes")
    features = {"image": eval_images(image_bytes, params)}
    return tf.estimator.export.ServingInputReceiver(features, {"image_bytes": image_bytes})


def image_batches(records, params, mode, input_context=None):
    """The shared tail: (repeat,) batch, then parse and preprocess whole batches: vectorized parsing, no idle core."""
    training = mode == ModeKeys.TRAIN
    seed = crop_seed(params["random_seed"], input_context) if training else None
    numbered = (records.repeat() if training else records).enumerate()
    batches = numbered.batch(batch_size(params, mode, input_context), drop_remainder=training).map(
        functools.partial(to_features_and_labels, params=params, mode=mode, seed=seed),
        num_parallel_calls=parallel_calls(params),
    )
    return prefetch(batches.with_options(pipeline_options(params, training)), prefetch_device(input_context))


def check_shards(pattern, input_context, option):
    """Raise a ValueError naming the option when ``pattern`` matches no file, or too few to share."""
    try:
        count = len(tf.io.gfile.glob(pattern)) if pattern else 0
    except tf.errors.NotFoundError:
        count = 0
    if not count:
        raise ValueError(f"{option}: no file matches {pattern!r}")
    pipelines = input_context.num_input_pipelines if input_context else 1
    if count < pipelines:
        raise ValueError(f"{option}: {count} files cannot be shared by {pipelines} input pipelines; write more shards")


def pipeline_files(pattern, input_context):
    """This input pipeline's share of the sorted files: every n-th, so distributed pipelines read disjoint records."""
    files = tf.data.Dataset.list_files(pattern, shuffle=False)
    if input_context is None or input_context.num_input_pipelines == 1:
        return files
    return files.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)


def read_records(files, params, training):
    """Serialized records of ``files``, cycle_length files read in parallel (file order shuffled in training)."""
    if training:
        files = files.shuffle(READ_ORDER_BUFFER, seed=params["random_seed"], reshuffle_each_iteration=True)
    return files.interleave(
        lambda filename: tf.data.TFRecordDataset(filename, buffer_size=READ_BUFFER_BYTES),
        cycle_length=params["cycle_length"],
        num_parallel_calls=min(params["cycle_length"], parallel_calls(params)),
    )


def crop_seed(random_seed, input_context=None):
    """This pipeline's seed of all training crops and flips: from random_seed (fresh if None), one per pipeline."""
    base = random.SystemRandom().getrandbits(62) if random_seed is None else random_seed
    return base + (input_context.input_pipeline_id if input_context else 0)


def image_seeds(seed, indices):
    """[batch, 2] seeds of the training images numbered ``indices`` (counting across epochs): new crops every epoch."""
    return tf.stack([tf.fill(tf.shape(indices), tf.constant(seed, tf.int64)), indices], axis=1)


def to_features_and_labels(indices, records, params, mode, seed):
    """Estimator inputs of a batch of records: (features, labels) with the record's other fields as features.

    Evaluation passes the file names on so that its report can name the misclassified images.
    """
    examples = tf.io.parse_example(records, record_schema.feature_spec())
    encoded = examples[record_schema.ENCODED]
    labels = tf.cast(examples[record_schema.LABEL], tf.int32)
    training = mode == ModeKeys.TRAIN
    image = train_images(encoded, image_seeds(seed, indices), params) if training else eval_images(encoded, params)
    features = {"image": image, **record_schema.other_features(examples, training)}
    return features if mode == ModeKeys.PREDICT else (features, labels)


def train_image(encoded, seed, params):
    """The training image of one encoded image, with the crop, flip and size hyperparameters of ``params``."""
    return preprocessing.preprocess_for_train(
        encoded, seed, params["image_size"], params["min_crop_area"], params["random_flip"]
    )


def eval_image(encoded, params):
    """The evaluation (and serving) image of one encoded image, with the crop and size of ``params``."""
    return preprocessing.preprocess_for_eval(encoded, params["image_size"], params["eval_crop_fraction"])


def train_images(encoded, seeds, params):
    """Training images of a batch of encoded images, one seed each."""
    return map_images(lambda image_and_seed: train_image(*image_and_seed, params), (encoded, seeds), params["image_size"])


def eval_images(encoded, params):
    """Evaluation images of a batch of encoded images."""
    return map_images(lambda image: eval_image(image, params), encoded, params["image_size"])


def map_images(preprocess, elements, image_size):
    """Preprocess every image of a batch, IMAGES_IN_FLIGHT at once, into one float32 tensor."""
    return tf.map_fn(
        preprocess,
        elements,
        fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32),
        parallel_iterations=IMAGES_IN_FLIGHT,
    )


def batch_size(params, mode, input_context):
    """Examples per batch of this pipeline: the global batch size, divided among replicas when distributed."""
    global_size = params["train_batch_size"] if mode == ModeKeys.TRAIN else params["eval_batch_size"]
    return input_context.get_per_replica_batch_size(global_size) if input_context else global_size


def parallel_calls(params):
    """Batches preprocessed at once (and files read at once): num_parallel_calls, or one per usable core."""
    return params["num_parallel_calls"] or len(os.sched_getaffinity(0))


def pipeline_options(params, training):
    """tf.data options: sloppy (faster) ordering only in training without a random_seed; no autotuning.

    Parallelism is explicit (:func:`parallel_calls`), so tf.data's autotuning thread has nothing
    to tune, and it would cost seconds at every end of a pipeline: the iterator's destructor
    waits for that thread's timed sleep, which doubles while the pipeline runs (up to a
    minute), so every ``Estimator.train`` and ``evaluate`` call would end with an idle wait.
    """
    options = tf.data.Options()
    options.deterministic = not training or params["random_seed"] is not None
    options.autotune.enabled = False
    return options


def prefetch_device(input_context):
    """'/gpu:0' when batches should be staged on the local GPU; None without one or when distributed."""
    if input_context is None and tf.config.list_physical_devices("GPU"):
        return "/gpu:0"
    return None


def prefetch(dataset, device):
    """Overlap input and training: prefetch to ``device`` if given (the last transformation), else on the host."""
    if device:
        return dataset.apply(tf.data.experimental.prefetch_to_device(device))
    return dataset.prefetch(tf.data.AUTOTUNE)

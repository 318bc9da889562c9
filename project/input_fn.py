"""Input functions of the Estimator: TFRecords, raw image files and serving bytes, one preprocessing.

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
import time

from PIL import ExifTags

from library import image_files
from library.tensorflow_env import import_tensorflow
from project import preprocessing, record_schema

tf = import_tensorflow()

ModeKeys = tf.estimator.ModeKeys

# Bytes read ahead per open TFRecord file: few, large reads, also on network filesystems.
READ_BUFFER_BYTES = 8 * 1024 * 1024
# Shard file names held by the file-order shuffle: more than any data set has shards, so a full shuffle.
READ_ORDER_BUFFER = 100_000
# Formats TensorFlow decodes as Pillow does; raw files in other formats are converted to JPEG.
PASS_THROUGH_FORMATS = ("JPEG", "PNG", "GIF")
# Batches run before benchmark timing starts: fills the shuffle buffer and lets autotuning settle.
BENCHMARK_WARMUP_BATCHES = 10
# Images of a batch preprocessed at once (tf.map_fn): keeps the cores busy up to the batch's last image,
# while bounding the memory of decoded crops in flight (raw photos can be 12-megapixel).
IMAGES_IN_FLIGHT = 16
# Label of a raw image whose class is unknown (prediction input).
UNKNOWN_LABEL = -1


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
    batches, in a fixed order: what batch-norm recalibration measures the statistics of (library/batch_norm_recalibration.py)."""
    check_shards(params["train_data"], None, "train_data")
    records = read_records(pipeline_files(params["train_data"], None), params, training=False).repeat()
    return image_batches(records, {**params, "eval_batch_size": params["train_batch_size"]}, ModeKeys.EVAL)


def raw_input_fn(params, mode, source, class_names=None):
    """Batches read straight from image files (see :func:`list_image_files`), preprocessed like input_fn.

    A Python generator reads each file, checks it with Pillow (see :func:`decodable_image`) and
    wraps it in the same ``tf.train.Example`` the converter writes, so from there on both
    paths share every step. Unreadable files are skipped with a warning naming them. The
    generator runs in one Python thread and checks every file every epoch: fine for prediction
    and a first try; convert the folder for long training runs.
    """
    paths, labels = list_image_files(source, class_names)
    if not paths:
        raise ValueError(f"raw_input_fn: no image files in {source!r}")
    if mode != ModeKeys.PREDICT and UNKNOWN_LABEL in labels:
        raise ValueError("raw_input_fn: training and evaluation need a class-per-folder source and its class_names")
    order = random.Random(params["random_seed"]) if mode == ModeKeys.TRAIN else None
    records = tf.data.Dataset.from_generator(
        functools.partial(readable_images, paths, labels, class_names or [], order),
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
        num_parallel_calls=params["num_parallel_calls"] or tf.data.AUTOTUNE,
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
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def crop_seed(random_seed, input_context=None):
    """This pipeline's seed of all training crops and flips: from random_seed (fresh if None), one per pipeline."""
    base = random.SystemRandom().getrandbits(62) if random_seed is None else random_seed
    return base + (input_context.input_pipeline_id if input_context else 0)


def image_seeds(seed, indices):
    """[batch, 2] seeds of the training images numbered ``indices`` (counting across epochs): new crops every epoch."""
    return tf.stack([tf.fill(tf.shape(indices), tf.constant(seed, tf.int64)), indices], axis=1)


def to_features_and_labels(indices, records, params, mode, seed):
    """Estimator inputs of a batch of records: (features, labels), with the file names except in TRAIN.

    Evaluation passes the file names on so that its report can name the misclassified images.
    """
    examples = tf.io.parse_example(records, record_schema.feature_spec())
    encoded = examples[record_schema.ENCODED]
    labels = tf.cast(examples[record_schema.LABEL], tf.int32)
    if mode == ModeKeys.TRAIN:
        return {"image": train_images(encoded, image_seeds(seed, indices), params)}, labels
    features = {"image": eval_images(encoded, params), "filename": examples[record_schema.FILENAME]}
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


def pipeline_options(params, training):
    """tf.data options: sloppy (faster) ordering only in training without a random_seed."""
    options = tf.data.Options()
    options.deterministic = not training or params["random_seed"] is not None
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


def list_image_files(source, class_names=None):
    """(paths, labels) of ``source``: a class-per-folder tree (with class_names), a folder, a glob or a list."""
    if isinstance(source, (list, tuple)):
        paths = list(source)
    elif not tf.io.gfile.isdir(source):
        paths = sorted(path for path in tf.io.gfile.glob(source) if not tf.io.gfile.isdir(path))
    elif class_names is None:
        paths = files_below(source)
    else:
        return class_folder_files(source, class_names)
    return paths, [UNKNOWN_LABEL] * len(paths)


def class_folder_files(root, class_names):
    """(paths, labels) of the files the converter would take from ``root``; a folder of an unknown class is an error."""
    found = listed_folders(root)
    unknown = sorted(set(found.classes) - set(class_names))
    if unknown:
        raise ValueError(f"{root}: class folders {unknown} are not among the class names")
    label_of = {name: label for label, name in enumerate(class_names)}
    labels = [label_of[relative.split("/")[0]] for relative in found.files]
    return [os.path.join(root, relative) for relative in found.files], labels


def files_below(folder):
    """Every visible file in and below ``folder``, sorted; subfolders are walked as the converter walks them."""
    top = [name.rstrip("/") for name in tf.io.gfile.listdir(folder) if not name.startswith(".")]
    top_files = [name for name in top if not tf.io.gfile.isdir(os.path.join(folder, name))]
    return sorted(os.path.join(folder, relative) for relative in top_files + listed_folders(folder).files)


def listed_folders(root):
    """The converter's listing of the folders below ``root`` (no hidden entries, no symlink loops); warns of skips."""
    found = image_files.list_class_folders(root)
    for relative, reason in found.skipped:
        tf.get_logger().warning("skipped %s: %s", os.path.join(root, relative), reason)
    return found


def readable_images(paths, labels, class_names, order=None):
    """Yield a serialized Example per readable image, shuffled by ``order``; warn about and skip the others."""
    indices = list(range(len(paths)))
    if order is not None:
        order.shuffle(indices)
    for index in indices:
        path, label = paths[index], labels[index]
        try:
            encoded, height, width = decodable_image(path)
        except Exception as error:  # noqa: BLE001 - any unreadable file is skipped, never fatal mid-epoch
            tf.get_logger().warning("skipped unreadable image %s: %s", path, error)
            continue
        class_name = class_names[label] if label != UNKNOWN_LABEL else ""
        yield record_schema.make_example(encoded, height, width, label, class_name, path)


def decodable_image(path):
    """(bytes, height, width) that TensorFlow decodes to the picture the converter would store (before its resize).

    A JPEG, PNG or GIF that is upright and opaque passes through once Pillow has read it all
    (a JPEG cheaply, at 1/8 scale); any other image goes through the converter's own
    normalization (EXIF rotation, transparency on white, any format) to a JPEG of the same size.
    Raises ``image_files.UnusableImage`` (or OSError) for anything else, FIFOs included, which are never opened.
    """
    with image_files.open_file(path) as handle:
        with image_files.opened_image(handle) as image:  # reads the header only: no image, nothing more read
            width, height = image.size
            if image.format in PASS_THROUGH_FORMATS and is_upright_and_opaque(image):
                image.draft("RGB", (1, 1))  # JPEG only: smallest DCT scale, still decodes every byte
                image.load()
                handle.seek(0)
                return handle.read(), height, width
        handle.seek(0)
        return image_files.to_baseline_jpeg(handle, max_edge=max(width, height))


def is_upright_and_opaque(image):
    """Whether TensorFlow's decoders, which ignore EXIF orientation and drop alpha, see the picture Pillow sees."""
    return image.getexif().get(ExifTags.Base.Orientation, 1) == 1 and not image.has_transparency_data


def images_per_second(step, images_per_step, steps, setup=(), config=None):
    """Images/s of running ``step`` ``steps`` times in a new session, after running ``setup`` and a warm-up."""
    with tf.compat.v1.Session(config=config) as session:
        session.run(setup)
        for _ in range(BENCHMARK_WARMUP_BATCHES):
            session.run(step)
        start = time.perf_counter()
        for _ in range(steps):
            session.run(step)
        return images_per_step * steps / (time.perf_counter() - start)


def benchmark_input(params, batches):
    """Images/s of the training input pipeline alone (no model), to tell whether it can keep a model fed."""
    with tf.Graph().as_default():
        iterator = tf.compat.v1.data.make_initializable_iterator(input_fn(params, ModeKeys.TRAIN))
        step = tf.group(tf.nest.flatten(iterator.get_next()))
        rate = images_per_second(step, params["train_batch_size"], batches, setup=iterator.initializer)
    return {"images_per_sec": rate, "batches": batches, "batch_size": params["train_batch_size"],
            "input": params["train_data"]}

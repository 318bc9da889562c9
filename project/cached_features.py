"""``cache_features``: the head trains and evaluates on a frozen module's features, computed once.

It applies while the module is frozen (``fine_tuning`` False); a fine-tuned module's
features change every step, so then the option has no effect.

With ``fine_tuning`` False the module's output for an image never changes, yet the image
pipeline decodes, crops and runs the module for every image every epoch. With
``cache_features`` the features of every training and evaluation image are computed in one
pass and written beside model_dir (``<model_dir>-feature-cache/``) as TFRecords: each
record is the image's own record with the encoded image replaced by its features (and, for
evaluation, by the thumbnail the evaluation report shows), so every other field still
reaches the model_fn. The file is named by a hash of the module (its files' names, sizes
and modification times), the image size, the crop options and the data files' names and
content (the digests of their records the converter's manifests hold, else read from the
files; ``library.feature_cache``): a change of any computes a new one, and a partial file is
never read.

Training augmentation: ``cached_views`` 0 trains on the evaluation's centre crop of every
image (no augmentation: the fastest caching pass, the most prone to overfit); K > 0 stores
K random training crops (and flips) of every image, and each epoch shows every image as one
of its K views, picked at random: K times the caching pass and the cache size, for some of
the augmentation of the image pipeline, which shows a new crop every epoch.

The training cache is parsed once and held in memory (about its file's size: images x views x
feature size x 4 bytes); each epoch is a new permutation of it, so ``shuffle_buffer`` does not
apply. A head's training step is so short that reading and parsing records every step would
cost more than the step itself (benchmark row 3).

The model_fn takes the features where ``features`` holds :data:`FEATURES` and builds the
same variables (module and head) as on images, so checkpoints, the best snapshot, predict
and the exports (which run the whole model on images) are those of the uncached model.
"""

import os

import numpy as np

from library import feature_cache
from library.tensorflow_env import import_tensorflow
from project import feature_extractor, input_fn as inputs, model_fn as model, record_schema

tf = import_tensorflow()
ModeKeys = tf.estimator.ModeKeys

FEATURES = model.CACHED_FEATURES  # the features' key in ``features``, and their field in the cache's records
THUMBNAIL = "cached_thumbnail"  # uint8 [t, t, 3] bytes: the evaluation report's picture of an image
ALL_RECORDS = 2**40  # a batch size no cache reaches: the whole training cache as one batch, parsed at once


def applies(params) -> bool:
    """Whether the head trains on cached features: asked for, and the module frozen (a fine-tuned module's features
    change every step, so there is nothing to cache)."""
    return params["cache_features"] and not params["fine_tuning"]


def views(params, training) -> int:
    """Feature vectors stored per image: the training crops, or the one centre crop."""
    return params["cached_views"] if training and params["cached_views"] else 1


def cache_path(params, mode) -> str:
    """The cache file of ``mode``'s data, named by everything its features depend on."""
    training = mode == ModeKeys.TRAIN
    option = "train_data" if training else "eval_data"
    description = {
        "data": feature_cache.records_signatures(tf.io.gfile.glob(params[option])),
        "module": module_description(params),
        "image_size": params["image_size"],
        "views": [params["cached_views"], params["min_crop_area"], params["random_flip"], params["random_seed"]]
        if training and params["cached_views"] else ["centre crop", params["eval_crop_fraction"]],
    }
    folder = params["model_dir"].rstrip("/") + "-feature-cache"
    return os.path.join(folder, f"{'train' if training else 'eval'}-{feature_cache.key(description)}.tfrecord")


def module_description(params) -> dict:
    """What identifies the module's features: its name, output and, for a module on disk, its files."""
    use = feature_extractor.resolve(params).use
    name = params["hub_module"]
    files = feature_cache.file_signatures([name]) if tf.io.gfile.isdir(name) else feature_extractor.network_key(params)
    return {"hub_module": name, "signature": use.signature, "output": use.output, "files": files}


def input_fn(params, mode, input_context=None):
    """(features, labels) batches of cached features of ``mode``'s data, computed first if need be."""
    path = cache_path(params, mode)
    if feature_cache.ensure(path, lambda temporary: write_cache(params, mode, temporary)):
        print(f"features of {params['train_data' if mode == ModeKeys.TRAIN else 'eval_data']} cached in {path}",
              flush=True)
    training = mode == ModeKeys.TRAIN
    records = tf.data.TFRecordDataset(path, buffer_size=inputs.READ_BUFFER_BYTES)
    if input_context is not None and input_context.num_input_pipelines > 1:
        records = records.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    batch_size = inputs.batch_size(params, mode, input_context)
    if training:
        batches = training_epochs(records, params, batch_size, inputs.crop_seed(params["random_seed"], input_context))
    else:
        batches = records.batch(batch_size).map(lambda batch: first_view(*parsed(batch, params, training=False)),
                                                num_parallel_calls=inputs.parallel_calls(params))
    return batches.with_options(inputs.pipeline_options(params, training)).prefetch(1)


def training_epochs(records, params, batch_size, seed):
    """Endless training batches from the whole cache, parsed once and held in memory: every epoch a new order of
    its images and a new view of each, cut into full batches. A head's step takes well under a millisecond, so a
    batch must cost no per-record work: it is one slice of the epoch's permuted table."""
    table = records.batch(ALL_RECORDS).map(lambda batch: parsed(batch, params, training=True)).cache()

    def epoch(index, features, labels):
        order_seed, view_seed = tf.unstack(tf.random.experimental.stateless_split(
            tf.stack([tf.constant(seed, tf.int64), index]), num=2))
        count = tf.shape(labels)[0]
        steps = count // batch_size
        with tf.control_dependencies([tf.debugging.assert_positive(
                steps, message="cache_features: fewer cached training images than a batch")]):
            order = tf.argsort(tf.random.stateless_uniform([count], order_seed))[: steps * batch_size]
        chosen = tf.random.stateless_uniform([count], view_seed, maxval=tf.shape(features[FEATURES])[1], dtype=tf.int32)
        features = {**features, FEATURES: tf.gather(features[FEATURES], chosen, batch_dims=1)}
        in_batches = tf.reshape(order, [steps, batch_size])
        return tf.data.Dataset.from_tensor_slices(tf.nest.map_structure(lambda t: tf.gather(t, in_batches),
                                                                        (features, labels)))

    return table.repeat().enumerate().flat_map(lambda index, element: epoch(index, *element))


def parsed(records, params, training):
    """(features, labels) of cache records; ``features[FEATURES]`` holds every stored view, [records, views, size]."""
    count, size = views(params, training), feature_extractor.resolve(params).use.feature_size
    spec = {name: value for name, value in record_schema.feature_spec().items() if name != record_schema.ENCODED}
    spec[FEATURES] = tf.io.FixedLenFeature([count * size], tf.float32)
    if not training:
        spec[THUMBNAIL] = tf.io.FixedLenFeature([], tf.string)
    examples = tf.io.parse_example(records, spec)
    features = {FEATURES: tf.reshape(examples[FEATURES], [-1, count, size]),
                **record_schema.other_features(examples, training)}
    if not training:
        thumbnails = tf.io.decode_raw(examples[THUMBNAIL], tf.uint8)
        side = min(model.MISTAKE_THUMBNAIL, params["image_size"])  # model.thumbnails of a square image
        features["image"] = tf.cast(tf.reshape(thumbnails, [-1, side, side, 3]), tf.float32)
    return features, tf.cast(examples[record_schema.LABEL], tf.int32)


def first_view(features, labels):
    """The evaluation's features: its one stored view (the centre crop)."""
    return {**features, FEATURES: features[FEATURES][:, 0]}, labels


def write_cache(params, mode, path) -> None:
    """Write the cache of ``mode``'s data to ``path``: every record in file order, its image replaced by features."""
    training = mode == ModeKeys.TRAIN
    count = views(params, training)
    seed = inputs.crop_seed(params["random_seed"] or 0)
    with tf.Graph().as_default():
        records = inputs.read_records(inputs.pipeline_files(params["train_data" if training else "eval_data"], None),
                                      params, training=False)
        batch = tf.compat.v1.data.make_one_shot_iterator(
            records.enumerate().batch(params["eval_batch_size"]).with_options(inputs.pipeline_options(params, False))
        ).get_next()
        indices, serialized = batch
        if training and params["cached_views"]:
            images = [inputs.to_features_and_labels(indices * count + view, serialized, params, ModeKeys.TRAIN, seed)[0]
                      ["image"] for view in range(count)]
        else:
            images = [inputs.to_features_and_labels(indices, serialized, params, ModeKeys.EVAL, None)[0]["image"]]
        module = model.feature_module(False, params)
        fetches = {"records": serialized,
                   "features": tf.stack([model.apply_module(module, image, params) for image in images], axis=1)}
        if not training:
            fetches["thumbnails"] = model.thumbnails(images[0])
        with tf.compat.v1.Session() as session, tf.io.TFRecordWriter(path) as writer:
            session.run(tf.compat.v1.global_variables_initializer())
            while True:
                try:
                    values = session.run(fetches)
                except tf.errors.OutOfRangeError:
                    break
                for index, record in enumerate(values["records"]):
                    writer.write(cache_record(record, values, index))


def cache_record(serialized: bytes, values: dict, index: int) -> bytes:
    """The image's record with its encoded image replaced by its features (and thumbnail)."""
    example = tf.train.Example.FromString(serialized)
    fields = example.features.feature
    del fields[record_schema.ENCODED]
    fields[FEATURES].float_list.value.extend(np.ravel(values["features"][index]))
    if "thumbnails" in values:
        fields[THUMBNAIL].bytes_list.value.append(values["thumbnails"][index].tobytes())
    return example.SerializeToString()

"""Row 9: the feature cache's caching pass with the pretrained network, against what it cannot beat.

The caching pass (``cached_features.write_cache``: read the records, decode and crop each image,
run the frozen EfficientNet-Lite0, write a record of features per image) is the one long wait of
a head trained on cached features. Its images/s are compared with a bare ``tf.compat.v1.Session``
running the same module on the same decoded batches, held in memory beforehand: the network's
own speed. Both are steady-state rates, from the end of the first batch to the end of the last
(graph building and the first batch, which includes loading the weights, are timed apart).
"""

import os
import tempfile
import time
from unittest import mock

from benchmarks import measure, project_config, report
from benchmarks.report import RowText
from library.tensorflow_env import import_tensorflow
from project import cached_features, input_fn as inputs, model_fn as model

tf = import_tensorflow()
ModeKeys = tf.estimator.ModeKeys


def caching_pass(params, work_dir: str) -> tuple:
    """(images/s after the first batch, details) of one caching pass over ``params["train_data"]``."""
    written = []  # the time each record is written
    record = cached_features.cache_record

    def timed_record(*arguments):
        written.append(time.perf_counter())
        return record(*arguments)

    path = os.path.join(tempfile.mkdtemp(prefix="caching-", dir=work_dir), "cache.tfrecord")
    started = time.perf_counter()
    with mock.patch.object(cached_features, "cache_record", timed_record):
        cached_features.write_cache(params, ModeKeys.TRAIN, path)
    seconds = time.perf_counter() - started
    os.remove(path)
    batch = params["eval_batch_size"]
    first_batch_written = written[batch - 1]
    rate = (len(written) - batch) / (written[-1] - first_batch_written)
    return rate, {"seconds": seconds, "first_batch_seconds": first_batch_written - started, "images": len(written)}


def decoded_batches(params) -> list:
    """The caching pass's batches of decoded, cropped images, as numpy arrays."""
    with tf.Graph().as_default():
        records = inputs.read_records(inputs.pipeline_files(params["train_data"], None), params, training=False)
        serialized = tf.compat.v1.data.make_one_shot_iterator(records.batch(params["eval_batch_size"])).get_next()
        images = inputs.to_features_and_labels(tf.range(tf.shape(serialized)[0], dtype=tf.int64), serialized, params,
                                               ModeKeys.EVAL, None)[0]["image"]
        batches = []
        with tf.compat.v1.Session() as session:
            while True:
                try:
                    batches.append(session.run(images))
                except tf.errors.OutOfRangeError:
                    return batches


def bare_session(params, batches: list) -> tuple:
    """(images/s after the first batch, details) of the module alone on ``batches`` in a bare Session."""
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, *batches[0].shape[1:]])
        features = model.apply_module(model.feature_module(False, params), images, params)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            session.run(features, {images: batches[0]})
            started = time.perf_counter()
            for batch in batches[1:]:
                session.run(features, {images: batch})
            seconds = time.perf_counter() - started
    return sum(len(batch) for batch in batches[1:]) / seconds, {"seconds": seconds}


# One training shard of the benchmark records (250 images), in batches of 32 (quick: of 8): ~6 s of the pass on 2 quiet
# cores, 7 batches in its steady-state window.
BATCH = {"full": 32, "quick": 8}

TEXT = RowText(
    method=(
        "`cached_features.write_cache` over the {images} benchmark images of one training shard "
        "through {network} at {image_size}x{image_size}, batches of {batch_size}, against a bare "
        "`tf.compat.v1.Session` running the same frozen module on the same decoded and cropped batches held in "
        "memory (fed batch by batch): the network's own speed, which the pass cannot beat. Both rates are "
        "steady-state, from the end of the first batch to the end of the last."
    ),
    results=(
        "caching pass: {images_per_sec_caching:.1f} images/s; bare Session: {images_per_sec_bare:.1f} images/s "
        "({ratio:.2f}).",
        "the whole pass took {caching_seconds:.1f} s, of which {first_batch_seconds:.1f} s until its first batch "
        "was written (building the graph, loading the weights, the first batch).",
    ),
    not_met=(
        "The pass decodes and crops each batch in the same `Session.run` as the network, then serializes a record "
        "per image in Python, so both add to the network's time: a miss means they grew beside it (a lighter "
        "network, larger stored images). First check the spread column."
    ),
)


def row(context) -> dict:
    """Row 9: images/s of the caching pass / the module alone in a bare Session, on the same decoded batches."""
    files = sorted(tf.io.gfile.glob(os.path.join(context.records_dir, "train-*.tfrecord")))[:1]
    network = project_config.pretrained_network(context)
    argv = [*project_config.run_argv(context), "--hub_module", network, "--no-fine_tuning",
            "--eval_batch_size", str(BATCH[context.size])]
    _, params = project_config.parsed(argv)
    params = {**params, "train_data": files}  # Dataset.list_files takes a list of patterns
    batches = decoded_batches(params)
    images = sum(len(batch) for batch in batches)
    context.log(f"  caching pass: {images} images through {network} at {params['image_size']}px, "
                f"batches of {params['eval_batch_size']}")
    done = context.rounds({"caching pass": lambda: caching_pass(params, context.output_dir),
                           "bare session": lambda: bare_session(params, batches)})
    summary = measure.ratio_summary(done, "caching pass", "bare session")
    figures = {
        "network": os.path.basename(network), "images": images,
        "batch_size": params["eval_batch_size"], "image_size": params["image_size"],
        "images_per_sec_caching": measure.median_value(done, "caching pass"),
        "images_per_sec_bare": measure.median_value(done, "bare session"),
        "ratio": summary["ratio"],
        "caching_seconds": measure.median_detail(done, "caching pass", "seconds"),
        "first_batch_seconds": measure.median_detail(done, "caching pass", "first_batch_seconds"),
    }
    return report.row(
        "pretrained_caching", f"caching pass of the pretrained {figures['network']} vs a bare Session on the same "
                              "decoded batches, images/s", figures,
        [report.target(f"caching pass with {figures['network']} / bare Session, images/s", summary["ratio"], ">=",
                       0.9, "", noise=summary, measured="{images_per_sec_caching:.1f} vs {images_per_sec_bare:.1f} "
                                                        "images/s")],
        text=TEXT,
    )

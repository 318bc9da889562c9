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

from benchmarks import measure, project_config
from benchmarks.report import target
from library.tensorflow_env import import_tensorflow
from project import cached_features, input_fn as inputs, model_fn as model

tf = import_tensorflow()
ModeKeys = tf.estimator.ModeKeys
NETWORK = "efficientnet_lite0"


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


def run(records_dir: str, shards: int, batch_size: int, work_dir: str, *, budget, rounds: int, max_extra: int,
        quiet_wait: float, log=print) -> dict:
    """Row 9 over the first ``shards`` training shards of the benchmark records, in batches of ``batch_size``."""
    files = sorted(tf.io.gfile.glob(os.path.join(records_dir, "train-*.tfrecord")))[:shards]
    argv = [*project_config.run_argv(records_dir), "--hub_module", NETWORK, "--no-fine_tuning",
            "--eval_batch_size", str(batch_size)]
    _, params = project_config.parsed(argv)
    params = {**params, "train_data": files}  # Dataset.list_files takes a list of patterns
    batches = decoded_batches(params)
    images = sum(len(batch) for batch in batches)
    log(f"  caching pass: {images} images through {NETWORK} at {params['image_size']}px, "
        f"batches of {params['eval_batch_size']}")
    loops = {"caching pass": lambda: caching_pass(params, work_dir), "bare session": lambda: bare_session(params, batches)}
    done = measure.rounds(loops, rounds, budget, max_extra, quiet_wait, log)
    summary = measure.ratio_summary(done, "caching pass", "bare session")
    return {
        "id": "pretrained_caching",
        "title": f"caching pass of the pretrained {NETWORK} vs a bare Session on the same decoded batches, images/s",
        "figures": {
            "images": images, "batch_size": params["eval_batch_size"], "image_size": params["image_size"],
            "images_per_sec_caching": measure.median_value(done, "caching pass"),
            "images_per_sec_bare": measure.median_value(done, "bare session"),
            "ratio": summary["ratio"],
            "caching_seconds": measure.median_detail(done, "caching pass", "seconds"),
            "first_batch_seconds": measure.median_detail(done, "caching pass", "first_batch_seconds"),
        },
        "targets": [target(f"caching pass with {NETWORK} / bare Session, images/s", summary["ratio"], ">=", 0.9, "",
                           summary)],
    }

"""cache_features: the head trains and evaluates on features computed once, keyed so nothing stale is read."""

import glob
import os
import shutil

import numpy as np
import pytest

import convert_dataset
from library import atomic_file
from library.configuration import config
from library.data import feature_cache
from project import cached_features, record_schema
from project.experiment import ImageClassifier
from project.options import OPTIONS
from tests.helpers import tf, run_main, serve

EVAL = tf.estimator.ModeKeys.EVAL
TRAIN = tf.estimator.ModeKeys.TRAIN
experiment = ImageClassifier()


def params_of(project_file, out, *argv):
    """The params run.py builds for the tiny set with ``argv``."""
    settings, _ = config.parse(OPTIONS, ["--project_file", str(project_file), "--config_set", "tiny",
                                         "--model_dir", str(out / "model"), "--no-fine_tuning", *argv], prog="run.py")
    return experiment.make_params(settings.as_dict())


def cache_files(out):
    return sorted(os.path.basename(path) for path in glob.glob(str(out / "model-feature-cache" / "*")))


def test_cache_features_while_fine_tuning_trains_on_images_and_caches_nothing(project, tmp_path, capsys):
    assert run_main(project, tmp_path, "--cache_features", "--fine_tuning", "--train_epochs", "1",
                    "--epochs_between_evals", "1") == 0
    assert "cached in" not in capsys.readouterr().out
    assert os.path.isdir(tmp_path / "model") and not os.path.exists(tmp_path / "model-feature-cache")


def test_cached_training_evaluates_as_the_exported_model_serves(project, frozen_module, tmp_path, capsys):
    argv = ("--hub_module", frozen_module, "--no-fine_tuning", "--cache_features")
    assert run_main(project, tmp_path, *argv, "--train_epochs", "2", "--epochs_between_evals", "1") == 0
    stdout = capsys.readouterr().out
    assert stdout.count("cached in") == 2  # each file computed once, then read by every cycle
    assert [name.split("-")[0] for name in cache_files(tmp_path)] == ["eval", "train"]
    assert run_main(project, tmp_path, *argv, "--mode", "export", "--export_dir", str(tmp_path / "export")) == 0

    params = params_of(project, tmp_path, *argv)
    estimator = tf.estimator.Estimator(experiment.model_fn, str(tmp_path / "model"), params=params)
    cached = list(estimator.predict(lambda: cached_features.input_fn(params, EVAL)))
    assert len(cached) == 24 and cached[0]["probabilities"].shape == (3,)
    encoded = {}
    for path in sorted(glob.glob(params["eval_data"])):
        for record in tf.compat.v1.io.tf_record_iterator(path):
            fields = tf.train.Example.FromString(record).features.feature
            encoded[fields[record_schema.FILENAME].bytes_list.value[0]] = fields[record_schema.ENCODED].bytes_list.value[0]
    (saved_model,) = os.listdir(tmp_path / "export")
    served = serve(str(tmp_path / "export" / saved_model), [encoded[row["filename"]] for row in cached])
    np.testing.assert_allclose(served["probabilities"], [row["probabilities"] for row in cached], atol=1e-5)


def test_the_cache_is_keyed_by_the_data_the_module_and_the_preprocessing(project, frozen_module, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(project.parent / "data", data)
    base = ("--hub_module", frozen_module, "--cache_features", "--train_data", str(data / "train" / "train-*.tfrecord"))

    def paths(*argv):
        params = params_of(project, tmp_path, *base, *argv)
        return cached_features.cache_path(params, TRAIN), cached_features.cache_path(params, EVAL)

    train, evaluation = paths()
    assert paths() == (train, evaluation) and train != evaluation
    assert paths("--eval_crop_fraction", "0.5")[0] != train  # training's centre crops change too
    assert paths("--cached_views", "2") == (paths("--cached_views", "2")[0], evaluation) != (train, evaluation)
    assert paths("--cached_views", "2", "--min_crop_area", "0.5")[0] != paths("--cached_views", "2")[0]
    shard = sorted(glob.glob(str(data / "train" / "train-*.tfrecord")))[0]
    os.utime(shard, ns=(os.stat(shard).st_atime_ns, os.stat(shard).st_mtime_ns + 10**9))  # touched, not changed
    assert paths() == (train, evaluation)
    with tf.io.TFRecordWriter(shard) as writer:  # one record fewer
        for record in list(tf.compat.v1.io.tf_record_iterator(shard))[1:]:
            writer.write(record)
    assert paths() == (paths()[0], evaluation) and paths()[0] != train
    changed_data = paths()[0]
    other_module = tmp_path / "module"
    shutil.copytree(frozen_module, other_module)
    assert paths("--hub_module", str(other_module))[0] != changed_data
    variables = sorted(glob.glob(str(other_module / "variables" / "*")))[0]
    moved = paths("--hub_module", str(other_module))[0]
    os.utime(variables, ns=(os.stat(variables).st_atime_ns, os.stat(variables).st_mtime_ns + 10**9))  # new weights
    assert paths("--hub_module", str(other_module))[0] != moved


def test_cached_views_store_k_different_crops_of_every_image(project, frozen_module, tmp_path):
    params = params_of(project, tmp_path, "--hub_module", frozen_module, "--cache_features", "--cached_views", "3")
    path = str(tmp_path / "train.tfrecord")
    cached_features.write_cache(params, TRAIN, path)
    records = [tf.train.Example.FromString(record).features.feature for record in tf.compat.v1.io.tf_record_iterator(path)]
    assert len(records) == 24 and record_schema.ENCODED not in records[0]
    views = np.reshape(records[0][cached_features.FEATURES].float_list.value, [3, -1])
    assert views.shape[1] > 1 and not np.allclose(views[0], views[1]) and not np.allclose(views[1], views[2])


def test_training_batches_show_every_image_once_an_epoch_in_a_new_order_and_view(project, frozen_module, tmp_path):
    params = params_of(project, tmp_path, "--hub_module", frozen_module, "--cache_features", "--cached_views", "3")
    with tf.Graph().as_default():
        batch = tf.compat.v1.data.make_one_shot_iterator(cached_features.input_fn(params, TRAIN)).get_next()
        with tf.compat.v1.Session() as session:
            epochs = [[session.run(batch) for _ in range(24 // 8)] for _ in range(2)]  # 24 images, batches of 8
    (path,) = glob.glob(str(tmp_path / "model-feature-cache" / "train-*"))
    stored = {}  # the bytes of every cached view -> (image, view, label)
    for image, record in enumerate(tf.compat.v1.io.tf_record_iterator(path)):
        fields = tf.train.Example.FromString(record).features.feature
        for view, values in enumerate(np.reshape(fields[cached_features.FEATURES].float_list.value, [3, -1])):
            stored[values.astype(np.float32).tobytes()] = (image, view, fields[record_schema.LABEL].int64_list.value[0])
    shown = []
    for batches in epochs:
        assert all(features[cached_features.FEATURES].shape == (8, len(next(iter(stored))) // 4)
                   and labels.shape == (8,) for features, labels in batches)
        rows = [stored[vector.tobytes()] + (label,) for features, labels in batches
                for vector, label in zip(features[cached_features.FEATURES], labels)]
        assert sorted(image for image, _, _, _ in rows) == list(range(24))  # every image once
        assert all(label == stored_label for _, _, stored_label, label in rows)
        shown.append(rows)
    assert [row[0] for row in shown[0]] != [row[0] for row in shown[1]]  # a new order
    assert sorted(row[:2] for row in shown[0]) != sorted(row[:2] for row in shown[1])  # new views


def test_an_interrupted_computation_leaves_nothing_that_is_read(tmp_path):
    path = str(tmp_path / "cache" / "features.tfrecord")

    def interrupted(temporary):
        with open(temporary, "wb") as handle:
            handle.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        feature_cache.ensure(path, interrupted)
    assert os.listdir(tmp_path / "cache") == []
    (tmp_path / "cache" / os.path.basename(atomic_file.temporary_name(path))).write_bytes(b"left by a killed run")
    assert feature_cache.ensure(path, lambda temporary: open(temporary, "wb").write(b"whole")) is True
    assert open(path, "rb").read() == b"whole"
    assert feature_cache.ensure(path, lambda temporary: pytest.fail("computed again")) is False


def with_labels_swapped(path) -> None:
    """Rewrite the TFRecord file at ``path`` with labels 0 and 2 swapped: same size, other content; times kept."""
    times = (os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns)
    records = [tf.train.Example.FromString(record) for record in tf.compat.v1.io.tf_record_iterator(path)]
    with tf.io.TFRecordWriter(path) as writer:
        for example in records:
            label = example.features.feature[record_schema.LABEL].int64_list.value
            label[0] = {0: 2, 2: 0}.get(label[0], label[0])
            writer.write(example.SerializeToString())
    os.utime(path, ns=times)


@pytest.fixture
def copied_data(project, frozen_module, tmp_path):
    """(the tiny data set copied into tmp_path, params evaluating its copied test set on cached features)."""
    data = tmp_path / "data"
    shutil.copytree(project.parent / "data", data)
    return data, params_of(project, tmp_path, "--hub_module", frozen_module, "--cache_features",
                           "--eval_data", str(data / "test" / "test-*.tfrecord"))


def test_test_shards_converted_again_with_swapped_labels_get_a_new_cache(project, copied_data, tmp_path):
    data, params = copied_data
    before = cached_features.cache_path(params, EVAL)
    shards = sorted(glob.glob(str(data / "test" / "*")))
    stats = {path: os.stat(path) for path in shards}
    (tmp_path / "swapped.txt").write_text("red\ngreen\nblue\n")  # the training set's labels.txt, reversed
    assert convert_dataset.main(["--dataset_dir", str(project.parent / "images" / "test"), "--tfrecord_filename", "test",
                                 "--tfrecord_dir", str(data / "test"), "--max_edge", "20", "--num_shards", "2",
                                 "--num_workers", "1", "--labels_file", str(tmp_path / "swapped.txt")]) == 0
    for path in shards:  # same files, same sizes, their times restored: only the content tells
        os.utime(path, ns=(stats[path].st_atime_ns, stats[path].st_mtime_ns))
        assert os.path.getsize(path) == stats[path].st_size
    assert sorted(glob.glob(str(data / "test" / "*"))) == shards
    after = cached_features.cache_path(params, EVAL)
    assert after != before
    assert cached_features.cache_path(params, EVAL) == after  # the same content, the same cache


def test_shards_without_a_manifest_are_keyed_by_reading_their_records(copied_data):
    data, params = copied_data
    with_manifest = cached_features.cache_path(params, EVAL)
    os.remove(data / "test" / "test-manifest.json")
    assert cached_features.cache_path(params, EVAL) == with_manifest  # the digests read equal those recorded
    for path in sorted(glob.glob(str(data / "test" / "test-*.tfrecord"))):
        with_labels_swapped(path)
    assert cached_features.cache_path(params, EVAL) != with_manifest


def test_a_shard_changed_since_its_manifest_is_read_not_trusted(copied_data):
    data, params = copied_data
    before = cached_features.cache_path(params, EVAL)
    shard = sorted(glob.glob(str(data / "test" / "test-*.tfrecord")))[0]
    with_labels_swapped(shard)
    os.utime(shard, ns=(os.stat(shard).st_atime_ns, os.stat(data / "test" / "test-manifest.json").st_mtime_ns + 10**9))
    assert cached_features.cache_path(params, EVAL) != before  # newer than its manifest: its records are read

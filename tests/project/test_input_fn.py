"""Input pipeline: TFRecord and raw-folder input, serving input, benchmarks.

Test images carry their identity in their pixels: the red channel is constant and encodes a
record id (the label is id % CLASSES), green and blue are gradients, so every crop and flip
differs while the id, and with it the label, stays readable after crop and resize.
"""

import io
import logging
import os
import re
import tracemalloc

import numpy as np
import pytest
from PIL import ExifTags, Image

from library import image_files
from library.tensorflow_env import import_tensorflow
from project import input_benchmark, input_fn, raw_images, record_schema
from project.options import OPTIONS

tf = import_tensorflow()

ModeKeys = tf.estimator.ModeKeys
CLASSES = 3
SIZE = 24


def image_pixels(record_id, height=40, width=52):
    """An image whose red channel encodes record_id (up to 23) and whose other channels are gradients."""
    y, x = np.mgrid[0:height, 0:width]
    red = np.full((height, width), 16 + 10 * record_id)
    return np.stack([red, x * 255 // width, y * 255 // height], axis=-1).astype(np.uint8)


def encode(pixels, image_format="JPEG"):
    output = io.BytesIO()
    options = {"quality": 95, "subsampling": 0} if image_format == "JPEG" else {}
    Image.fromarray(pixels).save(output, image_format, **options)
    return output.getvalue()


def record_ids(images):
    """The record id each image (or batch of images) encodes in its red channel."""
    return np.rint((np.median(images[..., 0], axis=(-2, -1)) - 16) / 10).astype(int)


def write_records(folder, shards, per_shard):
    """Shards of coded records, ids numbered shard-major; returns their file pattern."""
    folder.mkdir(exist_ok=True)
    for shard in range(shards):
        with tf.io.TFRecordWriter(str(folder / f"data-{shard:05d}-of-{shards:05d}.tfrecord")) as writer:
            for record_id in range(shard * per_shard, (shard + 1) * per_shard):
                pixels, label = image_pixels(record_id), record_id % CLASSES
                height, width = pixels.shape[:2]
                example = record_schema.make_example(record_schema.SourceImage(
                    jpeg=encode(pixels), height=height, width=width, label=label, class_name=f"class{label}",
                    filename=f"{record_id}.jpg"))
                writer.write(example)
    return str(folder / "data-*.tfrecord")


def make_params(pattern, **overrides):
    """Every option at its default, except small images and batches read from ``pattern``."""
    defaults = {option.name: option.default for option in OPTIONS}
    small = {"image_size": SIZE, "train_batch_size": 8, "eval_batch_size": 5, "shuffle_buffer": 64}
    return {**defaults, **small, "train_data": pattern, "eval_data": pattern, **overrides}


def read_batches(dataset, count=None):
    """The first ``count`` batches of a dataset, or all of them, in a fresh graph's session."""
    element = tf.compat.v1.data.make_one_shot_iterator(dataset).get_next()
    batches = []
    with tf.compat.v1.Session() as session:
        while count is None or len(batches) < count:
            try:
                batches.append(session.run(element))
            except tf.errors.OutOfRangeError:
                break
    return batches


def evaluation_ids(params, input_context=None):
    """Record ids of one evaluation pass, in order, checking each label on the way."""
    ids = []
    for features, labels in read_batches(input_fn.input_fn(params, ModeKeys.EVAL, input_context)):
        batch_ids = record_ids(features["image"])
        np.testing.assert_array_equal(labels, batch_ids % CLASSES)
        ids += batch_ids.tolist()
    return ids


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """24 records in 3 shards: fewer shards than the default cycle_length of 8."""
    return write_records(tmp_path_factory.mktemp("records"), shards=3, per_shard=8)


def test_training_batches_have_a_fixed_shape_dtype_and_pixel_range(records):
    dataset = input_fn.input_fn(make_params(records, random_seed=1), ModeKeys.TRAIN)
    features, labels = tf.compat.v1.data.get_output_shapes(dataset)
    assert features["image"].as_list() == [8, SIZE, SIZE, 3] and labels.as_list() == [8]
    assert tf.compat.v1.data.get_output_types(dataset) == ({"image": tf.float32}, tf.int32)
    [(features, labels)] = read_batches(dataset, 1)
    assert 0.0 <= features["image"].min() and features["image"].max() <= 255.0
    assert features["image"].max() > 200.0  # the [0, 255] range, not [0, 1]
    np.testing.assert_array_equal(labels, record_ids(features["image"]) % CLASSES)


def test_evaluation_sees_every_record_once_in_a_deterministic_order(records):
    params = make_params(records)  # cycle_length 8 > 3 shards
    ids = evaluation_ids(params)
    assert ids == [shard * 8 + index for index in range(8) for shard in range(3)]  # round robin over the shards
    assert evaluation_ids(params) == ids
    assert evaluation_ids(dict(params, num_parallel_calls=1)) == ids


def test_evaluation_keeps_the_last_partial_batch(records):
    batches = read_batches(input_fn.input_fn(make_params(records), ModeKeys.EVAL))
    assert [len(labels) for _, labels in batches] == [5, 5, 5, 5, 4]


def test_recalibration_input_is_the_training_data_preprocessed_like_evaluation_in_full_training_batches(records):
    params = make_params(records, eval_data="no-such-file", train_batch_size=7)
    batches = read_batches(input_fn.recalibration_input_fn(params), 5)
    assert [len(labels) for _, labels in batches] == [7] * 5  # past the 24 records: endless, every batch full
    evaluation = read_batches(input_fn.input_fn(make_params(records, eval_batch_size=7), ModeKeys.EVAL))
    first_pass = np.concatenate([features["image"] for features, _ in evaluation])  # central crop, no flip
    recalibration = np.concatenate([features["image"] for features, _ in batches])
    np.testing.assert_array_equal(recalibration[:24], first_pass)
    np.testing.assert_array_equal(recalibration[24:], first_pass[:11])


def test_training_crops_differ_between_epochs_and_repeat_with_the_same_seed(records):
    def two_epochs(seed):
        # One batch is one epoch: shuffle_buffer >= 24 records and the shuffle comes before the repeat.
        params = make_params(records, random_seed=seed, train_batch_size=24)
        with tf.Graph().as_default():
            return [features["image"] for features, _ in read_batches(input_fn.input_fn(params, ModeKeys.TRAIN), 2)]

    first, second = two_epochs(seed=5)
    by_id = [dict(zip(record_ids(epoch), epoch)) for epoch in (first, second)]
    assert sorted(by_id[0]) == sorted(by_id[1]) == list(range(24))
    assert sum(not np.array_equal(by_id[0][i], by_id[1][i]) for i in range(24)) >= 20
    np.testing.assert_array_equal(np.stack(two_epochs(seed=5)), np.stack([first, second]))
    assert not np.array_equal(two_epochs(seed=6)[0], first)


def test_missing_files_raise_a_clear_error(tmp_path):
    pattern = str(tmp_path / "nothing-*.tfrecord")
    with pytest.raises(ValueError, match=re.escape(f"train_data: no file matches '{pattern}'")):
        input_fn.input_fn(make_params(pattern), ModeKeys.TRAIN)
    with pytest.raises(ValueError, match="eval_data: no file matches"):
        input_fn.input_fn(make_params(pattern), ModeKeys.EVAL)


def test_input_pipelines_read_disjoint_shards_in_per_replica_batches(tmp_path):
    params = make_params(write_records(tmp_path, shards=4, per_shard=6), train_batch_size=8, eval_batch_size=8)
    contexts = [tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline, num_replicas_in_sync=4)
                for pipeline in (0, 1)]
    shares = [set(evaluation_ids(params, context)) for context in contexts]
    assert not shares[0] & shares[1] and shares[0] | shares[1] == set(range(24))
    features, labels = tf.compat.v1.data.get_output_shapes(input_fn.input_fn(params, ModeKeys.TRAIN, contexts[0]))
    assert features["image"].as_list()[0] == labels.as_list()[0] == 2
    too_many = tf.distribute.InputContext(num_input_pipelines=5, input_pipeline_id=0, num_replicas_in_sync=5)
    with pytest.raises(ValueError, match="4 files cannot be shared by 5 input pipelines"):
        input_fn.input_fn(params, ModeKeys.EVAL, too_many)


def test_estimator_trains_over_a_dataset_ending_in_prefetch_to_device(records, tmp_path, monkeypatch):
    prefetched_to = []
    prefetch_to_device = tf.data.experimental.prefetch_to_device

    def recorded_prefetch_to_device(device):
        prefetched_to.append(device)
        return prefetch_to_device(device)

    monkeypatch.setattr(tf.data.experimental, "prefetch_to_device", recorded_prefetch_to_device)
    monkeypatch.setattr(input_fn, "prefetch_device", lambda input_context: "/cpu:0")  # as if /cpu:0 were the GPU

    def model_fn(features, labels, mode, params):
        weights = tf.compat.v1.get_variable("weights", [3, CLASSES])
        logits = tf.matmul(tf.reduce_mean(features["image"], axis=[1, 2]), weights)
        loss = tf.compat.v1.losses.sparse_softmax_cross_entropy(labels, logits)
        train_op = tf.compat.v1.train.GradientDescentOptimizer(1e-4).minimize(loss, tf.compat.v1.train.get_global_step())
        return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op)

    estimator = tf.estimator.Estimator(model_fn, model_dir=str(tmp_path), params=make_params(records, random_seed=1))
    estimator.train(input_fn.input_fn, steps=3)
    assert prefetched_to == ["/cpu:0"]
    assert estimator.get_variable_value("global_step") == 3


@pytest.fixture
def raw_folder(tmp_path):
    """A class-per-folder tree: JPEGs, a PNG, a BMP, a JPEG stored sideways with an EXIF rotation, a hidden file."""
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        decoded_jpeg = session.run(tf.io.decode_jpeg(encode(image_pixels(4))))
    sideways = io.BytesIO()
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(image_pixels(3)).transpose(Image.Transpose.ROTATE_90).save(sideways, "JPEG", exif=exif.tobytes())
    files = {
        "class0/a/0.jpg": encode(image_pixels(0)),
        "class1/1.jpg": encode(image_pixels(1)),
        "class1/4.png": encode(decoded_jpeg, "PNG"),  # lossless copy of record 4's decoded pixels
        "class2/2.bmp": encode(image_pixels(2), "BMP"),
        "class2/3.jpg": sideways.getvalue(),
        "class2/.DS_Store": b"junk",
    }
    for name, data in files.items():
        (tmp_path / "raw" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "raw" / name).write_bytes(data)
    return tmp_path / "raw"


def test_raw_images_give_the_same_tensors_as_their_records(raw_folder, tmp_path):
    params = make_params(write_records(tmp_path / "records", shards=1, per_shard=5), eval_batch_size=8)
    [(from_records, _)] = read_batches(input_fn.input_fn(params, ModeKeys.EVAL))
    raw = input_fn.raw_input_fn(params, ModeKeys.EVAL, str(raw_folder), class_names=["class0", "class1", "class2"])
    [(from_files, labels)] = read_batches(raw)
    ids = record_ids(from_files["image"])
    assert ids.tolist() == [0, 1, 4, 2, 3]  # sorted: class0/a/0.jpg, class1/1.jpg, class1/4.png, class2/2.bmp, 3.jpg
    np.testing.assert_array_equal(labels, [0, 1, 1, 2, 2])
    np.testing.assert_array_equal(from_files["image"][:3], from_records["image"][[0, 1, 4]])


def test_raw_images_tensorflow_cannot_read_as_is_match_the_converters_records(raw_folder, tmp_path):
    paths = [str(raw_folder / "class2" / name) for name in ("2.bmp", "3.jpg")]
    with tf.io.TFRecordWriter(str(tmp_path / "converted.tfrecord")) as writer:
        for path in paths:
            image = image_files.read_for_dataset(path, max_edge=384)
            writer.write(record_schema.make_example(record_schema.SourceImage(
                jpeg=image.jpeg, height=image.height, width=image.width, label=2, class_name="class2", filename=path)))
    params = make_params(str(tmp_path / "converted.tfrecord"))
    [(converted, _)] = read_batches(input_fn.input_fn(params, ModeKeys.EVAL))
    [raw] = read_batches(input_fn.raw_input_fn(params, ModeKeys.PREDICT, paths))
    np.testing.assert_array_equal(raw["image"], converted["image"])
    column_means = raw["image"][1, :, :, 1].mean(axis=0)  # green grows left to right in the upright image
    assert (np.diff(column_means) > 0).all()


def test_raw_prediction_skips_unreadable_files_with_a_warning_naming_each(raw_folder, caplog):
    broken = {"truncated.jpg": encode(image_pixels(3))[:300], "empty.png": b"", "notes.txt": b"not an image"}
    for name, data in broken.items():
        (raw_folder / "class2" / name).write_bytes(data)
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        batches = read_batches(input_fn.raw_input_fn(make_params(None), ModeKeys.PREDICT, str(raw_folder)))
    filenames = [os.path.relpath(name.decode(), raw_folder) for batch in batches for name in batch["filename"]]
    assert filenames == ["class0/a/0.jpg", "class1/1.jpg", "class1/4.png", "class2/2.bmp", "class2/3.jpg"]
    assert set(batches[0]) == {"image", "filename"}
    skipped = [record.getMessage() for record in caplog.records if "skipped" in record.getMessage()]
    assert len(skipped) == 3
    for name in broken:
        assert any(str(raw_folder / "class2" / name) in message for message in skipped)


def test_raw_prediction_skips_fifos_without_opening_them(raw_folder, caplog):
    os.mkfifo(raw_folder / "pipe-at-top.jpg")  # opening either would wait for a writer forever
    os.mkfifo(raw_folder / "class1" / "pipe.jpg")
    paths, labels = raw_images.list_image_files(str(raw_folder))
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        records = list(raw_images.readable_images(paths, labels, []))
    assert len(records) == 5
    warnings = [record.getMessage() for record in caplog.records]
    for pipe in ("pipe-at-top.jpg", "class1/pipe.jpg"):
        assert any(str(raw_folder / pipe) in message and "a FIFO, not a regular file" in message
                   for message in warnings), warnings


def test_a_large_file_that_is_no_image_costs_a_header_read_not_its_size(tmp_path):
    video = tmp_path / "holiday.mp4"
    with open(video, "wb") as handle:
        handle.write(b"\x00\x00\x00\x18ftypmp42")
        handle.truncate(2**31)  # 2 GB, sparse: no disk used
    tracemalloc.start()
    try:
        with pytest.raises(image_files.UnusableImage, match="not an image format Pillow can read"):
            raw_images.decodable_image(str(video))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20


def test_raw_input_accepts_a_pattern_or_a_list_and_needs_class_folders_to_train(raw_folder):
    pattern_paths, _ = raw_images.list_image_files(str(raw_folder / "class1" / "*"))
    assert [os.path.basename(path) for path in pattern_paths] == ["1.jpg", "4.png"]
    assert raw_images.list_image_files(str(raw_folder / "class1"))[0] == pattern_paths
    assert raw_images.list_image_files(pattern_paths[::-1])[0] == pattern_paths[::-1]
    with pytest.raises(ValueError, match="class-per-folder"):
        input_fn.raw_input_fn(make_params(None), ModeKeys.TRAIN, pattern_paths, class_names=["class1"])
    with pytest.raises(ValueError, match=r"\['class2'\] are not among the class names"):
        raw_images.list_image_files(str(raw_folder), class_names=["class0", "class1"])


def test_serving_input_preprocesses_encoded_bytes_like_evaluation(records):
    params = make_params(records, eval_batch_size=24)
    [(expected, _)] = read_batches(input_fn.input_fn(params, ModeKeys.EVAL))
    receiver = input_fn.serving_input_receiver_fn(params)
    image_bytes = receiver.receiver_tensors["image_bytes"]
    assert image_bytes.dtype == tf.string and image_bytes.shape.as_list() == [None]
    with tf.compat.v1.Session() as session:
        served = session.run(receiver.features["image"], {image_bytes: [encode(image_pixels(i)) for i in (3, 7)]})
    order = record_ids(expected["image"]).tolist()
    np.testing.assert_array_equal(served, expected["image"][[order.index(3), order.index(7)]])


def test_benchmark_input_reports_images_per_second(records):
    params = make_params(records, train_batch_size=4)
    report = input_benchmark.benchmark_input(params, batches=3)
    assert report["images_per_sec"] > 0 and report == dict(report, batches=3, batch_size=4, input=records)

"""Row 2's reference rates: the pipeline's per-image work over JPEGs held in memory."""

import numpy as np
import pytest

from benchmarks import input_kernels, photos
from library.tensorflow_env import import_tensorflow
from project import record_schema
from project.options import OPTIONS

tf = import_tensorflow()


@pytest.fixture(scope="module")
def jpegs():
    """Six photo-like JPEGs, as the suite generates them."""
    photo = photos.source_photos()["flower"]
    rng = np.random.default_rng(0)
    return [photos.photo_like_jpeg(photo, rng) for _ in range(6)]


def test_encoded_images_are_the_records_jpeg_bytes_in_file_order(jpegs, tmp_path):
    for shard, part in enumerate((jpegs[:4], jpegs[4:])):
        with tf.io.TFRecordWriter(str(tmp_path / f"train-{shard}.tfrecord")) as writer:
            for index, jpeg in enumerate(part):
                writer.write(record_schema.make_example(record_schema.SourceImage(
                    jpeg=jpeg, height=1, width=1, label=0, class_name="flower", filename=f"{shard}-{index}.jpg")))
    pattern = str(tmp_path / "train-*.tfrecord")
    assert input_kernels.encoded_images(pattern) == jpegs
    assert input_kernels.encoded_images(pattern, limit=5) == jpegs[:5]


def test_every_kernel_reports_a_rate(jpegs):
    params = {**{option.name: option.default for option in OPTIONS}, "image_size": 32, "train_batch_size": 4}
    rates = [
        input_kernels.kernel_ceiling(jpegs, params, batches=2),
        input_kernels.decode_only(jpegs, batch_size=4, batches=2),
        input_kernels.decode_and_crop_rate(jpegs, params, batches=2),
        input_kernels.decode_then_crop_rate(jpegs, params, batches=2),
    ]
    assert all(isinstance(rate, float) and rate > 0 for rate in rates)

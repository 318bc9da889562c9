"""Per-image preprocessing: crop windows, cropping decoders, flip, resize."""

import io

import numpy as np
import pytest
from PIL import Image

from library.tensorflow_env import import_tensorflow
from project import preprocessing

tf = import_tensorflow()


def encode(pixels, image_format="JPEG"):
    """Encoded bytes of an RGB uint8 array; JPEGs without chroma subsampling, so colors stay exact."""
    output = io.BytesIO()
    options = {"quality": 95, "subsampling": 0} if image_format == "JPEG" else {}
    Image.fromarray(pixels).save(output, image_format, **options)
    return output.getvalue()


def gradient(height, width):
    """An image whose every pixel differs from its neighbours: any crop or flip shows."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], axis=-1).astype(np.uint8)


def run(tensors):
    with tf.compat.v1.Session() as session:
        return session.run(tensors)


def test_to_module_range_maps_255_to_1():
    assert run(preprocessing.to_module_range(tf.constant([0.0, 127.5, 255.0]))).tolist() == [0.0, 0.5, 1.0]


def test_center_crop_window_is_the_centred_square_of_the_shorter_side():
    window = preprocessing.center_crop_window(tf.constant([300, 400, 3]), 0.875)
    assert run(window).tolist() == [19, 69, 262, 262]


def test_random_crop_windows_respect_area_and_aspect_and_repeat_per_seed():
    shape = tf.constant([300, 400, 3])
    seeds = tf.constant([[0, n] for n in range(64)], tf.int64)
    windows = tf.map_fn(
        lambda seed: preprocessing.random_crop_window(shape, 0.25, seed), seeds, fn_output_signature=tf.int32
    )
    first, again = run([windows, windows])
    np.testing.assert_array_equal(first, again)
    offset_y, offset_x, height, width = first.T
    assert (offset_y >= 0).all() and (offset_y + height <= 300).all()
    assert (offset_x >= 0).all() and (offset_x + width <= 400).all()
    assert (height * width >= 0.25 * 300 * 400 * 0.97).all()  # whole-pixel rounding
    assert (width / height >= 0.74).all() and (width / height <= 1.35).all()
    assert len({tuple(window) for window in first}) > 50


@pytest.mark.parametrize("image_format", ["PNG", "BMP"])
def test_other_formats_crop_the_same_window_as_jpeg(image_format):
    jpeg = encode(gradient(40, 56))
    decoded = run(tf.io.decode_jpeg(jpeg))
    lossless = encode(decoded, image_format)

    def fixed_window(image_shape):
        return tf.constant([5, 7, 20, 30])

    crops = [preprocessing.decode_and_crop(tf.constant(data), fixed_window) for data in (jpeg, lossless)]
    jpeg_crop, other_crop = run(crops)
    np.testing.assert_array_equal(jpeg_crop, decoded[5:25, 7:37])
    np.testing.assert_array_equal(other_crop, decoded[5:25, 7:37])


def test_decode_and_random_crop_decodes_the_window_size():
    encoded = tf.constant(encode(gradient(60, 80)))
    seed = tf.constant([1, 2], tf.int64)
    window = preprocessing.random_crop_window(tf.image.extract_jpeg_shape(encoded), 0.3, seed)
    crop, (_, _, height, width) = run([preprocessing.decode_and_random_crop(encoded, 0.3, seed), window])
    assert crop.shape == (height, width, 3) and crop.dtype == np.uint8


def test_random_flip_mirrors_about_half_the_time():
    image = tf.constant(gradient(8, 12))
    flipped = [preprocessing.random_flip(image, tf.constant([3, n], tf.int64)) for n in range(40)]
    original, *results = run([image, *flipped])
    mirrored = [np.array_equal(result, original[:, ::-1]) for result in results]
    unchanged = [np.array_equal(result, original) for result in results]
    assert all(m or u for m, u in zip(mirrored, unchanged))
    assert 8 <= sum(mirrored) <= 32


def test_resize_gives_float32_in_0_255_at_the_requested_size():
    checkerboard = (np.indices((30, 50)).sum(axis=0) % 2 * 255).astype(np.uint8)
    image = tf.constant(np.repeat(checkerboard[..., None], 3, axis=-1))
    resized = preprocessing.resize(image, 24)
    assert resized.shape.as_list() == [24, 24, 3] and resized.dtype == tf.float32
    values = run(resized)
    assert values.min() >= 0.0 and values.max() <= 255.0


def test_train_preprocessing_repeats_per_seed_and_varies_across_seeds():
    encoded = tf.constant(encode(gradient(48, 64)))
    images = [preprocessing.preprocess_for_train(encoded, tf.constant([0, n], tf.int64), 32, 0.1, True) for n in (1, 1, 2)]
    first, same, other = run(images)
    assert first.shape == (32, 32, 3) and first.dtype == np.float32
    np.testing.assert_array_equal(first, same)
    assert not np.array_equal(first, other)


def test_eval_preprocessing_is_deterministic_and_format_independent():
    pixels = gradient(48, 64)
    decoded_jpeg = run(tf.io.decode_jpeg(encode(pixels)))
    from_jpeg, from_png, again = run(
        [
            preprocessing.preprocess_for_eval(tf.constant(encode(pixels)), 32, 0.875),
            preprocessing.preprocess_for_eval(tf.constant(encode(decoded_jpeg, "PNG")), 32, 0.875),
            preprocessing.preprocess_for_eval(tf.constant(encode(pixels)), 32, 0.875),
        ]
    )
    assert from_jpeg.shape == (32, 32, 3)
    np.testing.assert_array_equal(from_jpeg, again)
    np.testing.assert_array_equal(from_jpeg, from_png)

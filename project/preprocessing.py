"""Per-image preprocessing: small pure functions, one per step.

Pixel convention: the input pipeline delivers float32 images in [0, 255]; the model graph
maps them to the module's range with :func:`to_module_range` (TF Hub image modules take
float32 RGB in [0, 1]). Keeping the scaling in the model graph saves a pass over every
image in the input pipeline.

Every step works on one encoded image (a scalar ``tf.string``), so the TFRecord pipeline,
the raw-folder pipeline, the serving signature and the benchmarks share the same code.
A crop *window* is ``[offset_y, offset_x, height, width]`` (int32), the layout
``tf.image.decode_and_crop_jpeg`` takes. Randomness is stateless: the caller passes a
``[2]`` int64 seed per image, so results do not depend on thread scheduling.
"""

from library.tensorflow_env import import_tensorflow

tf = import_tensorflow()

# Aspect ratios (width / height) of training crops, as in the Inception/ResNet recipe.
CROP_ASPECT_RATIO_RANGE = (3.0 / 4.0, 4.0 / 3.0)
# Tries before sample_distorted_bounding_box falls back to the whole image.
CROP_MAX_ATTEMPTS = 10


def to_module_range(images):
    """Map [0, 255] pixels to the [0, 1] range TF Hub image modules expect."""
    return images * (1.0 / 255.0)


def random_crop_window(image_shape, min_crop_area, seed):
    """A random window covering [min_crop_area, 1] of the image: scale and aspect augmentation."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        image_shape,
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=CROP_ASPECT_RATIO_RANGE,
        area_range=(min_crop_area, 1.0),
        max_attempts=CROP_MAX_ATTEMPTS,
    )
    return tf.stack([begin[0], begin[1], size[0], size[1]])


def center_crop_window(image_shape, crop_fraction):
    """The centred square of crop_fraction * the shorter side: evaluation sees no aspect distortion."""
    height, width = image_shape[0], image_shape[1]
    side = tf.maximum(tf.cast(crop_fraction * tf.cast(tf.minimum(height, width), tf.float32), tf.int32), 1)
    return tf.stack([(height - side) // 2, (width - side) // 2, side, side])


def crop_to_window(image, window):
    """The window's pixels of an already decoded image (formats without a cropping decoder)."""
    offset_y, offset_x, height, width = tf.unstack(window)
    return image[offset_y : offset_y + height, offset_x : offset_x + width]


def decode_and_crop(encoded, choose_window):
    """Decode the window ``choose_window(shape)`` picks: JPEGs decode only that window, other formats whole."""

    def jpeg():
        window = choose_window(tf.image.extract_jpeg_shape(encoded))
        return tf.image.decode_and_crop_jpeg(encoded, window, channels=3)

    def other_format():
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        return crop_to_window(image, choose_window(tf.shape(image)))

    return tf.cond(tf.io.is_jpeg(encoded), jpeg, other_format)


def decode_and_random_crop(encoded, min_crop_area, seed):
    """Training crop: a random window, decoded alone (a JPEG's other pixels are never decoded)."""
    return decode_and_crop(encoded, lambda shape: random_crop_window(shape, min_crop_area, seed))


def decode_and_center_crop(encoded, crop_fraction):
    """Evaluation crop: the deterministic central square."""
    return decode_and_crop(encoded, lambda shape: center_crop_window(shape, crop_fraction))


def random_flip(image, seed):
    """Mirror left-right with probability 1/2; applied to the small uint8 crop, before the resize."""
    return tf.image.stateless_random_flip_left_right(image, seed)


def resize(image, image_size):
    """Bilinear resize to image_size x image_size; float32 in [0, 255]."""
    return tf.image.resize(image, [image_size, image_size], method=tf.image.ResizeMethod.BILINEAR)


def preprocess_for_train(encoded, seed, image_size, min_crop_area, flip):
    """Random crop, optional random flip, resize: the training image of one encoded image."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    image = decode_and_random_crop(encoded, min_crop_area, crop_seed)
    if flip:
        image = random_flip(image, flip_seed)
    return resize(image, image_size)


def preprocess_for_eval(encoded, image_size, crop_fraction):
    """Central crop and resize: the deterministic evaluation image of one encoded image."""
    return resize(decode_and_center_crop(encoded, crop_fraction), image_size)

"""Class-folder listing and conversion of every kind of image file to a baseline RGB JPEG."""

import io
import os

import numpy as np
import pytest
from PIL import ExifTags, Image, JpegImagePlugin

from library.data import image_digest
from library.data.image_files import (DatasetImage, UnusableImage, check_class_names, list_class_folders, read_for_dataset,
                                 to_baseline_jpeg, to_dataset_image)
from tests.helpers import tf, RED, GREEN, BLUE, WHITE, encoded, halves, noise


def converted(data: bytes, max_edge: int = 64):
    """(decoded result, jpeg bytes) of :func:`to_baseline_jpeg`, checked: a baseline RGB JPEG of the reported size."""
    jpeg, height, width = to_baseline_jpeg(io.BytesIO(data), max_edge)
    result = Image.open(io.BytesIO(jpeg))
    assert (result.format, result.mode, result.size) == ("JPEG", "RGB", (width, height))
    assert not result.info.get("progressive")
    return result, jpeg


def assert_color(image: Image.Image, xy, expected, tolerance=12):
    """The pixel at ``xy`` is ``expected`` up to JPEG's error."""
    assert np.abs(np.subtract(image.getpixel(xy), expected)).max() <= tolerance, image.getpixel(xy)


# --- what is stored as is, and what is encoded anew ---


def test_baseline_rgb_jpeg_within_max_edge_is_stored_byte_for_byte():
    original = encoded(noise((48, 32)), "JPEG", quality=75)
    result, jpeg = converted(original, max_edge=48)
    assert jpeg == original
    assert result.size == (48, 32)


@pytest.mark.parametrize(
    "image, options",
    [
        (noise((48, 32)), {"progressive": True}),  # not baseline
        (Image.new("L", (48, 32), 100), {}),  # not RGB
        (Image.new("CMYK", (48, 32), (0, 255, 255, 0)), {}),  # not RGB
    ],
    ids=["progressive", "grayscale", "cmyk"],
)
def test_other_jpegs_within_max_edge_are_encoded_anew(image, options):
    original = encoded(image, "JPEG", **options)
    result, jpeg = converted(original, max_edge=48)
    assert jpeg != original
    assert result.size == (48, 32)


def test_larger_images_shrink_to_max_edge_keeping_their_aspect():
    result, _ = converted(encoded(halves((400, 200), RED, BLUE), "PNG"), max_edge=64)
    assert result.size == (64, 32)
    assert_color(result, (8, 16), RED)
    assert_color(result, (56, 16), BLUE)


def test_smaller_images_are_never_enlarged():
    result, _ = converted(encoded(Image.new("RGB", (30, 20), GREEN), "PNG"), max_edge=64)
    assert result.size == (30, 20)


def test_large_jpegs_are_decoded_at_reduced_scale(monkeypatch):
    decoded_sizes = []
    draft = JpegImagePlugin.JpegImageFile.draft

    def recording_draft(image, mode, size):
        outcome = draft(image, mode, size)
        decoded_sizes.append(image.size)
        return outcome

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", recording_draft)
    result, _ = converted(encoded(halves((800, 600), RED, BLUE), "JPEG"), max_edge=100)
    assert decoded_sizes == [(100, 75)]  # libjpeg decoded 1/8 of each edge instead of every pixel
    assert result.size == (100, 75)
    assert_color(result, (10, 37), RED)


# --- every kind of input becomes RGB ---


def animated_gif() -> bytes:
    """A two-frame GIF whose first frame is red and second blue."""
    first, second = Image.new("RGB", (32, 16), RED), Image.new("RGB", (32, 16), BLUE)
    return encoded(first, "GIF", save_all=True, append_images=[second], duration=100)


def palette_with_transparency() -> bytes:
    """A palette PNG: left half transparent (palette index 0), right half red (index 1)."""
    image = halves((32, 16), 0, 1, mode="P")
    image.putpalette([0, 0, 0, *RED])
    return encoded(image, "PNG", transparency=0)


def sixteen_bit_png() -> bytes:
    """A 16-bit grayscale PNG: left half 0, right half 30000 of 65535."""
    pixels = np.zeros((16, 32), dtype=np.uint16)
    pixels[:, 16:] = 30000
    return encoded(Image.fromarray(pixels), "PNG")


@pytest.mark.parametrize(
    "data, left, right",
    [
        (encoded(halves((32, 16), (0, 0, 0, 0), (*RED, 255), "RGBA"), "PNG"), WHITE, RED),
        (encoded(halves((32, 16), (0, 0), (0, 255), "LA"), "PNG"), WHITE, (0, 0, 0)),
        (palette_with_transparency(), WHITE, RED),
        (animated_gif(), RED, RED),
        (encoded(halves((32, 16), GREEN, BLUE), "BMP"), GREEN, BLUE),
        (encoded(halves((32, 16), GREEN, BLUE), "TIFF"), GREEN, BLUE),
        (encoded(halves((32, 16), (*GREEN, 0), (*BLUE, 255), "RGBA"), "WEBP", lossless=True), WHITE, BLUE),
        (encoded(halves((32, 16), 40, 200, "L"), "PNG"), (40,) * 3, (200,) * 3),
        (encoded(halves((32, 16), (0, 255, 255, 0), (0, 0, 0, 255), "CMYK"), "JPEG", quality=95), RED, (0, 0, 0)),
        (sixteen_bit_png(), (0,) * 3, (117,) * 3),  # scaled (30000 / 256), not clipped to 255
        (encoded(halves((32, 16), 1, 0, "1"), "PNG"), WHITE, (0, 0, 0)),
    ],
    ids=["rgba-png", "gray-alpha-png", "palette-png", "gif-first-frame", "bmp", "tiff", "webp-alpha", "gray-png",
         "cmyk-jpeg", "16-bit-png", "bilevel-png"],
)
def test_every_format_and_mode_becomes_rgb_with_transparency_on_white(data, left, right):
    result, _ = converted(data)
    assert result.size == (32, 16)
    assert_color(result, (4, 8), left)
    assert_color(result, (28, 8), right)


@pytest.mark.parametrize("size, max_edge", [((40, 20), 64), ((400, 200), 40)], ids=["as-is-size", "shrunk"])
def test_exif_orientation_is_applied_so_a_sideways_photo_is_stored_upright(size, max_edge):
    upright = halves(size, RED, BLUE)
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # "rotate 90° clockwise to display"
    sideways = encoded(upright.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif, quality=95)
    result, _ = converted(sideways, max_edge)
    width, height = result.size
    assert (width, height) == (min(size[0], max_edge), min(size[0], max_edge) // 2)
    assert_color(result, (width // 8, height // 2), RED)
    assert_color(result, (width - width // 8, height // 2), BLUE)


# --- what cannot become a training image ---


def corrupt_png() -> bytes:
    """A PNG whose pixel data is overwritten with junk (header intact)."""
    data = bytearray(encoded(noise((32, 32)), "PNG"))
    data[60:200] = bytes(140)
    return bytes(data)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty file"),
        (b"name,label\ncat.jpg,cat\n", "not an image format Pillow can read"),
        (encoded(noise((32, 32)), "JPEG")[:-300], "image file is truncated"),  # would be stored as is
        (encoded(noise((200, 100)), "JPEG")[:2000], "image file is truncated"),  # would be resized
        (encoded(noise((32, 32)), "PNG")[:-100], "damaged image"),
        (corrupt_png(), "damaged image"),
    ],
    ids=["zero-byte", "not-an-image", "truncated-small-jpeg", "truncated-large-jpeg", "truncated-png", "corrupt-png"],
)
def test_unusable_files_are_rejected_with_a_reason(data, reason):
    with pytest.raises(UnusableImage, match=reason):
        to_baseline_jpeg(io.BytesIO(data), 64)


def test_a_jpeg_stored_as_is_is_decoded_small_for_its_digest_yet_caught_when_truncated():
    data = encoded(noise((320, 288)), "JPEG")
    image = to_dataset_image(io.BytesIO(data), 384)
    assert (image.jpeg, image.height, image.width) == (data, 288, 320)  # the file's size, not the reduced decode's
    full = Image.open(io.BytesIO(data))
    assert image_digest.differing_bits(image.digest, image_digest.of(full)) <= 10  # ~ the full picture's digest
    with pytest.raises(UnusableImage, match="image file is truncated"):
        to_dataset_image(io.BytesIO(data[:-2000]), 384)


def test_images_over_pillows_pixel_limit_are_rejected_as_decompression_bombs(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow refuses above twice the limit
    bomb = encoded(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(UnusableImage, match="decompression bomb"):
        to_baseline_jpeg(io.BytesIO(bomb), 64)


def test_files_are_read_from_their_path(tmp_path):
    original = encoded(noise((20, 10)), "JPEG")
    (tmp_path / "a.jpg").write_bytes(original)
    digest = image_digest.of(Image.open(io.BytesIO(original)))
    assert read_for_dataset(str(tmp_path / "a.jpg"), 64) == DatasetImage(original, 10, 20, digest)
    with pytest.raises(UnusableImage, match="cannot open: .*No such file"):
        read_for_dataset(str(tmp_path / "gone.jpg"), 64)


# --- the class-folder tree ---


def test_listing_finds_each_class_folder_and_every_visible_file_below_it(tmp_path):
    files = {
        "cat/a.jpg": b"a",
        "cat/nested/deeper/b.png": b"bb",
        "dog/c.jpg": b"ccc",
        "ünïcode/猫 1.jpg": b"dddd",
        "cat/.hidden.jpg": b"x",
        ".hidden_folder/d.jpg": b"x",
        "loose-file-in-root.txt": b"x",
    }
    for relative, data in files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(data)
    (tmp_path / "empty").mkdir()
    os.symlink("..", tmp_path / "cat" / "nested" / "up")  # a loop: cat/nested/up/nested/up/...
    os.symlink(tmp_path, tmp_path / "dog" / "root")  # a loop through the dataset folder
    os.symlink("cat", tmp_path / "kitten")  # a second name for a class folder
    os.symlink("missing.jpg", tmp_path / "dog" / "broken.jpg")
    os.mkfifo(tmp_path / "dog" / "pipe.jpg")  # opening it would wait for a writer forever
    os.mkfifo(tmp_path / "pipe-in-root")  # in the dataset folder itself: ignored like any file there
    with open(os.path.join(os.fsencode(tmp_path), b"dog", b"caf\xe9.jpg"), "wb"):  # a Latin-1 name
        pass

    found = list_class_folders(str(tmp_path))

    assert found.classes == ["cat", "dog", "empty", "ünïcode"]
    assert found.files == ["cat/a.jpg", "cat/nested/deeper/b.png", "dog/c.jpg", "ünïcode/猫 1.jpg"]
    assert found.total_bytes == 1 + 2 + 3 + 4
    skipped = dict(found.skipped)
    assert skipped.pop("dog/broken.jpg").startswith(f"cannot read: {tmp_path}/dog/broken.jpg")
    assert skipped == {
        "cat/nested/up": "links to a folder already included, cat",
        "dog/root": "links to a folder already included, the dataset folder",
        "kitten": "links to a folder already included, cat",
        "dog/caf\ufffd.jpg": "the name is not valid UTF-8; rename it",
        "dog/pipe.jpg": "a FIFO, not a regular file",
    }


def test_special_files_are_never_opened(tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")
    with pytest.raises(UnusableImage, match=r"^a FIFO, not a regular file$"):
        read_for_dataset(str(tmp_path / "pipe.jpg"), 64)  # returns at once: the FIFO is not opened
    with pytest.raises(UnusableImage, match=r"^a character device, not a regular file$"):
        read_for_dataset("/dev/zero", 64)  # would never end


# --- class names ---


def describe_folder(names):
    return lambda index: f"class folder {names[index]!r}"


@pytest.mark.parametrize("names, message", [
    (["cat", "a\nb"], r"class folder 'a\nb' contains a control character (U+000A)"),
    (["cat", "tab\there"], r"class folder 'tab\there' contains a control character (U+0009)"),
    (["cat", "line\u2028sep"], r"class folder 'line\u2028sep' contains a control character (U+2028)"),
    (["cat", " \u3000"], r"class folder ' \u3000' is blank"),
    (["cat", ""], r"class folder '' is blank"),
    (["cat", "dog", "cat"], "class folder 'cat' is the same name as class folder 'cat'"),
    (["caf\u00e9", "cafe\u0301"],
     "class folder 'cafe\u0301' is the same name as class folder 'caf\u00e9' after Unicode normalization"),
])
def test_names_that_cannot_be_classes_are_refused_naming_the_culprit(names, message):
    with pytest.raises(ValueError) as error:
        check_class_names(names, describe_folder(names))
    assert str(error.value) == message


def test_names_differing_only_in_case_are_distinct_classes_returned_for_a_warning():
    names = ["Cat", "cat", "dog", "STRASSE", "straße", "猫"]
    assert check_class_names(names, describe_folder(names)) == [("Cat", "cat"), ("STRASSE", "straße")]


def test_trees_on_other_tensorflow_filesystems_are_listed_and_read_through_gfile(tmp_path):
    root = f"ram://{tmp_path.name}"  # TensorFlow's in-memory filesystem, standing in for gs:// and the like
    original = encoded(noise((20, 10)), "JPEG")
    tf.io.gfile.makedirs(f"{root}/cat/nested")
    with tf.io.gfile.GFile(f"{root}/cat/nested/a.jpg", "wb") as handle:
        handle.write(original)

    found = list_class_folders(root)

    assert (found.classes, found.files, found.total_bytes) == (["cat"], ["cat/nested/a.jpg"], len(original))
    assert read_for_dataset(f"{root}/cat/nested/a.jpg", 64).jpeg == original


def test_listing_a_missing_root_raises():
    with pytest.raises(FileNotFoundError):
        list_class_folders("/nonexistent/dataset")

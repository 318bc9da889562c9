"""Raw image files as records: a folder, a glob or a list of files, each read as the converter would.

The raw-image input (prediction, and trying a class-per-folder set before converting it) lists
files like the converter, checks each with Pillow and wraps it in the converter's own
``tf.train.Example`` (``record_schema``), so ``input_fn.raw_input_fn`` feeds them into the same
preprocessing as the TFRecords.
"""

import glob
import os

from PIL import ExifTags

from library import image_files
from library.tensorflow_env import import_tensorflow
from project import record_schema

tf = import_tensorflow()

# Formats TensorFlow decodes as Pillow does; raw files in other formats are converted to JPEG.
PASS_THROUGH_FORMATS = ("JPEG", "PNG", "GIF")
# Label of a raw image whose class is unknown (prediction input).
UNKNOWN_LABEL = -1


def list_image_files(source, class_names=None):
    """(paths, labels) of ``source``: a class-per-folder tree (with class_names), a folder, a glob or a list.

    Paths that are not valid UTF-8 (TensorFlow cannot take them) are skipped with a warning, as the converter does.
    """
    if isinstance(source, (list, tuple)):
        paths = utf8_paths(source)
    elif not is_folder(source):
        paths = sorted(path for path in utf8_paths(matching(source)) if not tf.io.gfile.isdir(path))
    elif class_names is None:
        paths = files_below(source)
    else:
        return class_folder_files(source, class_names)
    return paths, [UNKNOWN_LABEL] * len(paths)


def is_folder(path) -> bool:
    """Whether ``path`` is a folder (a path that is not UTF-8 is none that TensorFlow could read)."""
    return image_files.is_utf8(path) and tf.io.gfile.isdir(path)


def matching(pattern) -> list:
    """The paths ``pattern`` matches: local ones by the OS, which keeps names that are not UTF-8 (``tf.io.gfile.glob``
    fails on the first one), others by ``tf.io.gfile``."""
    if "://" in pattern:
        return tf.io.gfile.glob(pattern)
    return glob.glob(pattern, include_hidden=True)


def utf8_paths(paths) -> list:
    """``paths`` without those that are not valid UTF-8, each skipped with a warning naming it."""
    for path in paths:
        if not image_files.is_utf8(path):
            tf.get_logger().warning("skipped %s: %s", image_files.printable(path), image_files.NOT_UTF8)
    return [path for path in paths if image_files.is_utf8(path)]


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
    return [os.path.join(folder, relative) for relative in listed_folders(folder, root_files=True).files]


def listed_folders(root, root_files=False):
    """The converter's listing of the folders below ``root`` (no hidden entries, no symlink loops), and of the files
    in ``root`` with ``root_files``; warns of skips."""
    found = image_files.list_class_folders(root, root_files)
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
        yield record_schema.make_example(record_schema.SourceImage(
            jpeg=encoded, height=height, width=width, label=label, class_name=class_name, filename=path))


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

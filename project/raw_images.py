"""Raw image files as records: a folder, a glob or a list of files, each read as the converter would.

The raw-image input (prediction, and trying a class-per-folder set before converting it) lists
files like the converter, checks each with Pillow and wraps it in the converter's own
``tf.train.Example`` (``record_schema``), so ``input_fn.raw_input_fn`` feeds them into the same
preprocessing as the TFRecords.
"""

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
    """(paths, labels) of ``source``: a class-per-folder tree (with class_names), a folder, a glob or a list."""
    if isinstance(source, (list, tuple)):
        paths = list(source)
    elif not tf.io.gfile.isdir(source):
        paths = sorted(path for path in tf.io.gfile.glob(source) if not tf.io.gfile.isdir(path))
    elif class_names is None:
        paths = files_below(source)
    else:
        return class_folder_files(source, class_names)
    return paths, [UNKNOWN_LABEL] * len(paths)


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
    top = [name.rstrip("/") for name in tf.io.gfile.listdir(folder) if not name.startswith(".")]
    top_files = [name for name in top if not tf.io.gfile.isdir(os.path.join(folder, name))]
    return sorted(os.path.join(folder, relative) for relative in top_files + listed_folders(folder).files)


def listed_folders(root):
    """The converter's listing of the folders below ``root`` (no hidden entries, no symlink loops); warns of skips."""
    found = image_files.list_class_folders(root)
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

"""The TFRecord schema shared by convert_dataset.py (writer) and the input pipeline (reader).

One ``tf.train.Example`` per image:

==========================  =======  =================================================
key                         type     meaning
==========================  =======  =================================================
``image/encoded``           bytes    baseline RGB JPEG
``image/format``            bytes    ``b"jpeg"``
``image/height``            int64    pixel rows of the stored JPEG
``image/width``             int64    pixel columns of the stored JPEG
``image/channels``          int64    always 3
``image/class/label``       int64    class id: line number (from 0) in labels.txt
``image/class/text``        bytes    class name, UTF-8
``image/filename``          bytes    path relative to the dataset folder, UTF-8
==========================  =======  =================================================
"""

ENCODED = "image/encoded"
FORMAT = "image/format"
HEIGHT = "image/height"
WIDTH = "image/width"
CHANNELS = "image/channels"
LABEL = "image/class/label"
CLASS_TEXT = "image/class/text"
FILENAME = "image/filename"

LABELS_FILENAME = "labels.txt"


def make_example(jpeg: bytes, height: int, width: int, label: int, class_name: str, filename: str):
    """A serialized ``tf.train.Example`` for one image."""
    import tensorflow as tf

    def int64(value):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    def text(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    features = {
        ENCODED: text(jpeg),
        FORMAT: text(b"jpeg"),
        HEIGHT: int64(height),
        WIDTH: int64(width),
        CHANNELS: int64(3),
        LABEL: int64(label),
        CLASS_TEXT: text(class_name.encode("utf-8")),
        FILENAME: text(filename.encode("utf-8")),
    }
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def feature_spec():
    """``tf.io.parse_single_example`` spec of the keys the input pipeline reads."""
    import tensorflow as tf

    return {
        ENCODED: tf.io.FixedLenFeature([], tf.string),
        LABEL: tf.io.FixedLenFeature([], tf.int64),
        FILENAME: tf.io.FixedLenFeature([], tf.string, default_value=""),
    }


def read_labels(path: str) -> list:
    """Class names from a labels.txt (label id = line number from 0).

    Raises ValueError naming the line of a name that cannot be a class (see
    ``image_files.check_class_names``) and of a blank line, which would shift the ids of every
    line after it; blank lines at the end are ignored. Only a newline ends a line (CRLF files
    are read too), so any other control character stays in its line and is refused.
    """
    import tensorflow as tf

    from library.image_files import check_class_names

    with tf.io.gfile.GFile(path, "rb") as handle:
        data = handle.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ValueError(f"{path}, line {line} is not UTF-8 text") from None
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    try:
        check_class_names(lines, lambda index: f"line {index + 1} {lines[index]!r}")
    except ValueError as error:
        raise ValueError(f"{path}, {error}") from None
    return lines

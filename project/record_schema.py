"""The TFRecord schema shared by convert_dataset.py (writer) and the input pipeline (reader).

One ``tf.train.Example`` per image, each field made from the :class:`SourceImage` the
converter (or the raw-image input) has in hand; :data:`FIELDS` is the one list of them, so
adding a field is one entry there plus the code that reads it (``input_fn``). The layout:

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

import dataclasses

from library.tensorflow_env import import_tensorflow

ENCODED = "image/encoded"
FORMAT = "image/format"
HEIGHT = "image/height"
WIDTH = "image/width"
CHANNELS = "image/channels"
LABEL = "image/class/label"
CLASS_TEXT = "image/class/text"
FILENAME = "image/filename"

LABELS_FILENAME = "labels.txt"


@dataclasses.dataclass(frozen=True, kw_only=True)
class SourceImage:
    """What is known of one image when its record is written."""

    jpeg: bytes  # baseline RGB JPEG
    height: int
    width: int
    label: int  # -1: unknown (prediction input)
    class_name: str
    filename: str  # relative to the dataset folder (a path for raw input)


# key -> (dtype, the value of a SourceImage): every field of a record, in the table's order.
FIELDS = {
    ENCODED: (bytes, lambda image: image.jpeg),
    FORMAT: (bytes, lambda image: b"jpeg"),
    HEIGHT: (int, lambda image: image.height),
    WIDTH: (int, lambda image: image.width),
    CHANNELS: (int, lambda image: 3),
    LABEL: (int, lambda image: image.label),
    CLASS_TEXT: (bytes, lambda image: image.class_name.encode("utf-8")),
    FILENAME: (bytes, lambda image: image.filename.encode("utf-8")),
}
# The fields the input pipeline parses: key -> (feature name, default where a record lacks it). The
# image becomes features["image"] and the label the labels; model_fn gets every other one as a feature.
READ = {
    ENCODED: ("image", None),
    LABEL: ("label", None),
    FILENAME: ("filename", b""),
}


def make_example(image: SourceImage) -> bytes:
    """A serialized ``tf.train.Example`` of ``image``, one feature per entry of :data:`FIELDS`."""
    tf = import_tensorflow()

    def feature(dtype, value):
        if dtype is int:
            return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
        if dtype is float:
            return tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    features = {key: feature(dtype, value_of(image)) for key, (dtype, value_of) in FIELDS.items()}
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def feature_spec() -> dict:
    """``tf.io.parse_example`` spec of the fields the input pipeline reads (:data:`READ`)."""
    tf = import_tensorflow()

    dtypes = {bytes: tf.string, int: tf.int64, float: tf.float32}
    return {key: tf.io.FixedLenFeature([], dtypes[FIELDS[key][0]], default_value=default)
            for key, (_, default) in READ.items()}


def other_features(examples: dict, training: bool) -> dict:
    """The parsed fields beside image and label, by feature name; in training only the numeric ones (no strings to
    stage on a GPU, where nothing in training reads the file name)."""
    return {name: examples[key] for key, (name, _) in READ.items()
            if key not in (ENCODED, LABEL) and not (training and FIELDS[key][0] is bytes)}


def read_labels(path: str) -> list:
    """Class names from a labels.txt (label id = line number from 0).

    Raises ValueError for a file that cannot be read, and naming the line of a name that cannot be a class (see
    ``image_files.check_class_names``) and of a blank line, which would shift the ids of every
    line after it; blank lines at the end are ignored. Only a newline ends a line (CRLF files
    are read too), so any other control character stays in its line and is refused.
    """
    tf = import_tensorflow()

    from library.data.image_files import check_class_names

    try:
        with tf.io.gfile.GFile(path, "rb") as handle:
            data = handle.read()
    except tf.errors.OpError as error:
        raise ValueError(f"cannot read {path}: {error.message}") from None
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

"""Atomic writes: readers see the old file or the complete new one, never a partial one.

Paths go through ``tf.io.gfile`` so model and output directories may live on any
filesystem TensorFlow supports (local, gs://, hdfs://).
"""

import os
import re
import uuid

_TEMPORARY_SUFFIX = r"\.tmp-[0-9a-f]{8}"


def temporary_name(path: str) -> str:
    """A unique sibling of ``path`` that no reader mistakes for the finished file."""
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}.tmp-{uuid.uuid4().hex[:8]}")


def temporary_pattern(final_name: str = ".+") -> re.Pattern:
    """The file names :func:`temporary_name` gives for final names matching the regular expression ``final_name``."""
    return re.compile(rf"\.(?:{final_name}){_TEMPORARY_SUFFIX}")


def write_bytes(path: str, data: bytes, temporary: str = None) -> None:
    """Write ``data`` to a temporary sibling, then rename it over ``path``; ``temporary`` names the sibling where
    :func:`temporary_name` would be taken for a finished file (e.g. by TensorBoard, which reads any "tfevents" name)."""
    import tensorflow as tf

    tf.io.gfile.makedirs(os.path.dirname(path) or ".")
    temporary = temporary or temporary_name(path)
    try:
        with tf.io.gfile.GFile(temporary, "wb") as handle:
            handle.write(data)
        tf.io.gfile.rename(temporary, path, overwrite=True)
    except BaseException:
        if tf.io.gfile.exists(temporary):
            tf.io.gfile.remove(temporary)
        raise


def write_text(path: str, text: str) -> None:
    """UTF-8 text version of :func:`write_bytes`."""
    write_bytes(path, text.encode("utf-8"))

"""Atomic writes: readers see the old file or the complete new one, never a partial one.

Paths go through ``tf.io.gfile`` so model and output directories may live on any
filesystem TensorFlow supports (local, gs://, hdfs://). A temporary name carries the pid of
the process writing it, so the temporaries a killed process left can be told from those
being written (:func:`remove_stale_temporaries`).
"""

import os
import re
import shutil
import uuid

from library.tensorflow_env import import_tensorflow

_TEMPORARY_SUFFIX = r"\.tmp-(?:\d+-)?[0-9a-f]{8}"  # names written before the pid was added have none
_WRITER = re.compile(r"\..+\.tmp-(\d+)-[0-9a-f]{8}")


def temporary_name(path: str) -> str:
    """A unique sibling of ``path`` that no reader mistakes for the finished file, naming this process."""
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def temporary_pattern(final_name: str = ".+") -> re.Pattern:
    """The file names :func:`temporary_name` gives for final names matching the regular expression ``final_name``."""
    return re.compile(rf"\.(?:{final_name}){_TEMPORARY_SUFFIX}")


def remove_stale_temporaries(directory: str, final_name: str = ".+") -> None:
    """Delete the temporaries (files or folders) of final names matching ``final_name`` in the local ``directory``
    whose writing process has ended: what a killed run left. Others' (alive, or of another user) are kept."""
    if "://" in directory or not os.path.isdir(directory):
        return
    pattern = temporary_pattern(final_name)
    for name in os.listdir(directory):
        writer = _WRITER.fullmatch(name)
        if writer and pattern.fullmatch(name) and not _is_running(int(writer[1])):
            path = os.path.join(directory, name)
            try:
                if os.path.isdir(path):
                    shutil.rmtree(path)
                else:
                    os.remove(path)
            except OSError:
                pass  # removed by another process meanwhile, or not ours to remove


def _is_running(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def write_bytes(path: str, data: bytes, temporary: str = None) -> None:
    """Write ``data`` to a temporary sibling, then rename it over ``path``; ``temporary`` names the sibling where
    :func:`temporary_name` would be taken for a finished file (e.g. by TensorBoard, which reads any "tfevents" name)."""
    tf = import_tensorflow()

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

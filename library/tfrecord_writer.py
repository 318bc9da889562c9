"""A set of TFRecord shards that appear only when complete, on any filesystem TensorFlow supports.

Shards are named ``<name>-00000-of-00008.tfrecord``. Each one is written under a hidden
temporary name (:func:`library.atomic_file.temporary_name`) and renamed when it is
complete, so a run killed at any moment leaves nothing that passes for a finished shard.
Once the whole new set is complete, what earlier runs left under the same name is removed:
shards of a set with another shard count, and temporaries of killed runs.

Each shard's :func:`records_digest` is computed as its records are written, so the set's
content is known without reading it back (the feature cache is keyed on it).
"""

import hashlib
import os
import re
import struct

from library import atomic_file
from library.tensorflow_env import import_tensorflow

MAX_SHARDS = 99999  # shard numbers have five digits


def shard_filename(name: str, index: int, count: int) -> str:
    """The file name of shard ``index`` of ``count``."""
    return f"{name}-{index:05d}-of-{count:05d}.tfrecord"


_SHARD_FILENAME = re.compile(r"(?P<name>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.tfrecord")


def parse_shard_filename(filename: str):
    """(set name, index, count) of a file name :func:`shard_filename` made; None for any other name."""
    match = _SHARD_FILENAME.fullmatch(filename)
    return (match["name"], int(match["index"]), int(match["count"])) if match else None


def records_digest(records) -> str:
    """The SHA-256 (hex) of ``records`` (bytes each), each preceded by its length as 8 bytes little-endian: the
    shard file's content without the TFRecord format's checksums, which are functions of it."""
    digest = hashlib.sha256()
    for record in records:
        _add_record(digest, record)
    return digest.hexdigest()


def _add_record(digest, record: bytes) -> None:
    """Feed one record, framed by its length, to the hash object ``digest``."""
    digest.update(struct.pack("<Q", len(record)))
    digest.update(record)


def remove_set(directory: str, name: str, keep=()) -> None:
    """Remove the shards of any set called ``name`` in ``directory`` and temporaries of killed runs, but ``keep``."""
    tf = import_tensorflow()
    earlier = _earlier_output_pattern(name)
    for entry in tf.io.gfile.listdir(directory):
        if earlier.fullmatch(entry) and entry not in keep:
            tf.io.gfile.remove(os.path.join(directory, entry))


def _earlier_output_pattern(name: str) -> re.Pattern:
    """Shard names of any set called ``name``, finished or as temporary_name makes them."""
    shard = rf"{re.escape(name)}-\d{{5}}-of-\d{{5}}\.tfrecord"
    return re.compile(rf"{shard}|{atomic_file.temporary_pattern(shard).pattern}")


class ShardedTFRecordWriter:
    """Writes records into shards 0 .. N-1, filled one after another; a context manager.

    Leaving the ``with`` block normally finishes every shard (empty ones too, so the set is
    always N files) and then removes earlier output; leaving it by an exception discards the
    shard being written and keeps the rest. ``paths``, ``records``, ``sizes`` (bytes) and
    ``digests`` (:func:`records_digest`) describe the shards.
    """

    def __init__(self, directory: str, name: str, num_shards: int):
        if not 1 <= num_shards <= MAX_SHARDS:
            raise ValueError(f"num_shards must be 1..{MAX_SHARDS}, got {num_shards}")
        self._tf = import_tensorflow()
        self.directory = directory
        self.name = name
        self.paths = [os.path.join(directory, shard_filename(name, i, num_shards)) for i in range(num_shards)]
        self.records = [0] * num_shards
        self.sizes = [0] * num_shards
        self.digests = [None] * num_shards
        self._open_index = -1
        self._writer = None
        self._temporary = None
        self._digest = None

    def __enter__(self):
        self._tf.io.gfile.makedirs(self.directory)
        self._start_next_shard()  # fails now, not after the first record, if the folder is unwritable
        return self

    def __exit__(self, exc_type, exc, traceback):
        if exc_type is None:
            self._close()
        else:
            self._discard_open_shard()

    def write(self, shard_index: int, record: bytes) -> None:
        """Append ``record`` to shard ``shard_index``; the shards before it are finished first."""
        if shard_index < self._open_index:
            raise ValueError(f"shard {shard_index} is already finished; shards are filled in order")
        while self._open_index < shard_index:
            self._start_next_shard()
        self._writer.write(record)
        _add_record(self._digest, record)
        self.records[shard_index] += 1

    def _start_next_shard(self) -> None:
        """Rename the open shard into place and open the next one under a temporary name."""
        self._finish_open_shard()
        self._open_index += 1
        self._temporary = atomic_file.temporary_name(self.paths[self._open_index])
        self._writer = self._tf.io.TFRecordWriter(self._temporary)
        self._digest = hashlib.sha256()

    def _finish_open_shard(self) -> None:
        """Complete the open shard's file, then give it its final name."""
        if self._writer is None:
            return
        self._writer.close()
        path = self.paths[self._open_index]
        self._tf.io.gfile.rename(self._temporary, path, overwrite=True)
        self.sizes[self._open_index] = self._tf.io.gfile.stat(path).length
        self.digests[self._open_index] = self._digest.hexdigest()
        self._writer = self._temporary = self._digest = None

    def _close(self) -> None:
        """Finish the remaining shards, then remove what earlier runs left under this name."""
        while self._open_index < len(self.paths) - 1:
            self._start_next_shard()
        self._finish_open_shard()
        remove_set(self.directory, self.name, keep={os.path.basename(path) for path in self.paths})

    def _discard_open_shard(self) -> None:
        """Remove the unfinished shard's temporary file."""
        if self._writer is None:
            return
        self._writer.close()
        if self._tf.io.gfile.exists(self._temporary):
            self._tf.io.gfile.remove(self._temporary)
        self._writer = self._temporary = None

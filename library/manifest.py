"""The converter's manifest: the account of one conversion, the image count an epoch is made of,
and the digest of each shard's content.

``convert_dataset.py`` writes ``<name>-manifest.json`` beside its shards, last, so a folder
without it holds an unfinished conversion. It lists every shard (``file``, ``images``,
``bytes``, ``records_sha256``) and ``total_images``; the run loop's epoch is ``total_images``
of the manifests whose shards are exactly the training files, so no record is read to count
them, and the feature cache is keyed on the shards' ``records_sha256``, computed while they
were written, so no byte is read to hash them.
"""

import fnmatch
import json
import os
from typing import Optional

from library import atomic_file
from library.tensorflow_env import import_tensorflow
from library.tfrecord_writer import records_digest

SUFFIX = "-manifest.json"


def path_of(directory: str, name: str) -> str:
    """Where the manifest of shard set ``name`` in ``directory`` lives."""
    return os.path.join(directory, name + SUFFIX)


def write(path: str, manifest: dict) -> None:
    """Write ``manifest`` atomically: it is the mark of a finished conversion."""
    atomic_file.write_text(path, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


def read(path: str) -> dict:
    """The manifest at ``path``."""
    with import_tensorflow().io.gfile.GFile(path) as handle:
        return json.load(handle)


def in_folder(directory: str):
    """(path, manifest) of every manifest in ``directory``."""
    for path in import_tensorflow().io.gfile.glob(os.path.join(directory, "*" + SUFFIX)):
        yield path, read(path)


def images_in(pattern: str, files: list) -> Optional[int]:
    """Images in ``files`` (those ``pattern`` matches) by the manifests beside them; None unless they cover every file."""
    directory = os.path.dirname(pattern)
    total, covered = 0, set()
    for _, manifest in in_folder(directory):
        shards = {os.path.join(directory, shard["file"]) for shard in manifest["shards"]}
        if shards and all(fnmatch.fnmatch(shard, pattern) for shard in shards):
            total += manifest["total_images"]
            covered |= shards
    return total if covered == set(files) else None


def records_digests(files: list) -> list:
    """``tfrecord_writer.records_digest`` of each TFRecord file of ``files``: the one its manifest recorded, while
    the file has the size recorded and is not newer than the manifest; else computed by reading the file."""
    recorded = _recorded_digests(files)
    reader = import_tensorflow().compat.v1.io.tf_record_iterator
    return [recorded.get(path) or records_digest(reader(path)) for path in files]


def _recorded_digests(files: list) -> dict:
    """{file: records_sha256} of the ``files`` a manifest beside them describes as they still are."""
    gfile = import_tensorflow().io.gfile
    wanted, recorded = set(files), {}
    for directory in sorted({os.path.dirname(path) for path in files}):
        for path, manifest in in_folder(directory):
            written = gfile.stat(path).mtime_nsec
            for shard in manifest["shards"]:
                file = os.path.join(directory, shard["file"])
                if file in wanted and shard.get("records_sha256"):
                    now = gfile.stat(file)
                    if now.length == shard["bytes"] and now.mtime_nsec <= written:
                        recorded[file] = shard["records_sha256"]
    return recorded

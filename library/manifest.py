"""The converter's manifest: the account of one conversion, and the image count an epoch is made of.

``convert_dataset.py`` writes ``<name>-manifest.json`` beside its shards, last, so a folder
without it holds an unfinished conversion. It lists every shard (``file``, ``images``,
``bytes``) and ``total_images``; the run loop's epoch is ``total_images`` of the manifests
whose shards are exactly the training files, so no record is read to count them.
"""

import fnmatch
import json
import os
from typing import Optional

from library import atomic_file
from library.tensorflow_env import import_tensorflow

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


def images_in(pattern: str, files: list) -> Optional[int]:
    """Images in ``files`` (those ``pattern`` matches) by the manifests beside them; None unless they cover every file."""
    gfile = import_tensorflow().io.gfile
    directory = os.path.dirname(pattern)
    total, covered = 0, set()
    for path in gfile.glob(os.path.join(directory, "*" + SUFFIX)):
        manifest = read(path)
        shards = {os.path.join(directory, shard["file"]) for shard in manifest["shards"]}
        if shards and all(fnmatch.fnmatch(shard, pattern) for shard in shards):
            total += manifest["total_images"]
            covered |= shards
    return total if covered == set(files) else None

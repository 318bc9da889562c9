"""Files computed once and reused while what they were computed from is unchanged (e.g. a frozen module's features).

A cached file is named by a hash of everything it depends on (:func:`key`): the settings
that shape it, the content of the TFRecord files it reads (:func:`records_signatures`) and the
names, sizes and modification times of other files, such as a module's (:func:`file_signatures`),
so a change of any gives a new name and nothing stale is read.
It is written under a temporary name and renamed when complete (:func:`ensure`), so an
interrupted computation leaves no file that could be taken for a finished one; the next
run computes it again. Old caches are not removed (delete the folder to reclaim the space).
"""

import hashlib
import json
import os

from library import atomic_file
from library.data import manifest
from library.tensorflow_env import import_tensorflow


def records_signatures(paths) -> list:
    """[name, digest of its records] of every TFRecord file in ``paths``, sorted: changes with any record, whatever
    the files' sizes and times. The digests are the converter's manifests' (no byte read) where they still
    describe the files, else computed by reading them (``manifest.records_digests``)."""
    files = sorted(paths)
    return [[_name(path), digest] for path, digest in zip(files, manifest.records_digests(files))]


def file_signatures(paths) -> list:
    """[name, bytes, mtime] of every file in ``paths`` (files, or folders walked), sorted: changes with any file's size
    or time. The time is ``tf.io.gfile.stat``'s ``mtime_nsec``, whole seconds on local disks (in nanoseconds)."""
    tf = import_tensorflow()

    found = []
    for path in paths:
        if tf.io.gfile.isdir(path):
            found += [os.path.join(folder, name) for folder, _, names in tf.io.gfile.walk(path) for name in names]
        else:
            found.append(path)
    signatures = []
    for path in sorted(found):
        stat = tf.io.gfile.stat(path)
        signatures.append([_name(path), stat.length, stat.mtime_nsec])
    return signatures


def _name(path: str) -> str:
    """A file's name in a signature: absolute on local disks, URLs as they are."""
    return path if "://" in path else os.path.abspath(path)


def key(description: dict) -> str:
    """A short hash of ``description`` (JSON-ready): the cache's name."""
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:20]


def ensure(path: str, compute) -> bool:
    """Make ``path`` by ``compute(temporary_path)`` unless it exists; True when it was computed now.

    ``compute`` writes the whole file at the temporary path it is given, which is renamed to
    ``path`` only once ``compute`` returns; a failure or interruption removes it.
    """
    tf = import_tensorflow()

    if tf.io.gfile.exists(path):
        return False
    tf.io.gfile.makedirs(os.path.dirname(path))
    atomic_file.remove_stale_temporaries(os.path.dirname(path))  # of computations a kill interrupted
    temporary = atomic_file.temporary_name(path)
    try:
        compute(temporary)
        tf.io.gfile.rename(temporary, path, overwrite=True)
    except BaseException:
        if tf.io.gfile.exists(temporary):
            tf.io.gfile.remove(temporary)
        raise
    return True

"""Guards of a model_dir: one training run at a time, and only models of the kind it was trained for.

- ``training.lock``: an advisory lock (``fcntl.flock``) held by the training run writing the
  directory, with the holder's pid and host in the file for the message another run gets.
  The kernel releases it however its holder ends, so a run killed with SIGKILL blocks no one;
  the pid and host it leaves behind are taken over with a warning. Reading modes (evaluate,
  predict, export) do not take it. Directories on object stores (``gs://``) are not locked.
- ``trained_for.json``: what the experiment says identifies its model (e.g. class names,
  feature extractor, input size), written when training starts. Restoring a checkpoint into
  a model built for something else either fails deep in TensorFlow or, worse, predicts
  confidently wrong answers; every mode compares the record with the configuration first.
- ``checkpoint``: TensorFlow's state file naming the latest checkpoint (and those kept), written
  here alone (:func:`write_state`) for the recalibrated checkpoints of a model_dir and the best
  snapshot's folder; :func:`checkpoint_files` names the files of one checkpoint.
"""

import contextlib
import fcntl
import json
import os
import re
import reprlib
import socket
import sys

from library import atomic_file
from library.configuration.config import ConfigError
from library.tensorflow_env import import_tensorflow

LOCK_FILE = "training.lock"
RECORD_FILE = "trained_for.json"
STATE_FILE = "checkpoint"


@contextlib.contextmanager
def training_lock(model_dir: str):
    """Hold the training lock of ``model_dir`` (created if need be) for the ``with`` block.

    Raises ConfigError naming the holder (pid, host) when another run holds it.
    """
    if "://" in model_dir:
        yield
        return
    os.makedirs(model_dir, exist_ok=True)
    path = os.path.join(model_dir, LOCK_FILE)
    with open(path, "a+", encoding="utf-8") as handle:  # "a+" keeps the holder's pid and host readable
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"model_dir {model_dir} is being trained by {_holder(handle)} (lock file {path}); "
                              "wait for that run to end or stop it, or use another model_dir") from None
        previous = _holder(handle)
        if previous:
            print(f"warning: model_dir {model_dir}: the training run of {previous} ended without releasing its lock; "
                  "taking it over", file=sys.stderr)
        _rewrite(handle, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
        try:
            yield
        finally:
            _rewrite(handle, "")  # closing the file releases the lock


def _holder(handle) -> str:
    """``pid N on host H`` as the lock file names them; empty when it names no one."""
    handle.seek(0)
    try:
        holder = json.loads(handle.read() or "null")
    except json.JSONDecodeError:
        return "an unknown process"
    return f"pid {holder['pid']} on host {holder['host']}" if isinstance(holder, dict) else ""


def _rewrite(handle, text: str) -> None:
    """Replace the lock file's content in place (the lock belongs to this open file, so no rename)."""
    handle.seek(0)
    handle.truncate()
    handle.write(text)
    handle.flush()


def check_record(directory: str, identity: dict) -> None:
    """Raise ConfigError when ``directory`` records that its model was trained for something ``identity`` is not.

    A directory without a record (new, or trained before records were kept) passes, and so does
    a key only one side has.
    """
    tf = import_tensorflow()
    path = os.path.join(directory, RECORD_FILE)
    if not tf.io.gfile.exists(path):
        return
    try:
        with tf.io.gfile.GFile(path) as handle:
            recorded = json.load(handle)
    except (ValueError, tf.errors.OpError) as error:
        raise ConfigError(f"{path}: unreadable ({error}); it records what the model in {directory} was trained "
                          "for: restore it, or use a new model_dir") from None
    current = json.loads(json.dumps(identity))  # as it would be recorded: tuples become lists
    for key in sorted(recorded.keys() & current.keys()):
        if recorded[key] != current[key]:
            raise ConfigError(
                f"{directory} holds a model trained for {key} {_describe(recorded[key])}, but this configuration has "
                f"{_describe(current[key])}; use a new model_dir for a new model (or the configuration it was trained with)"
            )


def write_record(model_dir: str, identity: dict) -> None:
    """Record (atomically) what the model in ``model_dir`` is trained for."""
    atomic_file.write_text(os.path.join(model_dir, RECORD_FILE), json.dumps(identity, indent=2, ensure_ascii=False) + "\n")


def _describe(value) -> str:
    """A value for a one-line message: lists with their length, long ones cut short."""
    shortened = reprlib.Repr()
    shortened.maxlist = 8
    shortened.maxstring = 60
    text = shortened.repr(value)
    return f"{text} ({len(value)} entries)" if isinstance(value, list) else text


def checkpoint_files(checkpoint_path: str) -> list[str]:
    """Data shards and index of exactly this checkpoint (``-10`` never takes ``-100``'s files)."""
    gfile = import_tensorflow().io.gfile
    directory, prefix = os.path.split(checkpoint_path)
    index = checkpoint_path + ".index"
    if not gfile.exists(index):
        raise FileNotFoundError(
            f"Checkpoint {checkpoint_path} not found: {index} is missing "
            "(already deleted by keep_checkpoint_max, or not a V2-format checkpoint?)."
        )
    shard_name = re.compile(re.escape(prefix) + r"\.data-(\d+)-of-(\d+)")
    shards, counts = {}, set()
    for name in gfile.listdir(directory or os.curdir):
        match = shard_name.fullmatch(name)
        if match:
            shards[int(match[1])] = os.path.join(directory, name)
            counts.add(int(match[2]))
    if len(counts) != 1 or sorted(shards) != list(range(counts.pop())):
        raise FileNotFoundError(
            f"Checkpoint {checkpoint_path} is incomplete: its data shards are "
            f"{sorted(os.path.basename(path) for path in shards.values()) or 'missing'}."
        )
    return [shards[number] for number in sorted(shards)] + [index]


def write_state(directory: str, latest: str, listed_paths: list) -> None:
    """Point the ``checkpoint`` state file of ``directory`` at ``latest`` (one atomic write), listing ``listed_paths``
    (oldest first) and ``latest`` last. Names are written relative to the directory, as Estimator writes them
    (with ``os.curdir`` as the directory, TensorFlow keeps them as they are), so a moved model_dir still works."""
    names = [os.path.basename(path) for path in listed_paths if path != latest] + [os.path.basename(latest)]
    proto = import_tensorflow().compat.v1.train.generate_checkpoint_state_proto(os.curdir, names[-1],
                                                                                all_model_checkpoint_paths=names)
    atomic_file.write_text(os.path.join(directory, STATE_FILE), str(proto))

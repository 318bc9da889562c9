"""The checkpoint a run restores: found, checked against the model it is restored into, and held while it is read.

- **Held.** The reading modes (evaluate, predict, export, export_hub) take no lock, and a training
  run in the same model_dir deletes checkpoints at any moment: the previous recalibrated one at each
  evaluation, the oldest beyond ``keep_checkpoint_max``, a best snapshot a better one replaced. So a
  reading mode restores not from the files ``--model`` names but from links to them (copies where
  links cannot be made) in a private folder (:func:`held`): once linked, a file stays whole whatever
  the training run deletes. When the checkpoint named goes away between reading the state file and
  linking its files, the state file is read again and its new latest is held.
- **Checked.** Before anything is restored, a checkpoint is compared with the record of what its
  model is for (``model_directory.RECORD_FILE``, beside it) and with the shapes the experiment says
  some of its variables must have (e.g. the head's kernel, one column per class): a checkpoint of
  other classes is refused in one line naming both.
- **Readable.** A resumed training run starts from the newest checkpoint of model_dir that reads
  whole (:func:`resume_from_readable`): a damaged or missing one is skipped with a warning naming it,
  and the state file is rewritten to name only those that remain.
"""

import contextlib
import dataclasses
import os
import shutil
import sys
import tempfile

from library import atomic_file, model_directory
from library.configuration.config import ConfigError
from library.tensorflow_env import first_line, import_tensorflow

tf = import_tensorflow()
LATEST, BEST = "latest", "best"
HELD_FOLDER = "held-checkpoint"  # the private folders' name in the temporary directory, before atomic_file's suffix
READ_ATTEMPTS = 20  # times the state file may move on while a checkpoint is being held before giving up


@dataclasses.dataclass(frozen=True)
class Held:
    """A checkpoint held for reading: ``name`` as found, ``path`` its held files' prefix in the private ``folder``,
    where a reading mode may also keep scratch output (all of it removed after)."""

    name: str
    path: str
    folder: str


@contextlib.contextmanager
def held(settings, identity: dict, shapes: dict):
    """The checkpoint ``settings.model`` names (latest, best or a path), held for the ``with`` block once it is known
    to be of a model trained for ``identity`` with variables of ``shapes`` (see :func:`check`); ConfigError if not."""
    tempdir = tempfile.gettempdir()
    atomic_file.remove_stale_temporaries(tempdir, HELD_FOLDER)  # of reading runs that were killed
    folder = atomic_file.temporary_name(os.path.join(tempdir, HELD_FOLDER))
    os.makedirs(folder)
    try:
        checkpoint = _hold(settings, folder)
        check(checkpoint, identity, shapes, record_directories(settings, checkpoint.name))
        yield checkpoint
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _hold(settings, folder: str) -> Held:
    """The checkpoint ``settings.model`` names, its files linked into ``folder``."""
    if settings.model not in (LATEST, BEST):
        path = _linked(settings.model, folder)
        if path is None:
            raise ConfigError(f"model: no checkpoint at {settings.model} (expected {settings.model}.index); "
                              "give latest, best or a checkpoint path")
        return Held(settings.model, path, folder)
    directory = settings.model_dir if settings.model == LATEST else settings.best_model_dir
    for _ in range(READ_ATTEMPTS):
        candidates = listed(directory)
        for candidate in candidates:
            path = _linked(candidate, folder)
            if path is not None:
                if candidate != candidates[0]:
                    print(f"warning: model: {settings.model}: {candidates[0]} is missing; using {candidate}",
                          file=sys.stderr, flush=True)
                return Held(candidate, path, folder)
            if listed(directory) != candidates:
                break  # a training run moved on: hold its new latest
        else:
            raise ConfigError(f"model: {settings.model}: no checkpoint in {directory}; train first or set --model to a "
                              "checkpoint path")
    raise ConfigError(f"model: {settings.model}: the checkpoints in {directory} changed {READ_ATTEMPTS} times while "
                      "being read; run again")


def listed(directory: str) -> list:
    """The checkpoints the state file of ``directory`` names, newest first (its latest, then the others); the
    files may be gone."""
    state = tf.train.get_checkpoint_state(directory)
    if state is None:
        return []
    return list(dict.fromkeys([state.model_checkpoint_path, *reversed(state.all_model_checkpoint_paths)]))


def _linked(checkpoint: str, folder: str):
    """The prefix of ``checkpoint``'s files linked (or copied) into ``folder``; None when a file is missing."""
    for name in os.listdir(folder):  # of a checkpoint that vanished half-linked
        os.remove(os.path.join(folder, name))
    try:
        for source in model_directory.checkpoint_files(checkpoint):
            _link_or_copy(source, os.path.join(folder, os.path.basename(source)))
    except (FileNotFoundError, tf.errors.NotFoundError):
        return None
    return os.path.join(folder, os.path.basename(checkpoint))


def _link_or_copy(source: str, target: str) -> None:
    """A hard link of the local file ``source`` at ``target``, else (another filesystem, an object store) a copy."""
    if "://" not in source:
        try:
            os.link(source, target)
            return
        except FileNotFoundError:
            raise
        except OSError:  # another filesystem, or one without hard links
            pass
    tf.io.gfile.copy(source, target, overwrite=True)


def record_directories(settings, checkpoint: str) -> list:
    """Where the record of ``checkpoint``'s model may be: beside it, and for ``latest`` and ``best`` (directories
    of this configuration, possibly of a run from before the best snapshot carried its record) also in model_dir."""
    directories = [os.path.dirname(checkpoint)]
    return directories + ([settings.model_dir] if settings.model in (LATEST, BEST) else [])


def check(checkpoint: Held, identity: dict, shapes: dict, directories: list) -> None:
    """ConfigError unless ``checkpoint`` is of a model trained for ``identity`` (by the first record found in
    ``directories``) whose variables have ``shapes`` ({name: (shape, what its axes are)})."""
    found = [directory for directory in directories
             if tf.io.gfile.exists(os.path.join(directory, model_directory.RECORD_FILE))]
    if found:
        model_directory.check_record(found[0], identity)
    else:
        print(f"warning: model: no {model_directory.RECORD_FILE} beside {checkpoint.name}, so what it was trained for "
              f"is unknown: only its variables' shapes are checked; copy the {model_directory.RECORD_FILE} of its "
              "model_dir beside it", file=sys.stderr, flush=True)
    check_shapes(checkpoint.path, shapes, checkpoint.name)


def check_shapes(path: str, shapes: dict, name: str) -> None:
    """ConfigError unless the checkpoint at ``path`` (called ``name``) holds every variable of ``shapes`` ({variable:
    (shape, what its axes are)}) with that shape."""
    found = tf.train.load_checkpoint(path).get_variable_to_shape_map() if shapes else {}
    for variable, (shape, axes) in sorted(shapes.items()):
        if variable not in found:
            raise ConfigError(f"{name} holds no variable {variable}: it is not a checkpoint of this model; "
                              "give one trained with this configuration")
        if list(found[variable]) != list(shape):
            raise ConfigError(f"{name} holds {variable} of shape {list(found[variable])} ({axes}), but this "
                              f"configuration needs {list(shape)}: it is a checkpoint of another model; give one "
                              "trained with this configuration (or the configuration it was trained with)")


def resume_from_readable(model_dir: str, shapes: dict) -> None:
    """Make the newest checkpoint of ``model_dir`` that reads whole its latest, and check its variables' ``shapes``:
    each damaged or missing one before it is skipped with a warning and left out of the state file."""
    candidates = listed(model_dir)
    for index, candidate in enumerate(candidates):
        problem = unreadable(candidate)
        if problem is None:
            if index:
                state = tf.train.get_checkpoint_state(model_dir)
                model_directory.write_state(model_dir, candidate, [path for path in state.all_model_checkpoint_paths
                                                                   if path not in candidates[:index]])
            check_shapes(candidate, shapes, candidate)
            return
        print(f"warning: {candidate} cannot be read ({problem}); resuming from the checkpoint before it "
              "(its files are left as they are)", file=sys.stderr, flush=True)
    if candidates:
        raise ConfigError(f"model_dir {model_dir}: none of its checkpoints can be read; restore them or use a new "
                          "model_dir")


def unreadable(checkpoint: str):
    """Why ``checkpoint`` cannot be restored (a missing file, a checksum that does not match), None if it can:
    every variable is read, which verifies its checksum."""
    try:
        model_directory.checkpoint_files(checkpoint)
        reader = tf.train.load_checkpoint(checkpoint)
        for variable in reader.get_variable_to_shape_map():
            reader.get_tensor(variable)
    except FileNotFoundError as error:
        return str(error)
    except tf.errors.OpError as error:
        return first_line(error)
    return None



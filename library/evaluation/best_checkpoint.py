"""Keep a copy of the checkpoint with the lowest validation loss in ``best_model_dir``.

After each evaluation the run loop calls :meth:`BestCheckpoint.update_if_better` with the
checkpoint it evaluated. When that checkpoint's loss beats the best one recorded, exactly
its files are copied, so ``tf.train.latest_checkpoint(best_model_dir)`` restores the best
parameters even after ``keep_checkpoint_max`` has deleted the original. The caller must
make the call before training on (and so before the source can be rotated away).

Layout of ``best_model_dir``::

    checkpoint                            state file naming the snapshot: the commit point
    model.ckpt-1200.index                 copy of the evaluated checkpoint's index
    model.ckpt-1200.data-00000-of-00001   ... and of each of its data shards
    model.ckpt-1200.json                  record: step, epoch, loss, metrics, time, source
    trained_for.json                      what the model is for (library/model_directory.py; the run loop's)

The best loss is read back from the record on disk, never kept only in memory, so a
resumed run does not overwrite a better snapshot with a worse one. A NaN or infinite loss
is never an improvement.

Crash safety: the new snapshot's files and record are written under temporary names and
renamed into place beside the old snapshot, under their own step-specific names; then the
``checkpoint`` state file is replaced by one atomic rename. That rename is the commit
point: the snapshot, and the record, that count are the ones the state file names, so a
crash before it leaves the previous best complete and one after it the new best. The files
of every other snapshot (the replaced best, or an unfinished copy of a crashed update) and
leftover temporaries are deleted after the commit and again before the next copy.
``best_model_dir`` therefore belongs to this class: files named like snapshot files
(``*.index``, ``*.data-*-of-*``, ``*.json``) that are not the current snapshot's are
deleted (but for ``trained_for.json``); sub-directories (e.g. ``export/``) are never touched. One process at a time may
update a ``best_model_dir``.

Exporting the best model (e.g. a SavedModel under ``best_model_dir/export/<timestamp>/``)
is the caller's: pass ``on_new_best``, called with the new snapshot's checkpoint path after
each commit. Everything goes through ``tf.io.gfile``, so ``best_model_dir`` may be on any
filesystem TensorFlow supports; on object stores (gs://) a rename is a copy, but replacing
the one small state object is still all-or-nothing.
"""

import datetime
import json
import math
import os
import re
import uuid
from typing import Callable, Optional

from library import atomic_file
from library.model_directory import RECORD_FILE, STATE_FILE, checkpoint_files, write_state
from library.tensorflow_env import import_tensorflow

RECORD_SUFFIX = ".json"
_TEMPORARY_FILE = atomic_file.temporary_pattern()
# Evaluation results that have fields of their own in the record rather than under "metrics".
_OWN_FIELDS = ("loss", "global_step")
_SNAPSHOT_FILE = re.compile(r"(?P<prefix>.+)\.(index|json|data-\d+-of-\d+)")


class BestCheckpoint:
    """The lowest-validation-loss checkpoint so far, kept as a copy in ``best_model_dir``."""

    def __init__(self, best_model_dir: str, on_new_best: Optional[Callable[[str], None]] = None):
        self.best_model_dir = best_model_dir
        self._on_new_best = on_new_best

    @property
    def checkpoint_path(self) -> Optional[str]:
        """The committed snapshot's prefix, as ``Saver.restore`` takes it; None before the first."""
        name = self._committed_name()
        return None if name is None else self._path(name)

    @property
    def record(self) -> Optional[dict]:
        """The committed snapshot's record, read from disk so it survives restarts; None if none."""
        name = self._committed_name()
        return None if name is None else self._read_record(name)

    @property
    def best_loss(self) -> Optional[float]:
        """The loss to beat; None until a first snapshot is taken."""
        record = self.record
        return None if record is None else record["loss"]

    def update_if_better(self, checkpoint_path: str, eval_results: dict, epoch: float, phase: Optional[str] = None) -> bool:
        """Snapshot ``checkpoint_path`` if its evaluation loss beats the best; True if it did. ``phase``: the training
        phase whose ``epoch`` it is, for a run in phases."""
        loss = float(eval_results["loss"])
        if not is_improvement(loss, self.best_loss):
            return False
        sources = checkpoint_files(checkpoint_path)
        import_tensorflow().io.gfile.makedirs(self.best_model_dir)
        previous = self._committed_name()
        self._remove_files_except(previous)
        source_name = os.path.basename(checkpoint_path)
        name = _snapshot_name(source_name, previous)
        for source in sources:
            self._copy_into_place(source, name + os.path.basename(source)[len(source_name):])
        record = snapshot_record(checkpoint_path, eval_results, epoch, phase)
        record_path = self._path(name + RECORD_SUFFIX)
        atomic_file.write_text(record_path, json.dumps(record, indent=2) + "\n")
        self._commit(name)
        self._remove_files_except(name)
        if self._on_new_best is not None:
            self._on_new_best(self._path(name))
        return True

    def _path(self, name: str) -> str:
        """Where file ``name`` lives in ``best_model_dir``."""
        return os.path.join(self.best_model_dir, name)

    def _committed_name(self) -> Optional[str]:
        """Name of the snapshot the state file points at: the only one that counts."""
        state = import_tensorflow().train.get_checkpoint_state(self.best_model_dir)
        return None if state is None else os.path.basename(state.model_checkpoint_path)

    def _read_record(self, name: str) -> dict:
        """Record of snapshot ``name``; without it this is no snapshot directory of ours."""
        gfile = import_tensorflow().io.gfile
        path = self._path(name + RECORD_SUFFIX)
        if not gfile.exists(path):
            raise FileNotFoundError(
                f"{self.best_model_dir} has a '{STATE_FILE}' file but no record {path}, so it is "
                "not a best-snapshot directory (is best_model_dir the same as model_dir?)."
            )
        with gfile.GFile(path, "r") as handle:
            return json.load(handle)

    def _copy_into_place(self, source: str, name: str) -> None:
        """Copy to a temporary name, then rename, so a file called ``name`` is always complete."""
        gfile = import_tensorflow().io.gfile
        target = self._path(name)
        temporary = atomic_file.temporary_name(target)
        gfile.copy(source, temporary, overwrite=True)
        gfile.rename(temporary, target, overwrite=True)

    def _commit(self, name: str) -> None:
        """Atomically point the state file at snapshot ``name``: the step that makes it the best."""
        write_state(self.best_model_dir, name, [name])

    def _remove_files_except(self, keep: Optional[str]) -> None:
        """Delete temporaries and all snapshot files but ``keep``'s: old bests, crashed copies."""
        gfile = import_tensorflow().io.gfile
        for name in gfile.listdir(self.best_model_dir):
            snapshot_file = _SNAPSHOT_FILE.fullmatch(name)
            stale = snapshot_file is not None and snapshot_file["prefix"] != keep and name != RECORD_FILE
            if stale or _TEMPORARY_FILE.fullmatch(name):
                gfile.remove(self._path(name))


def is_improvement(loss: float, best_loss: Optional[float]) -> bool:
    """Whether ``loss`` should replace the best; a NaN or infinite loss never does."""
    return math.isfinite(loss) and (best_loss is None or loss < best_loss)




def snapshot_record(checkpoint_path: str, eval_results: dict, epoch: float, phase: Optional[str] = None) -> dict:
    """The JSON record of a snapshot, with numpy values turned into plain JSON numbers."""
    metrics = {key: json_ready(value) for key, value in eval_results.items() if key not in _OWN_FIELDS}
    return {
        **({"phase": phase} if phase else {}),
        "step": int(eval_results["global_step"]),
        "epoch": float(epoch),
        "loss": float(eval_results["loss"]),
        "metrics": metrics,
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source_checkpoint": checkpoint_path,
    }


def json_ready(value):
    """A numpy scalar or array as the Python number or list that ``json`` can write."""
    return value.tolist() if hasattr(value, "tolist") else value


def _snapshot_name(source_name: str, committed_name: Optional[str]) -> str:
    """The source's own name, or a fresh variant if the committed best has it (a restarted run)."""
    if source_name != committed_name:
        return source_name
    return f"{source_name}.{uuid.uuid4().hex[:8]}"

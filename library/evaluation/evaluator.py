"""What an evaluation of a checkpoint gives: its results as plain numbers and its report, the one line a person
scans, and the log of every evaluation of a run (model_dir/evaluations.jsonl).

When the model_fn's evaluation metrics include a ``confusion_matrix`` (and optionally the
``mistakes/*`` of ``library/evaluation/report.py``), every evaluation also gets a report,
its classes named by ``params["class_names"]``: in TensorBoard's eval run, as
``model_dir/evaluation-<step>.json`` in training, printed (and in ``report_file``) by
``evaluate``. Only scalar results go into evaluations.jsonl and the best-snapshot record.
"""

import json
import os
from typing import Optional

from library import atomic_file
from library.evaluation import report as evaluation_report
from library.evaluation.best_checkpoint import json_ready
from library.tensorflow_env import import_tensorflow

tf = import_tensorflow()
ModeKeys = tf.estimator.ModeKeys
EVALUATIONS_FILE = "evaluations.jsonl"


class EvaluationLog:
    """Every evaluation of a run, one JSON line each, so a resumed run knows what was evaluated and since when the
    loss has not improved; the entries of a run in phases name their phase, and each phase reads its own."""

    def __init__(self, model_dir: str, phase: Optional[str] = None):
        self._path = os.path.join(model_dir, EVALUATIONS_FILE)
        self._phase = phase
        self.entries = []
        if tf.io.gfile.exists(self._path):
            with tf.io.gfile.GFile(self._path) as handle:
                self.entries = [json.loads(line) for line in handle if line.strip()]

    def _own(self) -> list:
        return [entry for entry in self.entries if entry.get("phase") == self._phase]

    @property
    def last_step(self):
        own = self._own()
        return own[-1]["global_step"] if own else None

    def evaluations_without_improvement(self) -> int:
        """This phase's evaluations since its last new best (an entry that does not say counts as one)."""
        count = 0
        for entry in reversed(self._own()):
            if entry.get("new_best", True):
                break
            count += 1
        return count

    def append(self, entry: dict) -> None:
        self.entries.append({"phase": self._phase, **entry} if self._phase else entry)
        atomic_file.write_text(self._path, "".join(json.dumps(e) + "\n" for e in self.entries))


def plain(results: dict) -> dict:
    """Evaluation results as JSON-ready Python numbers."""
    return {key: json_ready(value) for key, value in results.items()}


def evaluate_checkpoint(run, estimator, checkpoint, write_summaries=evaluation_report.write_summaries) -> tuple:
    """Evaluate ``checkpoint`` on the evaluation data with ``Estimator.evaluate`` (``run``: a run_loop ``Run``): see
    :func:`evaluation_results`."""
    results = estimator.evaluate(run.input_fn(ModeKeys.EVAL), checkpoint_path=checkpoint)
    return evaluation_results(estimator, run.params, results, write_summaries)


def evaluation_results(estimator, params, results: dict, write_summaries=evaluation_report.write_summaries) -> tuple:
    """(scalar results as plain numbers, the evaluation report or None); the report also goes to TensorBoard
    through ``write_summaries(eval_dir, report, arrays)``."""
    scalars, arrays = evaluation_report.split(results)
    scalars = plain(scalars)
    report = evaluation_report.build(arrays, params.get("class_names"), scalars["global_step"])
    if report is not None:
        write_summaries(estimator.eval_dir(), report, arrays)
    return scalars, report


def evaluation_summary(results: dict, epoch: float, epochs: int, record, improved: bool, phase=None) -> str:
    """One line a person can scan: where training is (in which phase), how it did, the best so far."""
    line = f"{epoch_label(phase, epoch)}/{epochs}  step {results['global_step']}  eval loss {results['loss']:.4f}"
    if "accuracy" in results:
        line += f"  accuracy {results['accuracy']:.2%}"
    if record:
        line += f"  best loss {record['loss']:.4f} ({epoch_label(record.get('phase'), record['epoch'])})"
    return line + ("  * new best" if improved else "")


def epoch_label(phase: Optional[str], epoch: float) -> str:
    """``epoch 3``, or ``head epoch 3`` in a phase: epochs count within their phase."""
    return f"{phase + ' ' if phase else ''}epoch {epoch:g}"

"""Every training run as one row of TensorBoard's HParams dashboard: its configuration and its best evaluation.

``tensorboard --logdir out/`` then lists every run below ``out/`` (every set, every
``model_dir``) in one table, sortable and filterable by any column, with the parallel
coordinates and scatter views. A row is the run ``<model_dir>/hparams`` (TensorBoard's
"session"), whose one events file holds, in the HParams plugin's own summaries
(``tensorboard.plugins.hparams.summary``):

- the session start: the run's configuration as ``config.yaml`` records it, one
  hyperparameter per option (options whose value is null are left out: empty cells);
- the scalars ``best/<name>`` of the best snapshot's evaluation (its loss, every scalar
  metric, its epoch) at the snapshot's step: the metric columns;
- the session end (status success) once the run has trained all its epochs.

Without a browser, ``python -m library.hparams_summary out/`` prints the same table, as the
plugin computes it: one row per run, best first.

The file is replaced as a whole (written under a name TensorBoard does not read, then
renamed; older ones removed) when training starts and after each evaluation, so a run
resumed or stopped leaves its row up to date, and a run never has two rows. A
TensorBoard that is already running shows new best values at once, a changed
configuration or status after a restart (it keeps the first hyperparameters it read
for a run).
"""

import dataclasses
import io
import logging
import os
import socket
import sys
import time
from typing import Optional

from google.protobuf import json_format

from library import atomic_file
from library.command_line import OneLineParser
from library.tensorflow_env import import_tensorflow, use_graph_mode

tf = import_tensorflow()
v1 = tf.compat.v1
# TensorBoard's modules import TensorFlow: after its quiet import.
from tensorboard import context  # noqa: E402
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer  # noqa: E402
from tensorboard.plugins import base_plugin  # noqa: E402
from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups  # noqa: E402
from tensorboard.plugins.hparams import summary as hparams  # noqa: E402
from tensorboard.summary.writer.record_writer import RecordWriter  # noqa: E402

SESSION_DIR = "hparams"  # below model_dir: the run TensorBoard lists as this training run's row
METRIC_PREFIX = "best/"
EVENTS_MARK = "tfevents"  # what makes TensorBoard read a file as events


class SessionRow:
    """The HParams row of one training run: its model_dir, configuration and start time."""

    def __init__(self, model_dir: str, values: dict):
        """``values``: option name -> value, as config.yaml records them."""
        self.directory = os.path.join(model_dir, SESSION_DIR)
        self.values = values
        self.started = time.time()

    def write(self, best: Optional[dict], finished: bool) -> str:
        """Replace the row with the configuration, the ``best`` snapshot's record (best_checkpoint.snapshot_record,
        None before the first evaluation) and, when ``finished``, the end; returns the events file written."""
        now = time.time()
        summaries = [(0, hparams.session_start_pb(hparameters(self.values), start_time_secs=self.started))]
        if best is not None:
            summaries.append((best["step"], metrics_summary(best)))
        if finished:
            summaries.append((best["step"] if best else 0, hparams.session_end_pb(api_pb2.STATUS_SUCCESS, now)))
        events = [v1.Event(wall_time=now, file_version="brain.Event:2")]
        events += [v1.Event(wall_time=now, step=step, summary=summary) for step, summary in summaries]
        return self._replace_file(events, now)

    def _replace_file(self, events: list, now: float) -> str:
        """Write ``events`` as the directory's newest events file, then remove the older ones: TensorBoard reads one
        complete file, never a half-written one (the temporary name lacks EVENTS_MARK)."""
        records = io.BytesIO()
        writer = RecordWriter(records)
        for event in events:
            writer.write(event.SerializeToString())
        # Names sort by time (nanoseconds, fixed width), so a running TensorBoard moves on to the newest.
        name = f"events.out.{EVENTS_MARK}.{int(now * 1e9):020d}.{socket.gethostname()}.hparams"
        path = os.path.join(self.directory, name)
        atomic_file.write_bytes(path, records.getvalue(), temporary=atomic_file.temporary_name(
            os.path.join(self.directory, "events")))
        for other in tf.io.gfile.listdir(self.directory):
            if EVENTS_MARK in other and other < name:  # a later one is another process's newer row (a cluster's)
                tf.io.gfile.remove(os.path.join(self.directory, other))
        return path


def hparameters(values: dict) -> dict:
    """The configuration as HParams hyperparameters: bools, numbers and strings; null values left out."""
    return {name: value for name, value in sorted(values.items()) if value is not None}


def metrics_summary(best: dict) -> v1.Summary:
    """The best snapshot's loss, scalar metrics and epoch as ``best/<name>`` scalars."""
    scalars = {"loss": best["loss"], **best["metrics"], "epoch": best["epoch"]}
    return v1.Summary(value=[v1.Summary.Value(tag=METRIC_PREFIX + name, simple_value=float(value))
                             for name, value in scalars.items()])


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of the HParams dashboard: the session (its run), its status and its hyperparameters and metrics."""

    run: str
    status: str
    hparams: dict
    metrics: dict


def dashboard_rows(logdir: str, sort_by: str = METRIC_PREFIX + "accuracy") -> list:
    """The rows TensorBoard's HParams dashboard shows for ``logdir``, computed by its own plugin from the event files
    (the multiplexer and ListSessionGroups), the highest ``sort_by`` metric first (rows without it last)."""
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(logdir)
    multiplexer.Reload()
    plugin_context = backend_context.Context(base_plugin.TBContext(
        logdir=logdir, multiplexer=multiplexer, data_provider=data_provider.MultiplexerDataProvider(multiplexer, logdir)))
    request = api_pb2.ListSessionGroupsRequest(
        allowed_statuses=api_pb2.Status.values(), start_index=0, slice_size=2**31 - 1,
        col_params=[api_pb2.ColParams(metric=api_pb2.MetricName(tag=sort_by), order=api_pb2.ORDER_DESC)])
    response = list_session_groups.Handler(context.RequestContext(), plugin_context, "", request).run()
    return [Row(session.name, api_pb2.Status.Name(session.status),
                {name: json_format.MessageToDict(value) for name, value in group.hparams.items()},
                {value.name.tag: value.value for value in session.metric_values})
            for group in response.session_groups for session in group.sessions]


def table(rows: list) -> str:
    """``rows`` as aligned text: run, status, every metric, then the hyperparameters whose values differ between rows."""
    metrics = sorted({name for row in rows for name in row.metrics})
    names = sorted({name for row in rows for name in row.hparams})
    differing = [name for name in names if len({repr(row.hparams.get(name)) for row in rows}) > 1]
    lines = [["run", "status", *metrics, *differing]]
    lines += [[row.run, row.status.removeprefix("STATUS_").lower(),
               *(f"{row.metrics[name]:.4f}" if name in row.metrics else "-" for name in metrics),
               *(shown(row.hparams.get(name, "-")) for name in differing)] for row in rows]
    widths = [max(len(line[column]) for line in lines) for column in range(len(lines[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines)


def shown(value) -> str:
    """A hyperparameter as its table cell: whole numbers without the ".0" TensorBoard's float64 gives them."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def main(argv=None) -> int:
    """Print the HParams table of a log directory, as TensorBoard's dashboard computes it."""
    use_graph_mode()
    parser = OneLineParser(prog="python -m library.hparams_summary",
                           description="The training runs below LOGDIR as TensorBoard's HParams dashboard lists them.")
    parser.add_argument("logdir", help="folder searched for runs, as tensorboard --logdir takes it")
    parser.add_argument("--sort_by", default=METRIC_PREFIX + "accuracy", help="metric, highest first (default: best/accuracy)")
    args = parser.parse_args(argv)
    if not tf.io.gfile.isdir(args.logdir):
        parser.error(f"{args.logdir} is not a folder")
    logging.getLogger("tensorboard").setLevel(logging.ERROR)  # notes on the Estimator's own event files
    rows = dashboard_rows(args.logdir, args.sort_by)
    print(table(rows) if rows else f"no training run below {args.logdir} (their rows are <model_dir>/{SESSION_DIR})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

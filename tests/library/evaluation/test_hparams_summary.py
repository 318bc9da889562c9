"""library.evaluation.hparams_summary: a training run's row of TensorBoard's HParams dashboard, read back with TensorBoard's own code."""

import os

import pytest
from tensorboard.backend.event_processing import plugin_event_accumulator
from tensorboard.plugins.hparams import api_pb2, metadata

from library.evaluation import hparams_summary
from library.evaluation.best_checkpoint import snapshot_record
from tests.helpers import tf

v1 = tf.compat.v1

VALUES = {"config_set": "flowers", "learning_rate": 1e-3, "train_epochs": 30, "fine_tuning": False, "random_seed": None}


def best_record(step, loss, accuracy):
    """A best snapshot's record as BestCheckpoint writes it."""
    return snapshot_record(f"model.ckpt-{step}", {"global_step": step, "loss": loss, "accuracy": accuracy}, step / 10)


def events_of(directory):
    """TensorBoard's accumulator over ``directory`` (one run), loaded."""
    accumulator = plugin_event_accumulator.EventAccumulator(str(directory))
    accumulator.Reload()
    return accumulator


def test_a_row_holds_the_configuration_the_best_evaluation_and_the_end_as_the_hparams_plugin_reads_them(tmp_path):
    row = hparams_summary.SessionRow(str(tmp_path / "model"), VALUES)
    row.write(best_record(300, 0.5, 0.75), finished=True)
    events = events_of(tmp_path / "model" / "hparams")
    start = metadata.parse_session_start_info_plugin_data(
        events.SummaryMetadata(metadata.SESSION_START_INFO_TAG).plugin_data.content)
    assert {name: value.WhichOneof("kind") for name, value in start.hparams.items()} == {
        "config_set": "string_value", "learning_rate": "number_value", "train_epochs": "number_value",
        "fine_tuning": "bool_value"}  # a null value is left out
    assert (start.hparams["config_set"].string_value, start.hparams["learning_rate"].number_value,
            start.hparams["train_epochs"].number_value, start.hparams["fine_tuning"].bool_value) == ("flowers", 1e-3, 30, False)
    assert start.start_time_secs == pytest.approx(row.started)
    end = metadata.parse_session_end_info_plugin_data(
        events.SummaryMetadata(metadata.SESSION_END_INFO_TAG).plugin_data.content)
    assert end.status == api_pb2.STATUS_SUCCESS
    scalars = {tag: [(event.step, float(event.tensor_proto.float_val[0])) for event in events.Tensors(tag)]
               for tag in events.Tags()["tensors"] if tag.startswith("best/")}
    assert scalars == {"best/loss": [(300, 0.5)], "best/accuracy": [(300, 0.75)], "best/epoch": [(300, 30.0)]}


def test_each_write_replaces_the_row_so_a_resumed_run_shows_its_latest_configuration_best_and_status(tmp_path):
    model_dir = str(tmp_path / "model")
    hparams_summary.SessionRow(model_dir, VALUES).write(None, finished=False)
    (row,) = hparams_summary.dashboard_rows(str(tmp_path))
    assert (row.run, row.status, row.metrics, row.hparams["train_epochs"]) == ("model/hparams", "STATUS_UNKNOWN", {}, 30)
    hparams_summary.SessionRow(model_dir, VALUES).write(best_record(100, 0.9, 0.5), finished=False)  # stopped
    resumed = hparams_summary.SessionRow(model_dir, {**VALUES, "train_epochs": 40})
    resumed.write(best_record(100, 0.9, 0.5), finished=False)
    (row,) = hparams_summary.dashboard_rows(str(tmp_path))
    assert (row.status, row.metrics["best/accuracy"], row.hparams["train_epochs"]) == ("STATUS_UNKNOWN", 0.5, 40)
    resumed.write(best_record(400, 0.375, 0.875), finished=True)
    (row,) = hparams_summary.dashboard_rows(str(tmp_path))
    assert (row.status, row.metrics) == ("STATUS_SUCCESS", {"best/loss": 0.375, "best/accuracy": 0.875, "best/epoch": 40.0})
    (name,) = os.listdir(tmp_path / "model" / "hparams")  # one events file, no temporary one
    assert name.startswith("events.out.tfevents.") and name.endswith(".hparams")


def write_scalar(run, tag, value):
    writer = v1.summary.FileWriter(run)
    writer.add_summary(v1.Summary(value=[v1.Summary.Value(tag=tag, simple_value=value)]), 200)
    writer.close()


def test_the_dashboard_lists_every_run_once_best_first_and_the_table_shows_what_differs(tmp_path):
    for name, learning_rate, accuracy in (("a", 1e-3, 0.625), ("b", 3e-3, 0.875), ("c", 1e-2, 0.5)):
        model_dir = str(tmp_path / name / "checkpoints")
        values = {**VALUES, "learning_rate": learning_rate, "model_dir": model_dir, "train_epochs": 30 + 10 * (name == "c")}
        hparams_summary.SessionRow(model_dir, values).write(best_record(200, 1 - accuracy, accuracy), finished=name != "c")
        for run, tag in ((model_dir, "loss"), (os.path.join(model_dir, "eval"), "accuracy")):  # as Estimator writes
            write_scalar(run, tag, 0.25)
    rows = hparams_summary.dashboard_rows(str(tmp_path))  # the Estimator's scalars are no columns
    assert {name for row in rows for name in row.metrics} == {"best/loss", "best/accuracy", "best/epoch"}
    assert [(row.run, row.metrics["best/accuracy"], row.hparams["learning_rate"]) for row in rows] == [
        ("b/checkpoints/hparams", 0.875, 3e-3), ("a/checkpoints/hparams", 0.625, 1e-3), ("c/checkpoints/hparams", 0.5, 1e-2)]
    assert [row.run for row in hparams_summary.dashboard_rows(str(tmp_path), "best/loss")][0] == "c/checkpoints/hparams"
    assert hparams_summary.table(rows).splitlines() == [  # the options that differ, whole numbers without ".0"
        "run                    status   best/accuracy  best/epoch  best/loss  learning_rate  model_dir" + " " * (
            len(str(tmp_path)) + 7) + "train_epochs",
        f"b/checkpoints/hparams  success  0.8750         20.0000     0.1250     0.003          {tmp_path}/b/checkpoints  30",
        f"a/checkpoints/hparams  success  0.6250         20.0000     0.3750     0.001          {tmp_path}/a/checkpoints  30",
        f"c/checkpoints/hparams  unknown  0.5000         20.0000     0.5000     0.01           {tmp_path}/c/checkpoints  40",
    ]


def test_the_command_line_prints_the_table_or_says_what_is_wrong_in_one_line(tmp_path, capsys):
    assert hparams_summary.main([str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"no training run below {tmp_path} (their rows are <model_dir>/hparams)\n"
    hparams_summary.SessionRow(str(tmp_path / "model"), VALUES).write(best_record(100, 0.5, 0.75), finished=True)
    assert hparams_summary.main([str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[1].split() == ["model/hparams", "success", "0.7500", "10.0000", "0.5000"]
    with pytest.raises(SystemExit) as exit_:
        hparams_summary.main([str(tmp_path / "nowhere")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (f"error: {tmp_path}/nowhere is not a folder "
                                       "(see python -m library.evaluation.hparams_summary --help)\n")

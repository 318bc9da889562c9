"""The guards of a model_dir: one training run at a time, and only the model it was trained for."""

import json
import os
import socket
import subprocess
import sys

import pytest

from library import model_directory
from library.configuration.config import ConfigError
from tests.helpers import hold_lock_in_another_process

IDENTITY = {"class_names": ["cat", "dog"], "hub_module": "small_cnn", "image_size": 224}


def dead_pid() -> int:
    """The pid of a process that has ended."""
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


def test_the_lock_names_its_holder_while_held_and_is_released_after(tmp_path):
    lock_file = tmp_path / "model" / model_directory.LOCK_FILE
    with model_directory.training_lock(str(tmp_path / "model")):
        assert json.loads(lock_file.read_text()) == {"pid": os.getpid(), "host": socket.gethostname()}
        # Another open file description (as another process would have) cannot take it.
        with pytest.raises(ConfigError, match=r"is being trained by pid \d+ on host "):
            with model_directory.training_lock(str(tmp_path / "model")):
                pass
    assert lock_file.read_text() == ""
    with model_directory.training_lock(str(tmp_path / "model")):  # free again
        pass


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path, capsys):
    (tmp_path / model_directory.LOCK_FILE).write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname()}))
    stale = json.loads((tmp_path / model_directory.LOCK_FILE).read_text())
    with model_directory.training_lock(str(tmp_path)):
        pass
    assert capsys.readouterr().err == (
        f"warning: model_dir {tmp_path}: the training run of pid {stale['pid']} on host {stale['host']} ended without "
        "releasing its lock; taking it over\n")


def test_a_lock_held_by_another_process_is_refused_naming_it(tmp_path):
    holder = hold_lock_in_another_process(tmp_path)
    try:
        with pytest.raises(ConfigError) as error:
            with model_directory.training_lock(str(tmp_path)):
                pass
        assert str(error.value) == (
            f"model_dir {tmp_path} is being trained by pid {holder.pid} on host {socket.gethostname()} (lock file "
            f"{tmp_path / model_directory.LOCK_FILE}); wait for that run to end or stop it, or use another model_dir")
    finally:
        holder.kill()
        holder.wait()
    with model_directory.training_lock(str(tmp_path)):  # the kernel released the killed holder's lock
        pass


def test_the_record_refuses_another_model_and_passes_the_same_one(tmp_path):
    model_directory.check_record(str(tmp_path), IDENTITY)  # no record yet: nothing to compare
    model_directory.write_record(str(tmp_path), IDENTITY)
    model_directory.check_record(str(tmp_path), dict(IDENTITY, class_names=("cat", "dog")))  # JSON has no tuples
    model_directory.check_record(str(tmp_path), dict(IDENTITY, new_key=1))  # keys one side lacks are not compared
    with pytest.raises(ConfigError) as error:
        model_directory.check_record(str(tmp_path), dict(IDENTITY, hub_module="mobilenet_v2"))
    assert str(error.value) == (f"{tmp_path} holds a model trained for hub_module 'small_cnn', but this configuration "
                                "has 'mobilenet_v2'; use a new model_dir for a new model (or the configuration it was "
                                "trained with)")


def test_a_damaged_record_is_a_one_line_error(tmp_path):
    (tmp_path / model_directory.RECORD_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match=r"trained_for.json: unreadable \(.*\); it records what the model in "):
        model_directory.check_record(str(tmp_path), IDENTITY)

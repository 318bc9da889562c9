"""library.atomic_file: temporaries name their writer, so those of killed processes are removed and no others."""

import os
import signal
import subprocess
import sys

import pytest

from library import atomic_file
from library.data import feature_cache
from tests.helpers import ROOT

# A child that starts computing a cache at argv[1] (its temporary written, then a long wait), printing the temporary.
WRITER = ("import sys, time; from library.data import feature_cache; "
          "feature_cache.ensure(sys.argv[1], lambda temporary: (open(temporary, 'wb').write(b'half'), print(temporary, "
          "flush=True), time.sleep(600)))")


def start_writer(path):
    """(the child process computing ``path``, its temporary file) once the temporary is written."""
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    return process, process.stdout.readline().strip()


@pytest.mark.slow
def test_a_killed_caching_pass_leaves_a_temporary_the_next_one_removes_and_a_running_ones_stays(tmp_path):
    killed, left = start_writer(tmp_path / "cache" / "train-1.tfrecord")
    running, writing = start_writer(tmp_path / "cache" / "eval-1.tfrecord")
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert os.path.basename(left).startswith(f".train-1.tfrecord.tmp-{killed.pid}-") and os.path.exists(left)
        old_style = tmp_path / "cache" / ".eval-0.tfrecord.tmp-0123abcd"  # written before temporaries named their pid
        old_style.write_bytes(b"unknown writer")
        assert feature_cache.ensure(str(tmp_path / "cache" / "train-2.tfrecord"),
                                    lambda temporary: open(temporary, "wb").write(b"whole")) is True
        assert sorted(os.listdir(tmp_path / "cache")) == sorted(
            [old_style.name, os.path.basename(writing), "train-2.tfrecord"])
    finally:
        for process in (killed, running):
            process.kill()
            process.wait()


def test_stale_temporary_folders_are_removed_only_for_the_final_names_asked(tmp_path):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(finished.stdout)
    for name in (f".held.tmp-{dead}-0123abcd", f".other.tmp-{dead}-0123abcd", f".held.tmp-{os.getpid()}-0123abcd"):
        os.makedirs(tmp_path / name / "inside")
    atomic_file.remove_stale_temporaries(str(tmp_path), "held")
    assert sorted(os.listdir(tmp_path)) == [f".held.tmp-{os.getpid()}-0123abcd", f".other.tmp-{dead}-0123abcd"]
    assert os.path.basename(atomic_file.temporary_name(str(tmp_path / "x.json"))).startswith(f".x.json.tmp-{os.getpid()}-")

"""library.hub.write_module: the command line that writes a network's module, its one-line errors.

Its networks are the tiny one of tests/library/hub/test_hub_module.py, passed as ``--networks_package``, so the
library is tested without the project (but for the last test, which runs the project's own command).
"""

import os
import subprocess
import sys

import pytest
import tensorflow_hub as hub

from library.hub import write_module
from tests.helpers import ROOT

NETWORKS_PACKAGE = "tests.library.hub.test_hub_module"  # NETWORKS: a tiny network; OPTIONS: its width_multiplier


def run_command_line(argv, capsys):
    """Exit code, stdout and stderr of the command line given ``argv``."""
    try:
        code = write_module.main(argv)
    except SystemExit as exit:
        code = exit.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_command_line_writes_a_module_of_the_chosen_network_and_size(tmp_path, capsys):
    module_dir = str(tmp_path / "hub" / "tiny")
    code, out, err = run_command_line(
        ["--network", "tiny", "--output", module_dir, "--image_size", "12", "--networks_package", NETWORKS_PACKAGE], capsys
    )
    assert (code, out, err) == (0, module_dir + "\n", "")
    assert hub.get_expected_image_size(hub.load_module_spec(module_dir)) == [12, 12]


@pytest.mark.parametrize("arguments, expected_code, expected_error", [
    (["--network", "huge"], 2, "error: unknown network 'huge'; known: tiny"),
    (["--network", "tiny", "--image_size", "0"], 2, "error: argument --image_size: must be at least 1, got 0"),
    (["--network", "tiny", "--width_multiplier", "-1"], 2,
     "error: argument --width_multiplier: -1.0 is not a valid float > 0"),
    (["--network", "tiny", "--networks_package", "no_such_package"], 1,
     "error: no NETWORKS dict in package 'no_such_package' (No module named 'no_such_package'); "
     "pass --networks_package"),
])
def test_command_line_errors_are_one_line(tmp_path, capsys, arguments, expected_code, expected_error):
    argv = ["--output", str(tmp_path / "module"), "--networks_package", NETWORKS_PACKAGE, *arguments]
    code, out, err = run_command_line(argv, capsys)
    assert code == expected_code
    assert err.startswith(expected_error)
    assert err.count("\n") == 1
    assert not os.path.exists(tmp_path / "module")


def test_command_line_refuses_to_write_over_a_file(tmp_path, capsys):
    output = tmp_path / "module"
    output.write_text("not a module")
    argv = ["--network", "tiny", "--output", str(output), "--networks_package", NETWORKS_PACKAGE]
    code, out, err = run_command_line(argv, capsys)
    assert (code, err) == (1, f"error: {output} is a file; give a directory path for the module\n")


@pytest.mark.slow
def test_runs_as_a_script_with_the_project_networks_and_their_own_options(tmp_path):
    module_dir = str(tmp_path / "small_cnn")
    result = subprocess.run(
        [sys.executable, "-m", "project.networks",
         "--network", "mobilenet_v2", "--width_multiplier", "0.35", "--output", module_dir, "--image_size", "32"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    assert (result.returncode, result.stdout) == (0, module_dir + "\n")
    spec = hub.load_module_spec(module_dir)
    assert hub.get_expected_image_size(spec) == [32, 32]
    assert spec.get_output_info_dict()["mobilenet_v2/stage1"].get_shape().as_list() == [None, 8, 8, 8]  # 24 * 0.35

"""The shipped configuration sets (project.yaml, hyperparameters.yaml) as run.py resolves them, and run.py's flags."""

import os
import subprocess
import sys

import pytest
import yaml

from library.configuration import config
from library.configuration.config import ConfigError
from project.options import OPTIONS
from tests.helpers import ROOT, write_files

SEED_PROJECT = os.path.join(ROOT, "project.yaml")


def resolve(*argv, project_file=SEED_PROJECT):
    """Resolved configuration of the shipped sets (or of ``project_file``) for ``argv``."""
    settings, _ = config.parse(OPTIONS, ["--project_file", project_file, *argv])
    return settings


def run_cli(*argv):
    """Run run.py in a subprocess; returns (exit code, stdout, stderr)."""
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "run.py"), *argv],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    return result.returncode, result.stdout, result.stderr


def test_seed_default_set():
    settings = resolve()
    assert settings.train_batch_size == 32
    assert settings.train_epochs == 1000
    assert settings.epochs_between_evals == 100
    assert settings.model == "latest"
    assert settings.model_dir == "out/current/checkpoints"
    assert settings.learning_rate == pytest.approx(1e-3)
    assert settings.hub_module == "efficientnet_lite0"  # pretrained on ImageNet, from a pinned package: no download
    assert settings.fine_tuning is False
    assert settings.cache_features is True
    assert settings.dropout_rate == pytest.approx(0.2)
    assert settings.sources["train_batch_size"] == "project.yaml: default"
    assert settings.sources["hub_module"] == "hyperparameters.yaml: default"


def test_the_declared_defaults_are_the_default_sets_values():
    settings = resolve()
    declared = {option.name: option.default for option in OPTIONS if option.file == config.HYPERPARAMETER_FILE}
    differing = {name: (settings[name], declared[name]) for name in declared if settings[name] != declared[name]}
    assert differing == {}


def test_the_tfhub_mobilenet_v2_set_keeps_the_download():
    settings = resolve("--hyperparameter_set", "tfhub_mobilenet_v2")
    assert settings.hub_module == "https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/3"
    assert settings.fine_tuning is False and settings.cache_features is True


def test_issue_example_thinkpad_with_command_line_learning_rate():
    settings = resolve("--config_set", "thinkpadx201t", "--learning_rate", "3e-4")
    assert settings.train_batch_size == 10
    assert settings.train_epochs == 10
    assert settings.epochs_between_evals == 1
    assert settings.random_seed == 0
    assert settings.learning_rate == pytest.approx(3e-4)
    assert isinstance(settings.adam_epsilon, float) and settings.adam_epsilon == pytest.approx(1e-8)
    assert settings.sources["train_batch_size"] == "project.yaml: thinkpadx201t"
    assert settings.sources["learning_rate"] == "command line"
    assert settings.sources["adam_epsilon"] == "hyperparameters.yaml: default"
    assert settings.sources["model_dir"] == "project.yaml: default (inherited by thinkpadx201t)"


def test_gtx1080ti_overrides_only_the_batch_size():
    settings = resolve("--config_set", "gtx1080ti")
    assert settings.train_batch_size == 512
    assert settings.train_epochs == 1000


def test_mobilenet_hyperparameters_inherit_default():
    settings = resolve("--hyperparameter_set", "mobilenet")
    assert settings.learning_rate == pytest.approx(1e-5)
    assert settings.fine_tuning is True
    assert settings.dropout_rate == 0.2
    assert settings.sources["dropout_rate"] == "hyperparameters.yaml: default (inherited by mobilenet)"
    assert settings.sources["learning_rate"] == "hyperparameters.yaml: mobilenet"
    # The fine-tuning recipe: the head first, then the network with its batch norm on stored statistics.
    assert (settings.head_epochs, settings.fine_tuning_batch_norm) == (30, "frozen")


def test_scientific_notation_without_dot_is_a_float():
    settings = resolve()
    for name in ("learning_rate", "l2_regularization", "adam_epsilon"):
        assert type(settings[name]) is float, name
    assert settings.l2_regularization == pytest.approx(1e-8)


def test_unknown_set_lists_the_sets():
    with pytest.raises(ConfigError) as error:
        resolve("--config_set", "gtx1080")
    assert "no set named 'gtx1080'" in str(error.value)
    assert "default, gtx1080ti, thinkpadx201t" in str(error.value)


@pytest.mark.slow
def test_print_config_shows_values_and_sources_then_exits_0():
    code, out, err = run_cli("--config_set", "thinkpadx201t", "--learning_rate", "3e-4", "--print_config")
    assert code == 0, err
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert lines["train_batch_size"].split("#")[0].split("=")[1].strip() == "10"
    assert lines["train_batch_size"].endswith("# project.yaml: thinkpadx201t")
    assert "= 0.0003 " in lines["learning_rate"] and lines["learning_rate"].endswith("# command line")
    assert "= 1e-08 " in lines["adam_epsilon"]
    assert lines["adam_epsilon"].endswith("# hyperparameters.yaml: default")
    assert set(lines) >= {option.name for option in OPTIONS}
    assert err == ""


@pytest.mark.slow
def test_unknown_flag_is_a_one_line_error_with_suggestion():
    code, out, err = run_cli("--lerning_rate", "3")
    assert code == 2
    assert err == "error: command line: unknown flag '--lerning_rate'; did you mean '--learning_rate'?\n"


@pytest.mark.slow
def test_bad_set_is_a_one_line_error():
    code, _, err = run_cli("--config_set", "nope", "--print_config")
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and "sets in this file" in err


@pytest.mark.slow
@pytest.mark.parametrize("config_set", ["default", "thinkpadx201t"])
def test_help_lists_every_option_with_type_description_and_the_value_the_sets_give_it(config_set):
    code, out, _ = run_cli("--help", "--config_set", config_set)
    assert code == 0
    flat = " ".join(out.split())
    settings = resolve("--config_set", config_set)
    for option in OPTIONS:
        assert f"--{option.name}" in flat
        assert " ".join(option.help.split()) in flat, option.name
        source = settings.sources[option.name]
        shown = f"default: {option.default}" if source == "default" else f"default: {settings[option.name]} from {source}"
        assert f"({option.describe_valid()}, {shown})" in flat, option.name
    assert "(float [0, 1), default: 0.2 from hyperparameters.yaml: default)" in flat  # dropout_rate, as trained
    assert "(float > 0, default: 0.001 from hyperparameters.yaml: default)" in flat  # learning_rate
    batch = {"default": "32 from project.yaml: default", "thinkpadx201t": "10 from project.yaml: thinkpadx201t"}
    assert f"(int >= 1, default: {batch[config_set]})" in flat


@pytest.mark.slow
def test_help_with_an_unreadable_set_shows_the_declared_defaults():
    code, out, _ = run_cli("--help", "--config_set", "no_such_set")
    assert code == 0
    assert "(int >= 1, default: 32)" in " ".join(out.split())


@pytest.mark.slow
def test_an_unquoted_file_pattern_the_shell_expanded_says_to_quote_it(tmp_path):
    shards = [tmp_path / f"train-0000{index}-of-00002.tfrecord" for index in range(2)]
    for shard in shards:
        shard.write_bytes(b"")
    code, _, err = run_cli("--train_data", *map(str, shards), "--print_config")
    assert code == 2
    assert err == (f"error: unexpected argument '{shards[1]}': the shell expanded a file pattern into several files; "
                   "quote the pattern, e.g. --train_data 'out/x/train-*.tfrecord'\n")


def test_write_config_records_values_and_sources(tmp_path):
    settings = resolve("--config_set", "thinkpadx201t", "--learning_rate", "3e-4")
    path = config.write_config(settings, str(tmp_path / "model"))
    written = yaml.safe_load(open(path))
    assert written["train_batch_size"] == 10
    assert written["learning_rate"] == pytest.approx(3e-4)
    assert written["config_set"] == "thinkpadx201t"
    assert "learning_rate: 0.0003  # command line" in open(path).read()
    assert os.listdir(tmp_path / "model") == ["config.yaml"]


def test_null_from_the_command_line_unsets_an_optional_option():
    settings = resolve("--config_set", "thinkpadx201t", "--random_seed", "null")
    assert settings.random_seed is None
    with pytest.raises(ConfigError, match=r"command line: train_batch_size: null is not allowed, it needs a value "
                                          r"\(int >= 1, default: 32\)"):
        resolve("--train_batch_size", "null")


@pytest.mark.parametrize("argv, message", [
    (["--train_batch_size", "-5"], "command line: train_batch_size: -5 is not a valid int >= 1"),
    (["--train_epochs", "0"], "train_epochs: 0 is not a valid int >= 1"),
    (["--eval_batch_size", "0"], "eval_batch_size: 0 is not a valid int >= 1"),
    (["--dropout_rate", "1"], "dropout_rate: 1.0 is not a valid float [0, 1)"),
    (["--learning_rate", "0"], "learning_rate: 0.0 is not a valid float > 0"),
    (["--learning_rate", "nan"], "learning_rate: nan is not a valid float > 0"),
    (["--learning_rate", "inf"], "learning_rate: inf is not a valid float > 0"),
    (["--min_crop_area", "0"], "min_crop_area: 0.0 is not a valid float (0, 1]"),
    (["--eval_crop_fraction", "1.5"], "eval_crop_fraction: 1.5 is not a valid float (0, 1]"),
    (["--xentropy_label_smoothing", "1"], "xentropy_label_smoothing: 1.0 is not a valid float [0, 1)"),
    (["--random_seed", "-1"], "random_seed: -1 is not a valid int [0, 4294967295]"),
])
def test_numbers_outside_their_declared_range_are_config_errors(argv, message):
    with pytest.raises(ConfigError) as error:
        resolve(*argv)
    assert str(error.value) == message or str(error.value).endswith(message)


def test_range_is_checked_in_yaml_too(tmp_path):
    with pytest.raises(ConfigError, match=r"hyperparameters.yaml, set 'default': dropout_rate: -0.5 is not a valid "
                                          r"float \[0, 1\)"):
        resolve(project_file=write_files(tmp_path, "default: {}\n", "default:\n  dropout_rate: -0.5\n"))
    assert resolve("--dropout_rate", "0", "--keep_checkpoint_max", "0").dropout_rate == 0.0  # closed ends are valid


@pytest.mark.slow
def test_an_out_of_range_option_stops_run_py_before_anything_is_written(tmp_path):
    code, out, err = run_cli("--train_batch_size", "-5", "--model_dir", str(tmp_path / "model"))
    assert code == 2
    assert err == "error: command line: train_batch_size: -5 is not a valid int >= 1\n"
    assert os.listdir(tmp_path) == []


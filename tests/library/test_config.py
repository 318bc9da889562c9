"""Layered YAML + command-line configuration: the seed files, inheritance, precedence, errors."""

import os
import subprocess
import sys
import textwrap
import time

import pytest
import yaml

from library import config
from library.config import ConfigError, Option
from project.options import OPTIONS
from tests.conftest import ROOT

SEED_PROJECT = os.path.join(ROOT, "project.yaml")


def resolve(*argv, project_file=SEED_PROJECT):
    """Resolved configuration of the real options for ``argv``."""
    settings, _ = config.parse(OPTIONS, ["--project_file", project_file, *argv])
    return settings


def write_files(directory, project, hyperparameters):
    """Write a project.yaml / hyperparameters.yaml pair; returns the project file path."""
    (directory / "hyperparameters.yaml").write_text(textwrap.dedent(hyperparameters))
    path = directory / "project.yaml"
    path.write_text(textwrap.dedent(project))
    return str(path)


TOY_OPTIONS = (
    Option("batch", int, 1, "batch size"),
    Option("xla", bool, False, "XLA"),
    Option("name", str, "x", "a name"),
    Option("hyperparameter_file", str, "hyperparameters.yaml", "hp file"),
    Option("hyperparameter_set", str, "default", "hp set"),
    Option("rate", float, 0.5, "a rate", config.HYPERPARAMETER_FILE),
    Option("optimizer", str, "Adam", "optimizer", config.HYPERPARAMETER_FILE, ("Adam", "SGD")),
)
TOY_HYPERPARAMETERS = """\
    default: &DEFAULT
      rate: 1e-4
    other:
      <<: *DEFAULT
      optimizer: SGD
"""


def toy(tmp_path, project, *argv, hyperparameters=TOY_HYPERPARAMETERS):
    path = write_files(tmp_path, project, hyperparameters)
    settings, _ = config.parse(TOY_OPTIONS, ["--project_file", path, *argv])
    return settings


def test_seed_default_set():
    settings = resolve()
    assert settings.train_batch_size == 32
    assert settings.train_epochs == 1000
    assert settings.epochs_between_evals == 100
    assert settings.model == "latest"
    assert settings.model_dir == "out/current/checkpoints"
    assert settings.learning_rate == pytest.approx(1e-3)
    assert settings.hub_module == "https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/3"
    assert settings.fine_tuning is False
    assert settings.sources["train_batch_size"] == "project.yaml: default"


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


def test_scientific_notation_without_dot_is_a_float():
    settings = resolve()
    for name in ("learning_rate", "l2_regularization", "adam_epsilon"):
        assert type(settings[name]) is float, name
    assert settings.l2_regularization == pytest.approx(1e-8)


def test_three_level_inheritance_chain_and_precedence(tmp_path):
    project = """\
        base: &BASE
          batch: 8
          name: base
          xla: false
        middle: &MIDDLE
          <<: *BASE
          batch: 16
        top:
          <<: *MIDDLE
          name: top
    """
    settings = toy(tmp_path, project, "--config_set", "top")
    assert (settings.batch, settings.name, settings.xla) == (16, "top", False)
    assert settings.sources["batch"] == "project.yaml: middle (inherited by top)"
    assert settings.sources["xla"] == "project.yaml: base (inherited by top)"
    assert settings.sources["name"] == "project.yaml: top"
    settings = toy(tmp_path, project, "--config_set", "top", "--batch", "64")
    assert settings.batch == 64 and settings.sources["batch"] == "command line"


def test_multiple_merge_sources_earlier_wins(tmp_path):
    project = """\
        a: &A
          batch: 1
        b: &B
          batch: 2
          name: from_b
        c:
          <<: [*A, *B]
    """
    settings = toy(tmp_path, project, "--config_set", "c")
    assert settings.batch == 1 and settings.sources["batch"] == "project.yaml: a (inherited by c)"
    assert settings.name == "from_b"


def test_declared_default_when_no_set_has_the_key(tmp_path):
    settings = toy(tmp_path, "default:\n  batch: 3\n")
    assert settings.name == "x" and settings.sources["name"] == "default"


@pytest.mark.parametrize("flag, expected", [("--xla", True), ("--no-xla", False)])
def test_boolean_flags(tmp_path, flag, expected):
    settings = toy(tmp_path, "default:\n  xla: true\n" if not expected else "default:\n  xla: false\n", flag)
    assert settings.xla is expected


def test_yaml_booleans(tmp_path):
    assert toy(tmp_path, "default:\n  xla: true\n").xla is True
    assert toy(tmp_path, "default:\n  xla: False\n").xla is False


def test_hyperparameter_set_chosen_by_project_set(tmp_path):
    settings = toy(tmp_path, "default:\n  hyperparameter_set: other\n")
    assert settings.optimizer == "SGD"
    assert settings.rate == pytest.approx(1e-4)
    assert settings.sources["rate"] == "hyperparameters.yaml: default (inherited by other)"


def test_wrong_type_names_file_set_key_value_and_type(tmp_path):
    with pytest.raises(ConfigError) as error:
        toy(tmp_path, "default:\n  batch: ten\n")
    message = str(error.value)
    for part in ("project.yaml", "set 'default'", "batch", "'ten'", "int"):
        assert part in message
    with pytest.raises(ConfigError, match=r"rate: 'fast' is not a valid float"):
        toy(tmp_path, "default: {}\n", hyperparameters="default:\n  rate: fast\n")
    with pytest.raises(ConfigError, match=r"command line: batch: '1.5' is not a valid int"):
        toy(tmp_path, "default: {}\n", "--batch", "1.5")
    with pytest.raises(ConfigError, match=r"optimizer: 'Adagrad' is not a valid \{Adam,SGD\}"):
        toy(tmp_path, "default: {}\n", "--optimizer", "Adagrad")
    with pytest.raises(ConfigError, match=r"xla: 1 is not a valid bool"):
        toy(tmp_path, "default:\n  xla: 1\n")


def test_unknown_set_lists_the_sets():
    with pytest.raises(ConfigError) as error:
        resolve("--config_set", "gtx1080")
    assert "no set named 'gtx1080'" in str(error.value)
    assert "default, gtx1080ti, thinkpadx201t" in str(error.value)


def test_unknown_key_suggests_the_closest(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown option 'bacth'; did you mean 'batch'\?"):
        toy(tmp_path, "default:\n  bacth: 3\n")


def test_key_in_the_wrong_file(tmp_path):
    with pytest.raises(ConfigError, match=r"'rate' is a hyperparameters option"):
        toy(tmp_path, "default:\n  rate: 0.1\n")


def test_python_tags_are_refused_not_executed(tmp_path):
    marker = tmp_path / "executed"
    project = f"default:\n  name: !!python/object/apply:os.system ['touch {marker}']\n"
    with pytest.raises(ConfigError, match=r"project.yaml:2: unsupported YAML tag"):
        toy(tmp_path, project)
    assert not marker.exists()


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.yaml: cannot read"):
        resolve(project_file=str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match=r"expected a mapping of set names"):
        toy(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError, match=r"invalid YAML"):
        toy(tmp_path, "default: [\n")


def run_cli(*argv):
    """Run run.py in a subprocess; returns (exit code, stdout, stderr)."""
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "run.py"), *argv],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    return result.returncode, result.stdout, result.stderr


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


def test_unknown_flag_is_a_one_line_error_with_suggestion():
    code, out, err = run_cli("--lerning_rate", "3")
    assert code == 2
    assert err == "error: command line: unknown flag '--lerning_rate'; did you mean '--learning_rate'?\n"


def test_bad_set_is_a_one_line_error():
    code, _, err = run_cli("--config_set", "nope", "--print_config")
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and "sets in this file" in err


def test_help_lists_every_option_with_type_default_and_description():
    code, out, _ = run_cli("--help")
    assert code == 0
    flat = " ".join(out.split())
    for option in OPTIONS:
        assert f"--{option.name}" in flat
        assert " ".join(option.help.split()) in flat, option.name
        assert f"({option.describe_valid()}, default: {option.default})" in flat, option.name
    assert "(int >= 1, default: 32)" in flat and "(float [0, 1), default: 0.5)" in flat  # train_batch_size, dropout_rate


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


@pytest.mark.parametrize("project, message", [
    ("default:\n  train_batch_size: ~\n",
     "set 'default': train_batch_size: null is not allowed, it needs a value (int >= 1, default: 32)"),
    ("default:\n  mode: null\n", "set 'default': mode: null is not allowed, it needs a value ({train,"),
])
def test_null_for_an_option_that_needs_a_value_is_a_config_error(tmp_path, project, message):
    with pytest.raises(ConfigError) as error:
        resolve(project_file=write_files(tmp_path, project, "default: {}\n"))
    assert message in str(error.value)


def test_every_declared_default_is_in_its_valid_range():
    for option in OPTIONS:
        if option.type in (int, float) and option.default is not None:
            assert option.valid is not None and option.default in option.valid, option.name


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


def test_an_out_of_range_option_stops_run_py_before_anything_is_written(tmp_path):
    code, out, err = run_cli("--train_batch_size", "-5", "--model_dir", str(tmp_path / "model"))
    assert code == 2
    assert err == "error: command line: train_batch_size: -5 is not a valid int >= 1\n"
    assert os.listdir(tmp_path) == []


LAUGHS = "default:\n  a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n" + "".join(
    f"  {name}: &{name} [{','.join([f'*{previous}'] * 9)}]\n" for previous, name in zip("abcdefgh", "bcdefghi")
) + "  train_batch_size: *i\n"


@pytest.mark.parametrize("text, message", [
    (LAUGHS, "project.yaml:2: aliases expand to over 100000 values; use anchors for sets of options"),
    ("a: &A {<<: *A}\ndefault:\n  <<: *A\n", "project.yaml:1: an alias refers to the anchor it is inside"),
    ("default:\n  a: &A [1, *A]\n  model_dir: *A\n", "project.yaml:2: an alias refers to the anchor it is inside"),
    ("default:\n  model_dir: caf\xe9\n".encode("latin-1"),
     "project.yaml: not UTF-8 text (byte 0xe9 at offset 25); save it as UTF-8"),
], ids=["billion-laughs", "self-merge", "self-alias", "latin-1"])
def test_hostile_or_broken_yaml_is_a_short_error_at_once(tmp_path, text, message):
    assert len(text) < 400
    path = tmp_path / "project.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    started = time.monotonic()
    with pytest.raises(ConfigError) as error:
        resolve(project_file=str(path))
    assert time.monotonic() - started < 0.5
    assert message in str(error.value) and len(str(error.value)) < 300

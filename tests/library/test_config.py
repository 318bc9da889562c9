"""Layered YAML + command-line configuration: the seed files, inheritance, precedence, errors."""

import os
import subprocess
import sys
import textwrap

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
        assert f"({option.describe_type()}, default: {option.default})" in flat, option.name


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
    with pytest.raises(ConfigError, match=r"train_batch_size: 'null' is not a valid int"):
        resolve("--train_batch_size", "null")

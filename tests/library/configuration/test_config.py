"""library.configuration.config: layered YAML + command-line configuration on files of each test's own: inheritance, precedence, errors."""

import time

import pytest

from library.configuration import config
from library.configuration.config import ConfigError, Option
from project.options import OPTIONS
from tests.helpers import write_files


def resolve(*argv, project_file):
    """Resolved configuration of the project's options in ``project_file`` for ``argv``."""
    settings, _ = config.parse(OPTIONS, ["--project_file", project_file, *argv])
    return settings


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

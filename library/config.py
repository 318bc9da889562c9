"""Layered configuration: named YAML sets with inheritance, overridden from the command line.

A run is configured by two YAML files of named sets (``project.yaml`` for how to run,
``hyperparameters.yaml`` for the model). A set inherits from another with YAML anchors
and merge keys (``<<: *DEFAULT``). Every option is declared once, as an :class:`Option`,
with its file, type, default and help; that declaration drives YAML validation, the
command-line flags, ``--help`` and ``--print_config``.

Precedence, highest first: command line > selected set > the sets it inherits > declared default.
"""

import argparse
import dataclasses
import difflib
import os
import re
import sys
import textwrap
from typing import Any, Iterable, Optional

import yaml

PROJECT_FILE = "project"
HYPERPARAMETER_FILE = "hyperparameters"
_TYPE_NAMES = {int: "int", float: "float", str: "str", bool: "bool"}


class ConfigError(Exception):
    """A user mistake in the configuration; its message is a complete one-line explanation."""


@dataclasses.dataclass(frozen=True)
class Option:
    """One setting: the YAML file it belongs to, its type, its default and one line of help."""

    name: str
    type: type
    default: Any
    help: str
    file: str = PROJECT_FILE
    choices: Optional[tuple] = None

    def describe_type(self) -> str:
        if self.choices:
            return "{" + ",".join(map(str, self.choices)) + "}"
        return _TYPE_NAMES[self.type]


@dataclasses.dataclass
class Config:
    """Resolved values plus, for each value, where it came from."""

    values: dict
    sources: dict

    def __getattr__(self, name):
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name):
        return self.values[name]

    def as_dict(self) -> dict:
        return dict(self.values)


class _Loader(yaml.SafeLoader):
    """Safe loader that also reads YAML 1.2 floats such as ``1e-4`` (YAML 1.1 wants ``1.0e-4``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _read_sets(path: str) -> tuple:
    """Parse a YAML file of named sets into (loader, {set name: mapping node})."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read ({error.strerror}); create it or point to it with the right option") from None
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML: {' '.join(str(error).split())}") from None
    if not isinstance(root, yaml.MappingNode) or not all(
        isinstance(value, yaml.MappingNode) for _, value in root.value
    ):
        raise ConfigError(f"{path}: expected a mapping of set names to mappings of options")
    return loader, {key.value: value for key, value in root.value}


def _construct(loader: _Loader, node: yaml.Node, path: str):
    """Build a plain value with the safe constructor; any other tag is refused, never run."""
    try:
        return loader.construct_object(node, deep=True)
    except yaml.constructor.ConstructorError as error:
        raise ConfigError(
            f"{path}:{node.start_mark.line + 1}: unsupported YAML tag ({error.problem}); "
            "only plain values, anchors and merge keys are allowed"
        ) from None


def _flatten_set(loader: _Loader, sets: dict, set_name: str, path: str) -> dict:
    """{key: (value, set it comes from)} for one set, following merge keys.

    Merge semantics follow the YAML spec: the set's own keys win, then the merge sources
    in the order listed. (PyYAML's own loader lets the last listed source win.)
    """
    owner_of_node = {id(node): name for name, node in sets.items()}

    def walk(mapping: yaml.MappingNode, owner: str) -> dict:
        own, merged = {}, {}
        for key, value in mapping.value:
            if key.tag == "tag:yaml.org,2002:merge":
                parents = value.value if isinstance(value, yaml.SequenceNode) else [value]
                for parent in reversed(parents):
                    if not isinstance(parent, yaml.MappingNode):
                        raise ConfigError(f"{path}:{parent.start_mark.line + 1}: '<<' must name a set, e.g. <<: *DEFAULT")
                    merged.update(walk(parent, owner_of_node.get(id(parent), owner)))
            else:
                own[str(key.value)] = (_construct(loader, value, path), owner)
        return {**merged, **own}

    return walk(sets[set_name], set_name)


# What YAML (or the command line, after parsing) may give for each declared type.
_ACCEPTED = {bool: (bool,), int: (int,), float: (int, float), str: (str, int, float)}


def _parse_text(kind: type, text: str):
    """A command-line string as ``kind``; left as text when it is not one, for the type check to report."""
    if kind is bool:
        return {"true": True, "false": False}.get(text.lower(), text)
    try:
        return kind(text)
    except ValueError:
        return text


def _coerce(option: Option, value: Any, where: str) -> Any:
    """Check ``value`` against the option's declared type, converting where the intent is clear."""
    if value is None or (value == "null" and option.default is None):
        return None
    if isinstance(value, str) and option.type is not str:
        value = _parse_text(option.type, value)
    valid = (
        isinstance(value, _ACCEPTED[option.type])
        and isinstance(value, bool) == (option.type is bool)
        and (not option.choices or value in option.choices)
    )
    if not valid:
        raise ConfigError(f"{where}: {option.name}: {value!r} is not a valid {option.describe_type()}")
    return option.type(value)


def _unknown(kind: str, name: str, known: Iterable[str], where: str) -> ConfigError:
    """An error for an unknown name, with a 'did you mean' when a known one is close."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(known)}"
    return ConfigError(f"{where}: unknown {kind} '{name}'{hint}")


def load_set(path: str, set_name: str, options: dict, file_kind: str) -> tuple:
    """Values and sources of one named set of a YAML file, validated against ``options``."""
    loader, sets = _read_sets(path)
    if set_name not in sets:
        raise ConfigError(f"{path}: no set named '{set_name}'; sets in this file: {', '.join(sets)}")
    values, sources = {}, {}
    for key, (value, origin) in _flatten_set(loader, sets, set_name, path).items():
        where = f"{path}, set '{origin}'"
        option = options.get(key)
        if option is None:
            raise _unknown("option", key, [o.name for o in options.values() if o.file == file_kind], where)
        if option.file != file_kind:
            raise ConfigError(f"{where}: '{key}' is a {option.file} option; move it to the {option.file} file")
        values[key] = _coerce(option, value, where)
        inherited = "" if origin == set_name else f" (inherited by {set_name})"
        sources[key] = f"{os.path.basename(path)}: {origin}{inherited}"
    return values, sources


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Wraps help lines at spaces only, so flags, hyphenated words and URLs stay whole."""

    def _split_lines(self, text, width):
        return textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False)


class _OneLineParser(argparse.ArgumentParser):
    """Argument parser whose errors are a single line plus a pointer to --help."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser(options: Iterable[Option], description: str, prog: str = None) -> argparse.ArgumentParser:
    """A parser with one flag per option; flags not given stay absent from the result."""
    parser = _OneLineParser(
        prog=prog, description=description, allow_abbrev=False,
        formatter_class=_HelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--config_set", default="default", help="set of project.yaml to use (str, default: default)")
    parser.add_argument("--project_file", default="project.yaml", help="file of project sets (str, default: project.yaml)")
    parser.add_argument("--print_config", action="store_true", help="print the resolved configuration with the source of every value, then exit")
    for file_kind in (PROJECT_FILE, HYPERPARAMETER_FILE):
        group = parser.add_argument_group(f"{file_kind} options (also settable in {file_kind}.yaml)")
        for option in options:
            if option.file != file_kind:
                continue
            text = f"{option.help} ({option.describe_type()}, default: {option.default})"
            if option.type is bool:
                group.add_argument(f"--{option.name}", action=argparse.BooleanOptionalAction, help=text)
            else:
                metavar = option.describe_type() if option.choices else option.describe_type().upper()
                group.add_argument(f"--{option.name}", metavar=metavar, help=text)
    return parser


def parse(options: Iterable[Option], argv: Optional[list] = None, description: str = "", prog: str = None):
    """Resolve the configuration for ``argv``; returns (Config, print_config_requested)."""
    options = {option.name: option for option in options}
    parser = build_parser(options.values(), description, prog)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        flag = unknown[0].split("=")[0]
        if flag.startswith("--"):
            known = [name for name in options] + ["config_set", "project_file", "print_config"]
            parser.exit(2, f"error: {_unknown('flag', flag, ['--' + k for k in known], 'command line')}\n")
        parser.exit(2, f"error: unexpected argument '{unknown[0]}' (see {parser.prog} --help)\n")
    cli = vars(args)
    config_set = cli.pop("config_set")
    project_file = cli.pop("project_file")
    print_config = cli.pop("print_config", False)

    values = {name: option.default for name, option in options.items()}
    sources = {name: "default" for name in options}
    project_values, project_sources = load_set(project_file, config_set, options, PROJECT_FILE)
    values.update(project_values)
    sources.update(project_sources)
    # The hyperparameter file and set may themselves come from the command line.
    hp_file = cli.get("hyperparameter_file", values.get("hyperparameter_file"))
    hp_set = cli.get("hyperparameter_set", values.get("hyperparameter_set"))
    if hp_file:
        hp_path = hp_file if os.path.isabs(hp_file) else os.path.join(os.path.dirname(project_file), hp_file)
        hp_values, hp_sources = load_set(hp_path, hp_set, options, HYPERPARAMETER_FILE)
        values.update(hp_values)
        sources.update(hp_sources)
    for name, value in cli.items():
        values[name] = _coerce(options[name], value, "command line")
        sources[name] = "command line"
    values["config_set"] = config_set
    sources["config_set"] = "command line" if argv_has(argv, "--config_set") else "default"
    return Config(values, sources), print_config


def argv_has(argv: Optional[list], flag: str) -> bool:
    """Whether ``flag`` was given on the command line."""
    argv = sys.argv[1:] if argv is None else argv
    return any(arg == flag or arg.startswith(flag + "=") for arg in argv)


def format_config(config: Config) -> str:
    """The resolved configuration as aligned ``name = value  # source`` lines."""
    width = max(map(len, config.values))
    lines = []
    for name in sorted(config.values):
        value = config.values[name]
        shown = "null" if value is None else repr(value) if isinstance(value, str) else str(value)
        lines.append(f"{name:<{width}} = {shown:<24} # {config.sources[name]}")
    return "\n".join(lines)


def write_config(config: Config, directory: str) -> str:
    """Write the resolved configuration to ``directory/config.yaml`` atomically; returns the path."""
    from library import atomic_file

    path = os.path.join(directory, "config.yaml")
    text = "# Resolved configuration of this run; every value's source in the comment.\n"
    for name in sorted(config.values):
        text += yaml.safe_dump({name: config.values[name]}, default_flow_style=False).rstrip("\n")
        text += f"  # {config.sources[name]}\n"
    atomic_file.write_text(path, text)
    return path

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
import glob
import math
import os
import re
import reprlib
import sys
import textwrap
from typing import Any, Iterable, Optional

import yaml

from library.command_line import OneLineParser

PROJECT_FILE = "project"
HYPERPARAMETER_FILE = "hyperparameters"
_TYPE_NAMES = {int: "int", float: "float", str: "str", bool: "bool"}
# Bounds of what a configuration file may expand to: a few hundred bytes of nested aliases
# ("billion laughs") would otherwise expand to billions of values, and a mapping that merges
# itself (a: &A {<<: *A}) recurses forever.
MAX_EXPANDED_NODES = 100_000
MAX_NESTING = 50


class ConfigError(Exception):
    """A user mistake in the configuration; its message is a complete one-line explanation."""


@dataclasses.dataclass(frozen=True)
class Range:
    """The valid values of a numeric option: from ``low`` to ``high`` (None: unbounded), each end
    included unless it is declared open."""

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value) -> bool:
        if not math.isfinite(value):
            return False
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high}"
        return f"{'(' if self.low_open else '['}{self.low}, {self.high}{')' if self.high_open else ']'}"


AT_LEAST_1 = Range(1)
NON_NEGATIVE = Range(0)
POSITIVE = Range(0, low_open=True)
FRACTION = Range(0, 1, low_open=True)  # (0, 1]: a share of something, never nothing
PROBABILITY_BELOW_1 = Range(0, 1, high_open=True)  # [0, 1): e.g. a dropout rate, a decay factor


@dataclasses.dataclass(frozen=True)
class Option:
    """One setting: the YAML file it belongs to, its type, its default and one line of help."""

    name: str
    type: type
    default: Any
    help: str
    file: str = PROJECT_FILE
    choices: Optional[tuple] = None
    valid: Optional[Range] = None  # numeric options: the values that make sense

    def describe_type(self) -> str:
        if self.choices:
            return "{" + ",".join(map(str, self.choices)) + "}"
        return _TYPE_NAMES[self.type]

    def describe_valid(self) -> str:
        """The type and, for numbers, the valid range, as --help and errors show them: ``int >= 1``."""
        return self.describe_type() + (f" {self.valid}" if self.valid else "")


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
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.object[error.start]:#04x} at offset {error.start}); "
                          "save it as UTF-8") from None
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML: {' '.join(str(error).split())}") from None
    except RecursionError:  # the composer recurses once per nesting level
        raise ConfigError(f"{path}: nested too deeply (over {MAX_NESTING} levels)") from None
    if not isinstance(root, yaml.MappingNode) or not all(
        isinstance(value, yaml.MappingNode) for _, value in root.value
    ):
        raise ConfigError(f"{path}: expected a mapping of set names to mappings of options")
    _check_expansion(root, path)
    return loader, {key.value: value for key, value in root.value}


def _check_expansion(root: yaml.Node, path: str) -> None:
    """Refuse a document that refers to itself through an alias, nests more than MAX_NESTING levels or
    expands to more than MAX_EXPANDED_NODES values, before anything walks or builds it."""
    expanded = 0
    stack = [(root, 1, ())]  # (node, nesting level, ids of the collections it is inside)
    while stack:
        node, level, inside = stack.pop()
        expanded += 1
        where = f"{path}:{node.start_mark.line + 1}"
        if expanded > MAX_EXPANDED_NODES:
            raise ConfigError(f"{where}: aliases expand to over {MAX_EXPANDED_NODES} values; "
                              "use anchors for sets of options, not nested lists")
        if level > MAX_NESTING:
            raise ConfigError(f"{where}: nested too deeply (over {MAX_NESTING} levels)")
        if id(node) in inside:
            raise ConfigError(f"{where}: an alias refers to the anchor it is inside (e.g. a: &A {{<<: *A}}); "
                              "a set can only inherit another set")
        if isinstance(node, yaml.CollectionNode):
            children = node.value if isinstance(node, yaml.SequenceNode) else [c for pair in node.value for c in pair]
            deeper = inside + (id(node),)
            stack += [(child, level + 1, deeper) for child in children]


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
    """Check ``value`` against the option's declared type and range, converting where the intent is clear.

    null is a value only of the options whose default is None (documented as optional).
    """
    if value is None or (value == "null" and (option.type is not str or option.default is None)):
        if option.default is None:
            return None
        raise ConfigError(f"{where}: {option.name}: null is not allowed, it needs a value "
                          f"({option.describe_valid()}, default: {option.default})")
    if isinstance(value, str) and option.type is not str:
        value = _parse_text(option.type, value)
    valid = (
        isinstance(value, _ACCEPTED[option.type])
        and isinstance(value, bool) == (option.type is bool)
        and (not option.choices or value in option.choices)
        and (not option.valid or value in option.valid)
    )
    if not valid:
        raise ConfigError(f"{where}: {option.name}: {_short_repr(value)} is not a valid {option.describe_valid()}")
    return option.type(value)


def _short_repr(value: Any) -> str:
    """``repr(value)`` cut short, so an error about a huge or deeply nested value stays one readable line."""
    shortener = reprlib.Repr()
    shortener.maxstring = shortener.maxother = 60
    shortener.maxlevel = 2
    return shortener.repr(value)


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


def build_parser(options: Iterable[Option], description: str, prog: str = None, defaults: Optional[Config] = None
                 ) -> argparse.ArgumentParser:
    """A parser with one flag per option; flags not given stay absent from the result.

    ``--help`` shows each option's value without its flag: from ``defaults`` (the selected sets) where given,
    with the set it comes from, else the declared default.
    """
    parser = OneLineParser(
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
            text = f"{option.help} ({option.describe_valid()}, {_shown_default(option, defaults)})"
            if option.type is bool:
                group.add_argument(f"--{option.name}", action=argparse.BooleanOptionalAction, help=text)
            else:
                metavar = option.describe_type() if option.choices else option.describe_type().upper()
                group.add_argument(f"--{option.name}", metavar=metavar, help=text)
    return parser


def _shown_default(option: Option, defaults: Optional[Config]) -> str:
    """``default: VALUE``, naming the set it comes from when a set gives it."""
    if defaults is None or defaults.sources.get(option.name, "default") == "default":
        return f"default: {option.default}"
    return f"default: {defaults.values[option.name]} from {defaults.sources[option.name]}"


def parse(options: Iterable[Option], argv: Optional[list] = None, description: str = "", prog: str = None):
    """Resolve the configuration for ``argv``; returns (Config, print_config_requested)."""
    options = {option.name: option for option in options}
    parser = build_parser(options.values(), description, prog, _defaults_for_help(options, argv))
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        flag = unknown[0].split("=")[0]
        if flag.startswith("--"):
            known = [name for name in options] + ["config_set", "project_file", "print_config"]
            parser.exit(2, f"error: {_unknown('flag', flag, ['--' + k for k in known], 'command line')}\n")
        if glob.has_magic(unknown[0]) or os.path.exists(unknown[0]):
            parser.exit(2, f"error: unexpected argument '{unknown[0]}': the shell expanded a file pattern into "
                           "several files; quote the pattern, e.g. --train_data 'out/x/train-*.tfrecord'\n")
        parser.exit(2, f"error: unexpected argument '{unknown[0]}' (see {parser.prog} --help)\n")
    cli = vars(args)
    config_set = cli.pop("config_set")
    project_file = cli.pop("project_file")
    print_config = cli.pop("print_config", False)
    config = _resolve(options, config_set, project_file, cli)
    config.values["config_set"] = config_set
    config.sources["config_set"] = "command line" if argv_has(argv, "--config_set") else "default"
    return config, print_config


def _defaults_for_help(options: dict, argv: Optional[list]) -> Optional[Config]:
    """The values of the sets ``argv`` selects, without the other flags: what --help shows as defaults (None when
    the sets cannot be read; the parse proper then reports why)."""
    selection = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    selection.add_argument("--config_set", default="default")
    selection.add_argument("--project_file", default="project.yaml")
    for name in ("hyperparameter_file", "hyperparameter_set"):
        if name in options:
            selection.add_argument(f"--{name}", default=argparse.SUPPRESS)
    chosen, _ = selection.parse_known_args(argv)
    chosen = vars(chosen)
    try:
        return _resolve(options, chosen.pop("config_set"), chosen.pop("project_file"), chosen)
    except ConfigError:
        return None


def _resolve(options: dict, config_set: str, project_file: str, cli: dict) -> Config:
    """Values and sources: declared defaults, then the project set, its hyperparameter set, then ``cli``."""
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
    return Config(values, sources)


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

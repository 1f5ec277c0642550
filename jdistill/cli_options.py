"""Command-line options generated from configuration dataclasses (:mod:`jdistill.train.groups`).

Every leaf of a configuration becomes ``--flat-name`` (``--learning-rate``), typed as its field,
with the field's help and default; the options of one group are listed together in ``--help``.
An option not given stays ``None`` in the parsed namespace, so that a command can tell given
values from a preset's and the defaults (:func:`given_values`, :func:`print_configuration`).
"""

import argparse
import contextlib
import dataclasses
import json
import sys
import types
import typing
import warnings
from collections.abc import Mapping

from jdistill.train import groups


def _sequence(kind):
    def parse(text: str) -> tuple:
        try:
            return tuple(kind(item) for item in text.split(",") if item.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}s separated by commas, got {text!r}")

    return parse


def _optional(kind):
    def parse(text: str):
        return None if text.lower() == "none" else kind(text)

    parse.__name__ = kind.__name__
    return parse


def argument_type(annotation):
    """The argparse ``type`` of a field annotated ``annotation``: ``X | None`` accepts ``none``."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return _optional(argument_type(args[0]))
    if typing.get_origin(annotation) is tuple:
        return _sequence(args[0])
    return annotation


def _shown(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return "none" if value is None else str(value)


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (not the usage block, then the error) and that
    takes no abbreviations of option names (a misspelt option is an error, not another option)."""

    def __init__(self, *args, allow_abbrev: bool = False, **kwargs):
        super().__init__(*args, allow_abbrev=allow_abbrev, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


@contextlib.contextmanager
def one_line_warnings(prog: str):
    """Inside the block a warning prints as one line, ``{prog}: warning: {message}``, instead of the
    file, line and source of the code that raised it."""
    formatwarning = warnings.formatwarning
    warnings.formatwarning = lambda message, category, *rest, **options: f"{prog}: warning: {message}\n"
    try:
        yield
    finally:
        warnings.formatwarning = formatwarning  # for a caller that imported the command's main


class DeprecatedAlias(argparse.Action):
    """An old option name: stores into the new option's destination and warns in one line."""

    def __init__(self, option_strings, dest, replacement: str, also=(), **kwargs):
        self.replacement, self.also = replacement, also
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(
            f"{parser.prog}: warning: {option_string} is deprecated; use {self.replacement}", file=sys.stderr
        )
        for dest in (self.dest, *self.also):
            setattr(namespace, dest, values)


def add_config_options(
    parser: argparse.ArgumentParser,
    config_class,
    *,
    skip=(),
    only=None,
    helps: Mapping[str, str] = {},
    required=(),
    listed=(),
    flags: Mapping[str, str] = {},
    parsers: Mapping[str, typing.Any] = {},
    choices: Mapping[str, tuple] = {},
    aliases: Mapping[str, str | tuple[str, ...]] = {},
    dynamic_defaults: Mapping[str, str] = {},
) -> None:
    """An option for every leaf of ``config_class`` in ``only`` (default: all) and not in ``skip``:
    ``flags[name]`` or ``--flat-name``, helped by the field's metadata (or ``helps[name]``), typed
    from the field (or ``parsers[name]``: a callable, or ``"append"`` for a repeatable option),
    ``choices[name]``; ``aliases`` maps old option names to flat names (deprecated: they warn; an
    old name may set several); the leaves of a group in ``dynamic_defaults`` show that text as
    their default (a default that depends on other options).
    Leaves in ``required`` must be given; those in ``listed`` are marked required in the help but
    checked by the command (a preset may give them)."""
    sections = {}
    flag_of = {}
    defaults = groups.leaf_defaults(config_class)
    for leaf in groups.leaves(config_class):
        if leaf.flat in skip or (only is not None and leaf.flat not in only):
            continue
        section_name = leaf.group or "run"
        if section_name not in sections:
            title = f"{section_name} options" if leaf.group else "options"
            group_field = next((f for f in dataclasses.fields(config_class) if f.name == leaf.group), None)
            about = group_field.metadata.get("help") if group_field else None  # a group's own help
            sections[section_name] = parser.add_argument_group(title, about)
        section = sections[section_name]
        flag = flag_of[leaf.flat] = flags.get(leaf.flat, "--" + leaf.flat.replace("_", "-"))
        default = defaults[leaf.flat]
        text = leaf.field.metadata.get("help") or helps[leaf.flat]
        if leaf.flat in (*required, *listed):
            text += " (required)"
        elif leaf.group in dynamic_defaults:
            text += f" (default: {dynamic_defaults[leaf.group]})"
        elif default is not dataclasses.MISSING and not isinstance(default, dict):
            text += f" (default: {_shown(default)})"
        kind = parsers.get(leaf.flat, argument_type(leaf.type))
        if kind == "append":
            section.add_argument(flag, dest=leaf.flat, action="append", default=None, help=text)
        elif leaf.type is bool:
            section.add_argument(
                flag, dest=leaf.flat, action=argparse.BooleanOptionalAction, default=None, help=text
            )
        else:
            section.add_argument(
                flag,
                dest=leaf.flat,
                type=kind,
                default=None,
                choices=choices.get(leaf.flat, leaf.field.metadata.get("choices")),
                required=leaf.flat in required,
                help=text,
            )
    for old, names in aliases.items():
        names = (names,) if isinstance(names, str) else names
        parser.add_argument(
            old,
            dest=names[0],
            action=DeprecatedAlias,
            replacement=" and ".join(flag_of[name] for name in names),
            also=names[1:],
            type=parsers.get(names[0], argument_type(groups.leaf_map(config_class)[names[0]].type)),
            help=argparse.SUPPRESS,
        )


def given_values(args: argparse.Namespace, config_class) -> dict:
    """The leaves of ``config_class`` given on the command line: ``{flat name: value}``."""
    return {
        name: getattr(args, name)
        for name in groups.leaf_map(config_class)
        if getattr(args, name, None) is not None
    }


def print_configuration(command: str, config, sources: Mapping[str, str]) -> None:
    """Every leaf of the run's configuration on standard error, one per line under its group, with
    where its value came from: ``sources[name]`` (``given``, ``preset crd``), else ``default``
    where it is the field's default and ``given`` where it is not."""
    lines = [f"jdistill {command}: configuration (value, then where it came from):"]
    values = groups.flat(config)
    defaults = groups.leaf_defaults(type(config), values)
    group = ()
    for leaf in groups.leaves(type(config)):
        if leaf.group != group and leaf.group is not None:
            lines.append(f" {leaf.group}:")
        group = leaf.group
        value = values[leaf.flat]
        source = sources.get(leaf.flat, "default" if value == defaults[leaf.flat] else "given")
        lines.append(f"  {leaf.flat:22s} {json.dumps(value):30s} {source}")
    print("\n".join(lines), file=sys.stderr)


def parse_weights(items: list[str]) -> dict[str, float]:
    """``["kd=0.9", "ce=0.1"]`` -> ``{"kd": 0.9, "ce": 0.1}``: the values of ``--weight`` options."""
    weights = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            weights[name] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise ValueError(f"--weight expects NAME=NUMBER (e.g. kd=0.9), got {item!r}")
    return weights

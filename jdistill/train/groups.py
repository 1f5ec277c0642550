"""Nested configuration dataclasses and their flat view.

A configuration (:class:`~jdistill.train.RunConfig`, a game's) is a frozen dataclass of *groups*
(frozen dataclasses: data, model, optimizer, loop, ...) and plain fields. Every leaf has one
*flat name*, unique within the configuration: its field name, except a group's ``name`` field,
which takes the group's name (``optimizer.name`` is ``optimizer``, ``model.name`` is ``model``),
and the leaves of a group declared with ``prefix``, for configurations with several groups of one
kind (``generator_optimizer.learning_rate`` is ``generator_learning_rate``). The flat names are
the command line's options (``--learning-rate``), the keywords a configuration accepts
(``RunConfig(model="mlp", dataset="digits", epochs=3, learning_rate=0.1)``), the names a
``config.json`` of the flat layout of jdistill 0.2 used, and the names a changed run reports.
Names a configuration had before (:attr:`Grouped.FORMER_NAMES`) still work, with a warning.

Each field carries its command-line help in its metadata (:func:`option`).
"""

import dataclasses
import functools
import json
import typing
import warnings
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar


def option(
    default=dataclasses.MISSING, *, help: str, prefix: str | None = None, choices: tuple = (), **kwargs
):
    """A dataclass field with its command-line ``help`` (and ``choices``); ``prefix`` on a group
    field names its leaves ``<prefix>_<leaf>``. Mutable defaults (dicts) go through
    ``default_factory``."""
    metadata = {
        "help": help,
        **({"prefix": prefix} if prefix else {}),
        **({"choices": choices} if choices else {}),
    }
    if isinstance(default, dict):
        return dataclasses.field(default_factory=lambda: dict(default), metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def is_group(cls) -> bool:
    return isinstance(cls, type) and dataclasses.is_dataclass(cls)


def field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One leaf of a configuration: its flat name, its path of field names, the dataclass field."""

    flat: str
    path: tuple[str, ...]
    field: dataclasses.Field
    type: Any
    group: str | None  # the group's field name (None for a top-level field)


def leaves(cls) -> tuple[Leaf, ...]:
    """The leaves of the configuration class ``cls``, in declaration order."""
    return _leaves(cls)


@functools.cache
def _leaves(cls) -> tuple[Leaf, ...]:
    return tuple(_walk(cls))


def _walk(cls) -> Iterator[Leaf]:
    types = field_types(cls)
    for field in dataclasses.fields(cls):
        kind = types[field.name]
        if is_group(kind):
            prefix = field.metadata.get("prefix")
            group_types = field_types(kind)
            for inner in dataclasses.fields(kind):
                if inner.name == "name":
                    flat = field.name
                else:
                    flat = f"{prefix}_{inner.name}" if prefix else inner.name
                yield Leaf(flat, (field.name, inner.name), inner, group_types[inner.name], field.name)
        else:
            yield Leaf(field.name, (field.name,), field, kind, None)


@functools.cache
def leaf_map(cls) -> dict[str, Leaf]:
    """``{flat name: leaf}`` (do not modify it); a name used twice is a defect of ``cls``."""
    mapped = {}
    for leaf in leaves(cls):
        if leaf.flat in mapped:
            raise TypeError(f"{cls.__name__}: two leaves are named {leaf.flat!r}; declare a prefix")
        mapped[leaf.flat] = leaf
    return mapped


def flat(config) -> dict[str, Any]:
    """``{flat name: value}`` of a configuration instance."""
    values = {}
    for leaf in leaves(type(config)):
        value = config
        for name in leaf.path:
            value = getattr(value, name)
        values[leaf.flat] = value
    return values


def default_of(field: dataclasses.Field):
    """A field's default (``MISSING`` when it has none)."""
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def leaf_defaults(cls, values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``{flat name: default}`` of ``cls``'s leaves (``MISSING`` where there is none): a group
    field's default instance gives its leaves' defaults, else the group class's fields; with the
    flat ``values`` of a configuration, the groups its :meth:`Grouped.default_groups` gives."""
    group_fields = {f.name: f for f in dataclasses.fields(cls)}
    defaults = {}
    for flat, leaf in leaf_map(cls).items():
        group = default_of(group_fields[leaf.group]) if leaf.group else dataclasses.MISSING
        defaults[flat] = (
            default_of(leaf.field) if group is dataclasses.MISSING else getattr(group, leaf.path[1])
        )
    if values is not None and hasattr(cls, "default_groups"):
        for name, group in cls.default_groups(values).items():
            defaults.update(_flat_group(leaf_map(cls), name, group))
    return defaults


def grouped(cls, given: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``cls``'s fields: the groups in ``given`` (instances) or built from
    their defaults, with the flat ``values`` set on top. An unknown flat name is a ``TypeError``
    that lists the known ones, as a misspelt keyword argument is."""
    known = leaf_map(cls)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise TypeError(
            f"{cls.__name__} got unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    changes: dict[str, dict[str, Any]] = {}
    top = {}
    for name, value in values.items():
        leaf = known[name]
        if leaf.group is None:
            top[name] = value
        else:
            changes.setdefault(leaf.group, {})[leaf.path[1]] = value
    types = field_types(cls)
    kwargs = {}
    for field in dataclasses.fields(cls):
        if not is_group(types[field.name]):
            if field.name in top:
                kwargs[field.name] = top[field.name]
            elif field.name in given:
                kwargs[field.name] = given[field.name]
            continue
        group = given.get(field.name, default_of(field))
        if group is dataclasses.MISSING:
            inner = changes.get(field.name, {})
            missing = [
                f.name for f in dataclasses.fields(types[field.name])
                if f.name not in inner and default_of(f) is dataclasses.MISSING
            ]  # fmt: skip
            if missing:
                names = ", ".join(_flat_name(known, field.name, m) for m in missing)
                raise TypeError(f"{cls.__name__} needs {names}")
            kwargs[field.name] = types[field.name](**inner)
        elif field.name in changes:
            kwargs[field.name] = dataclasses.replace(group, **changes[field.name])
        else:
            kwargs[field.name] = group
    return kwargs


def _flat_name(known: Mapping[str, Leaf], group: str, name: str) -> str:
    return next(flat for flat, leaf in known.items() if leaf.path == (group, name))


def from_record(cls, record: Mapping[str, Any]):
    """An instance of ``cls`` from its ``config.json`` form: nested (``{"optimizer": {...}}``) or the
    flat layout of jdistill 0.2 (``{"learning_rate": ...}``); fields the record lacks (added to the
    library after it was written) take their defaults."""
    types = field_types(cls)
    given, values = {}, {}
    for name, value in migrated(cls, record, warn=False).items():
        if name in types and is_group(types[name]) and isinstance(value, Mapping):
            given[name] = types[name](**value)
        else:
            values[name] = value
    return cls(**given, **values)


def flat_record(cls, record: Mapping[str, Any]) -> dict[str, Any]:
    """A ``config.json`` form of ``cls`` (nested or flat) as ``{flat name: JSON value}``, every leaf
    the record lacks at its default; names ``cls`` does not know are kept as they are."""
    known = leaf_map(cls)
    by_path = {leaf.path: flat for flat, leaf in known.items()}
    group_names = {leaf.group for leaf in known.values()} - {None}
    values = {}
    for name, value in migrated(cls, record, warn=False).items():
        if name in group_names and isinstance(value, Mapping):
            for inner, inner_value in value.items():
                values[by_path.get((name, inner), f"{name}.{inner}")] = inner_value
        else:
            values[name] = value
    defaults = leaf_defaults(cls, values)
    defaults = {k: v for k, v in defaults.items() if k not in values and v is not dataclasses.MISSING}
    return {**json.loads(json.dumps(defaults)), **values}


def _flat_group(known: Mapping[str, Leaf], name: str, group) -> dict[str, Any]:
    return {flat: getattr(group, leaf.path[1]) for flat, leaf in known.items() if leaf.group == name}


def migrated(cls, values: Mapping[str, Any], warn: bool) -> dict[str, Any]:
    """``values`` with the former flat names of ``cls`` (:attr:`Grouped.FORMER_NAMES`) replaced
    by the current ones, warning once per name when ``warn``."""
    former = getattr(cls, "FORMER_NAMES", {})
    current = {}
    for name, value in values.items():
        if name not in former:
            current[name] = value
            continue
        targets = (former[name],) if isinstance(former[name], str) else former[name]
        if warn:
            warnings.warn(
                f"{cls.__name__}: {name} is deprecated; use {' and '.join(targets)}", DeprecationWarning, 3
            )
        for target in targets:
            current.setdefault(target, value)
    return current


class Grouped:
    """Base of a configuration of groups and plain fields (a frozen dataclass declared with
    ``init=False``): built from groups, flat names, or both (flat names set fields of the groups
    given); :meth:`replace` changes flat names or whole groups; a flat read (``config.epochs``
    for ``config.loop.epochs``) works with a deprecation warning. :meth:`default_groups` may give
    groups whose defaults depend on other values (a method's published optimizer)."""

    FORMER_NAMES: ClassVar[Mapping[str, str | tuple[str, ...]]] = {}
    POSITIONAL: ClassVar[tuple[str, ...]] = ()  # flat names of positional arguments (default: the fields)

    def __init__(self, *args, **values):
        cls = type(self)
        names = list(cls.POSITIONAL) or [f.name for f in dataclasses.fields(cls)]
        if len(args) > len(names):
            raise TypeError(f"{cls.__name__} takes at most {len(names)} positional arguments")
        for name, value in zip(names, args):
            if name in values:
                raise TypeError(f"{cls.__name__} got {name!r} twice")
            values[name] = value
        group_fields = {leaf.group for leaf in leaves(cls)} - {None}
        values = {k: v for k, v in values.items() if not (k in group_fields and v is None)}
        names = [k for k in group_fields if isinstance(values.get(k), str)]  # a group's name leaf
        plain = {f.name for f in dataclasses.fields(cls)} - group_fields
        instances = [k for k in group_fields if k in values and k not in names]
        if names and instances and group_fields | plain <= values.keys():
            raise TypeError(
                f"{cls.__name__}: {names[0]} given as a name beside every field (as dataclasses.replace "
                f"passes them) would reset the rest of its group; use config.replace({names[0]}=...)"
            )
        given = {k: values.pop(k) for k in list(values) if k in group_fields and k not in names}
        self._assign(given, migrated(cls, values, warn=True))

    def _assign(self, given: dict, values: dict) -> None:
        defaults = {k: v for k, v in type(self).default_groups(values).items() if k not in given}
        for name, value in grouped(type(self), {**defaults, **given}, values).items():
            object.__setattr__(self, name, value)
        self.__post_init__()

    def __post_init__(self):
        pass

    @classmethod
    def default_groups(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """Groups to use where none is given, from the flat ``values`` given (default: none)."""
        return {}

    def replace(self, **values):
        """A copy with ``values`` changed: flat names (``learning_rate=0.1``, ``model="mlp"``) or
        whole groups (``optimizer=OptimizerConfig(...)``)."""
        given = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        groups_here = {leaf.group for leaf in leaves(type(self))} - {None}
        for name in [k for k, v in values.items() if k in groups_here and not isinstance(v, str)]:
            given[name] = values.pop(name)
        values = migrated(type(self), values, warn=True)
        plain = {k: values.pop(k) for k in list(values) if k in given and k not in groups_here}
        copy = object.__new__(type(self))
        copy._assign({**given, **plain}, values)
        return copy

    def flat(self) -> dict[str, Any]:
        """``{flat name: value}`` of every leaf."""
        return flat(self)

    def __getattr__(self, name: str):
        cls = type(self)
        if name.startswith("__"):
            raise AttributeError(name)
        current = migrated(cls, {name: None}, warn=False)
        leaf = leaf_map(cls).get(next(iter(current)))
        if leaf is None or leaf.group is None:
            raise AttributeError(f"{cls.__name__!r} object has no attribute {name!r}")
        warnings.warn(
            f"{cls.__name__}.{name} is deprecated; use {cls.__name__}.{'.'.join(leaf.path)}",
            DeprecationWarning,
            2,
        )
        return getattr(getattr(self, leaf.path[0]), leaf.path[1])

"""Nested configuration dataclasses and their flat view.

A configuration (:class:`~jdistill.train.RunConfig`, a game's) is a frozen dataclass of *groups*
(frozen dataclasses: data, model, optimizer, loop, ...) and plain fields. Every leaf has one
*flat name*, unique within the configuration: its field name, except a group's ``name`` field,
which takes the group's name (``optimizer.name`` is ``optimizer``, ``model.name`` is ``model``),
and the leaves of a group declared with ``prefix`` (``generator.learning_rate`` is
``generator_learning_rate``), for configurations with several groups of one kind. The flat names
are the command line's options (``--learning-rate``), the keywords a configuration accepts
(``RunConfig(model="mlp", dataset="digits", epochs=3, learning_rate=0.1)``), the names a
``config.json`` of the flat layout of jdistill 0.2 used, and the names a changed run reports.

Each field carries its command-line help in its metadata (:func:`option`).
"""

import dataclasses
import json
import typing
from collections.abc import Iterator, Mapping
from typing import Any


def option(default=dataclasses.MISSING, *, help: str, prefix: str | None = None, **kwargs):
    """A dataclass field with its command-line ``help``; ``prefix`` on a group field names its
    leaves ``<prefix>_<leaf>``. Mutable defaults (dicts) go through ``default_factory``."""
    metadata = {"help": help, **({"prefix": prefix} if prefix else {})}
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


def leaves(cls) -> Iterator[Leaf]:
    """The leaves of the configuration class ``cls``, in declaration order."""
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


def leaf_map(cls) -> dict[str, Leaf]:
    """``{flat name: leaf}``; a name used twice is a defect of ``cls``."""
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
        group = given.get(field.name)
        if group is None:
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
    for name, value in record.items():
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
    for name, value in record.items():
        if name in group_names and isinstance(value, Mapping):
            for inner, inner_value in value.items():
                values[by_path.get((name, inner), f"{name}.{inner}")] = inner_value
        else:
            values[name] = value
    defaults = {
        flat: default_of(leaf.field)
        for flat, leaf in known.items()
        if flat not in values and default_of(leaf.field) is not dataclasses.MISSING
    }
    return {**json.loads(json.dumps(defaults)), **values}

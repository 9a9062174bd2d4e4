"""Stage configs: one dataclass per stage, each field documented once.

Fields are declared with `opt(default, "help", ge=…, gt=…, le=…, lt=…, choices=…)`; the CLI's
options and `--help` are generated from them, YAML files (`--config`) fill them,
and the resolved config is saved with each run as `config.yaml`. Every
`__post_init__` starts with `check_fields(self)`: each value is converted to its
declared type and checked against its declared bounds, whether it came from YAML,
the command line or Python, and a bad one raises `InputError(field=...)`;
rules that join several fields follow it, with `require`.

A field whose type is itself a config dataclass (the sweep's `ppo`) is filled from
a YAML mapping (`ppo: {lr: 1.0e-5}`) or from the nested class's own options
(`--lr 1e-5`; with `opt(..., flag_prefix="rm-")` `--rm-lr 1e-5`, so that a parent may hold several);
`opt(..., per_run=(...))` names the nested fields that the parent sets itself: they are neither options
nor YAML keys, and `config.yaml` omits them.
"""

import argparse
import dataclasses
import math
import operator
import os
import types
import typing
from pathlib import Path

import yaml

from tether.errors import InputError
from tether.io import write_text_atomic

BOUNDS = {"ge": (operator.ge, ">="), "gt": (operator.gt, ">"), "le": (operator.le, "<="), "lt": (operator.lt, "<")}


def opt(default, help: str, **kw):
    """A config field with its one documentation string; `ge`/`gt`/`le`/`lt` bound it and `choices` lists the
    values it may take (each item of a list; None, where the type allows it, is neither bounded nor a choice)."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return dataclasses.field(default=default, metadata={"help": help, **kw})


def require(cond: bool, field: str, message: str) -> None:
    """Raise InputError naming `field` unless `cond` holds."""
    if not cond:
        raise InputError(message, field=field)


def _optional(tp) -> tuple[object, bool]:
    """(the type without None, whether None is allowed) of an annotation such as `str | None`."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(tp))
    return tp, False


def _to_bool(value) -> bool:
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise ValueError
    return value


def _to_int(value) -> int:
    """An int, a string of digits, or an integral float ("8.0")."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            value = float(value)
    if isinstance(value, float) and not value.is_integer():
        raise ValueError
    return int(value)


def _to_float(value) -> float:
    """A number, or a string that reads as one: YAML 1.1 reads `1e-5` (no dot) as the string "1e-5"."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)) or math.isnan(float(value)):
        raise ValueError
    return float(value)


def _to_str(value) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise ValueError
    return os.fspath(value)


def _to_dict(value) -> dict:
    if not isinstance(value, dict):
        raise ValueError
    return value


SCALARS = {bool: (_to_bool, "true or false"), int: (_to_int, "an integer"), float: (_to_float, "a number"),
           str: (_to_str, "a string"), dict: (_to_dict, "a mapping")}


def _expected(tp) -> str:
    tp, nullable = _optional(tp)
    if typing.get_origin(tp) is list:
        text = f"{_expected(typing.get_args(tp)[0])} or a list of them"
    elif dataclasses.is_dataclass(tp):
        text = f"a mapping of {tp.__name__} keys"
    else:
        text = SCALARS[tp][1]
    return text + (" or null" if nullable else "")


def convert(value, tp, field: str):
    """`value` as the annotation `tp`, or InputError naming `field` and what was expected.

    None only where `tp` allows it; a list from a list or a single value (`x` → [x]);
    a config dataclass from a mapping of its fields (errors name `field.key`).
    """
    base, nullable = _optional(tp)
    if value is None and nullable:
        return None
    if dataclasses.is_dataclass(base) and isinstance(value, (base, dict)):
        return value if isinstance(value, base) else _nested(base, value, field)
    try:
        if typing.get_origin(base) is list and value is not None:
            items = value if isinstance(value, (list, tuple)) else [value]
            return [SCALARS[typing.get_args(base)[0]][0](v) for v in items]
        return SCALARS[base][0](value)
    except (TypeError, ValueError, KeyError):
        raise InputError(f"expected {_expected(tp)}, got {'null' if value is None else repr(value)}", field=field) from None


def _nested(cls, values: dict, field: str):
    names = {f.name for f in dataclasses.fields(cls)}
    values = {str(k).replace("-", "_"): v for k, v in values.items()}
    for key in values:
        require(key in names, f"{field}.{key}", f"unknown config key (known: {', '.join(sorted(names))})")
    try:
        return cls(**values)
    except InputError as e:
        raise InputError(e.message, path=e.path, line=e.line, field=f"{field}.{e.field}" if e.field else field) from None


def _check_bounds(value, f: dataclasses.Field) -> None:
    """Each item (None aside) within the field's `ge`/`gt`/`le`/`lt` bounds and among its `choices`."""
    for item in value if isinstance(value, list) else [value]:
        if item is None:
            continue
        for key, (holds, sign) in BOUNDS.items():
            if key in f.metadata:
                require(holds(item, f.metadata[key]), f.name, f"must be {sign} {f.metadata[key]}, got {item}")
        choices = f.metadata.get("choices")
        if choices is not None:
            require(item in choices, f.name, f"must be one of {', '.join(map(str, choices))}, got {item!r}")


def check_fields(cfg) -> None:
    """Convert every field of the dataclass `cfg` to its declared type and check its bounds, in place."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = convert(getattr(cfg, f.name), hints[f.name], f.name)
        _check_bounds(value, f)
        setattr(cfg, f.name, value)


def _help(f: dataclasses.Field) -> str:
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    bounds = "".join(f"; {sign} {f.metadata[key]}" for key, (_, sign) in BOUNDS.items() if key in f.metadata)
    if "choices" in f.metadata:
        bounds += f"; one of {', '.join(map(str, f.metadata['choices']))}"
    return f"{f.metadata.get('help', '')} (default: {f.metadata.get('default_text', default)}{bounds})"


def _add_fields(parser, cls, prefix: str = "", skip=(), flag_prefix: str = "") -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        base, _ = _optional(hints[f.name])
        if f.name in skip or base is dict:
            continue  # set by the parent config, or a mapping (YAML only)
        if dataclasses.is_dataclass(base):
            flags = f.metadata.get("flag_prefix", "")
            title = f"{f.name} settings ({base.__name__}; YAML: a `{f.name}:` mapping" + (f"; --{flags}NAME" if flags else "")
            group = parser.add_argument_group(title + ")", f.metadata.get("help"))
            _add_fields(group, base, f"{f.name}.", f.metadata.get("per_run", ()), flags)
            continue
        kwargs = dict(dest=prefix + f.name, default=argparse.SUPPRESS, help=_help(f), metavar=f.name.upper())
        if typing.get_origin(base) is list:
            kwargs["nargs"] = "+"
        if base is bool:
            kwargs.update(metavar="{true,false}", nargs="?", const=True)  # `--flag` alone means true
        parser.add_argument("--" + flag_prefix + f.name.replace("_", "-"), **kwargs)


def add_config_args(parser: argparse.ArgumentParser, cls) -> None:
    """Add `--field-name` for every field of dataclass `cls` (and of its nested config, dest "ppo.lr").

    Values stay strings here and defaults unset, so that YAML can fill them and the
    dataclass converts and checks every value in one place.
    """
    _add_fields(parser, cls)


def load_yaml_config(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path=path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig")) or {}
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        raise InputError(f"invalid YAML: {getattr(e, 'problem', e)}", path=path,
                         line=None if line is None else line + 1) from None
    if not isinstance(data, dict):
        raise InputError("expected a mapping of config keys", path=path)
    return data


def _yaml_values(cls, path) -> dict:
    """The YAML file's keys (dashes as underscores); a key that is no field of `cls` is an error."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values = {str(k).replace("-", "_"): v for k, v in load_yaml_config(path).items()}
    for key in values:
        if key not in fields:
            homes = [f"`{name}:`" for name in fields if dataclasses.is_dataclass(_optional(hints[name])[0])
                     and key in {f.name for f in dataclasses.fields(_optional(hints[name])[0])}
                     and key not in fields[name].metadata.get("per_run", ())]
            where = f"it belongs in the {' or '.join(homes)} mapping" if homes else f"known: {', '.join(sorted(fields))}"
            raise InputError(f"unknown config key ({where})", path=path, field=key)
    return values


def _dotted_keys(values: dict) -> set:
    return set(values) | {f"{k}.{sub}" for k, v in values.items() if isinstance(v, dict) for sub in v}


def build_config(cls, overrides: dict, yaml_path=None):
    """Instantiate `cls` from YAML (if given), then command-line overrides ("ppo.lr" sets a nested field).

    Unknown keys are errors; an error about a value that came from the YAML file names the file.
    """
    values = _yaml_values(cls, yaml_path) if yaml_path else {}
    from_yaml = _dotted_keys(values)
    for key, value in overrides.items():
        head, _, nested = key.partition(".")
        if not nested:
            values[head] = value
        elif isinstance(values.setdefault(head, {}), dict):
            values[head] = {**values[head], nested: value}
    hints = typing.get_type_hints(cls)
    try:
        for key, value in values.items():  # nested configs convert in their parent's __post_init__
            if not dataclasses.is_dataclass(_optional(hints[key])[0]):
                values[key] = convert(value, hints[key], key)
        return cls(**values)
    except InputError as e:
        if yaml_path and e.path is None and e.field in from_yaml and e.field not in overrides:
            raise InputError(e.message, path=yaml_path, line=e.line, field=e.field) from None
        raise


def _plain(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(x) for x in value]
    if dataclasses.is_dataclass(value):
        return to_dict(value)
    return value


def to_dict(cfg) -> dict:
    """Plain dict of a config (Paths as strings; a nested config without its `per_run` fields), as saved in `config.yaml`."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = _plain(getattr(cfg, f.name))
        per_run = f.metadata.get("per_run", ())
        out[f.name] = {k: v for k, v in value.items() if k not in per_run} if per_run else value
    return out


def save_config(cfg, path) -> None:
    write_text_atomic(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))

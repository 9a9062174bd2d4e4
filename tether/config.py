"""Stage configs: one dataclass per stage, each field documented once.

Fields are declared with `opt(default, "help")`; the CLI's options and `--help`
are generated from them, YAML files (`--config`) fill them, and the resolved
config is saved with each run as `config.yaml`. Validation lives in each
dataclass's `__post_init__` and raises `InputError(field=...)`.
"""

import argparse
import dataclasses
import types
import typing
from pathlib import Path

import yaml

from tether.errors import InputError
from tether.io import write_text_atomic


def opt(default, help: str, **kw):
    """A config field with its one documentation string."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return dataclasses.field(default=default, metadata={"help": help, **kw})


def require(cond: bool, field: str, message: str) -> None:
    """Raise InputError naming `field` unless `cond` holds."""
    if not cond:
        raise InputError(message, field=field)


def _base_type(tp):
    """(scalar type, is_list) of a field annotation such as `float`, `list[float]`, `str | None`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    if origin is list:
        return typing.get_args(tp)[0], True
    return tp, False


def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _converter(scalar):
    return _parse_bool if scalar is bool else scalar


def add_config_args(parser: argparse.ArgumentParser, cls) -> None:
    """Add `--field-name` for every field of dataclass `cls`; defaults stay unset so YAML can fill them."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        scalar, is_list = _base_type(hints[f.name])
        if scalar is dict:
            continue  # mappings are set in the YAML file only
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kwargs = dict(dest=f.name, default=argparse.SUPPRESS, type=_converter(scalar),
                      help=f"{f.metadata.get('help', '')} (default: {default})")
        if is_list:
            kwargs["nargs"] = "+"
        if scalar is bool:
            kwargs.update(metavar="{true,false}", nargs="?", const=True)  # `--flag` alone means true
        parser.add_argument("--" + f.name.replace("_", "-"), **kwargs)


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


def build_config(cls, overrides: dict, yaml_path=None):
    """Instantiate `cls` from YAML (if given) then command-line overrides; unknown keys are errors."""
    values = load_yaml_config(yaml_path) if yaml_path else {}
    names = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key.replace("-", "_") not in names:
            raise InputError(f"unknown config key (known: {', '.join(sorted(names))})", path=yaml_path, field=key)
    values = {k.replace("-", "_"): v for k, v in values.items()}
    values.update(overrides)
    try:
        return cls(**values)
    except TypeError as e:
        raise InputError(str(e), path=yaml_path) from None


def to_dict(cfg) -> dict:
    """Plain dict of a config (Paths as strings), as saved in `config.yaml`."""
    def plain(v):
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if dataclasses.is_dataclass(v):
            return to_dict(v)
        return v
    return {f.name: plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def save_config(cfg, path) -> None:
    write_text_atomic(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))

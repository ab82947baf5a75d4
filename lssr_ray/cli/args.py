"""Command-line options generated from a config dataclass: one place says what a setting means.

Every field becomes ``--field-name`` with its type, default, choices (:func:`lssr_ray.config.choice_field`)
and its docstring as help (:func:`lssr_ray.config.field_help`); a nested config dataclass field
(``MapConfig.grid``) contributes its own fields. ``bool`` fields take ``--x`` / ``--no-x``;
``tuple[str, ...]`` fields take a comma-separated list; mapping fields take a YAML mapping.
:func:`config_from_args` turns the parsed namespace back into the dataclass.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import sys
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import yaml

from lssr_ray.config import field_help, field_types
from lssr_ray.errors import ConfigError

T = TypeVar("T")

_SEP = "."  # dest of a nested field: "grid.chip_size"


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _yaml_mapping(text: str) -> dict[str, Any]:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise argparse.ArgumentTypeError(f"not valid YAML: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a YAML mapping such as '{{key: value}}', got {text!r}")
    return value


def _converter(kind: Any) -> Any:
    origin = typing.get_origin(kind)
    if origin is tuple:
        return _comma_list
    if kind is Mapping or origin in (Mapping, dict) or kind is dict:
        return _yaml_mapping
    if kind in (int, float, str):
        return kind
    raise TypeError(f"no command-line form for a field of type {kind!r}")


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _plain(text: str) -> str:
    """A docstring sentence for a terminal: Sphinx roles and literal quotes dropped."""
    return re.sub(r":\w+:`~?([^`]+)`", r"\1", text).replace("``", "")


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return str(value)


def add_config_args(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    flags: Mapping[str, str] | None = None,
    exclude: Iterable[str] = (),
    choices: Mapping[str, tuple[str, ...]] | None = None,
    exclusive: Iterable[str] = (),
    overrides_only: bool = False,
    prefix: str = "",
) -> None:
    """Add one option per field of ``cls`` (and of its nested config dataclasses) to ``parser``.

    ``flags`` renames options (field name -> ``--flag``, e.g. ``{"num_actors": "--actors"}``);
    ``exclude`` leaves fields out (they keep their defaults); ``choices`` adds choices known
    only to the caller; fields in ``exclusive`` form one required mutually exclusive group.
    ``overrides_only``: an absent option leaves no attribute (for settings layered over a YAML
    file), and the help shows the dataclass default.
    """
    flags, choices, exclude, exclusive = dict(flags or {}), dict(choices or {}), set(exclude), list(exclusive)
    helps, types = field_help(cls), field_types(cls)
    group = parser.add_mutually_exclusive_group(required=True) if exclusive else None
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        kind, default = types[f.name], _default_of(f)
        if dataclasses.is_dataclass(kind):
            add_config_args(parser, kind, flags=flags, exclude=exclude, choices=choices,
                            overrides_only=overrides_only, prefix=f"{prefix}{f.name}{_SEP}")
            continue
        opts: dict[str, Any] = {"dest": prefix + f.name}
        text = _plain(helps.get(f.name, ""))
        if kind is bool:  # an off-by-default switch is one flag; an on-by-default one also has --no-x
            opts["action"] = "store_true" if default is False and not overrides_only else argparse.BooleanOptionalAction
        else:
            opts["type"] = _converter(kind)
            opts["metavar"] = f.name.upper()
        if default is dataclasses.MISSING:
            opts["required"] = f.name not in exclusive
        else:
            opts["default"] = argparse.SUPPRESS if overrides_only else default
            if default is not None and (overrides_only or kind is not bool):
                text += f" (default {_shown(default)})"
        pick = choices.get(f.name) or f.metadata.get("choices")
        if pick:
            opts["choices"] = pick
            opts.pop("metavar", None)
        opts["help"] = text.replace("%", "%%")
        target = group if f.name in exclusive else parser
        target.add_argument(flags.get(f.name, "--" + f.name.replace("_", "-")), **opts)


def config_values(ns: argparse.Namespace, cls: type, prefix: str = "") -> dict[str, Any]:
    """The fields of ``cls`` found in ``ns`` (nested configs as nested dicts; absent ones left out)."""
    out: dict[str, Any] = {}
    types = field_types(cls)
    for f in dataclasses.fields(cls):
        kind = types[f.name]
        if dataclasses.is_dataclass(kind):
            nested = config_values(ns, kind, f"{prefix}{f.name}{_SEP}")
            if nested:
                out[f.name] = nested
        elif hasattr(ns, prefix + f.name):
            out[f.name] = getattr(ns, prefix + f.name)
    return out


def config_from_args(ns: argparse.Namespace, cls: type[T]) -> T:
    """Build ``cls`` from a namespace parsed with :func:`add_config_args` (validated by ``cls``)."""
    from lssr_ray.config import from_dict

    return from_dict(cls, config_values(ns, cls))


class _CliFormat(logging.Formatter):
    """Notes and plans as they are; warnings and errors with their level in front."""

    def format(self, record: logging.LogRecord) -> str:
        msg = super().format(record)
        return msg if record.levelno < logging.WARNING else f"{record.levelname}: {msg}"


def configure_logging(debug: bool = False) -> None:
    """Library modules log through :mod:`logging`; a job shows INFO (``--debug``: DEBUG) on stderr.

    One handler on the ``lssr_ray`` logger, replaced (not added again) when a job's ``main`` runs
    twice in one process, as the tests do.
    """
    lib = logging.getLogger("lssr_ray")
    for old in [h for h in lib.handlers if getattr(h, "_lssr_cli", False)]:
        lib.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_CliFormat("%(message)s"))
    handler._lssr_cli = True  # type: ignore[attr-defined]
    lib.addHandler(handler)
    lib.setLevel(logging.DEBUG if debug else logging.INFO)


def parse_set_items(items: Iterable[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings (values parsed as YAML) as a dict; a malformed one is a ConfigError."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({exc})") from None
    return out


__all__ = ["add_config_args", "config_from_args", "config_values", "configure_logging", "parse_set_items"]

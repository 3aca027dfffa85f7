"""Options declared once, as dataclass fields: ``x: int = option(5, least=1, help=...)``.

A field made with :func:`option` carries an :class:`Option` in its metadata: its help, parser,
choices, least value, help group and role in ``fsbench sweep``. From it are derived the
command-line flags (``--`` and the field's name with dashes; :func:`add_arguments`), the values
read from a TOML file or a comma-separated list (:meth:`Option.convert`) and the checks of a
built dataclass (:func:`check_fields`). :class:`fsbench.config.RunConfig` declares every run
option this way, and an executor plugin declares its own ``fsbench sweep`` options the same way
(:class:`fsbench.hookspecs.ExecutorRecord`).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsbench.errors import ConfigError

__all__ = [
    "AXIS", "EACH", "OVERRIDES", "SINGLE", "SWITCH", "TRISTATE", "VALUE", "Option",
    "add_arguments", "check_fields", "from_namespace", "given", "option", "options_of", "parse_bool", "parse_int",
    "parse_path", "parse_str",
]

# How a flag takes its value (Option.kind).
VALUE = "value"  # --flag VALUE
SWITCH = "switch"  # --flag alone (False by default)
TRISTATE = "tristate"  # --flag / --no-flag, None by default; in a sweep: on, off or default
EACH = "each"  # --flag A,B (repeatable): one run per value (fsbench run --seed 0,1,2)
OVERRIDES = "overrides"  # --config FILE and --set SECTION.FIELD=VALUE (fsbench.config)

SET_METAVAR = "SECTION.FIELD=VALUE"
SET_HELP = "override one setting, e.g. --set episodic.iterations=200 (repeatable)"

# Its role in `fsbench sweep` (Option.sweep).
AXIS = "axis"  # a list: the sweep is the cartesian product of the axes
SINGLE = "single"  # one value for the whole sweep (where results and caches go)


def parse_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise ValueError("empty string")
    return text


def parse_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("a boolean is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise ValueError(f"expected an integer, got {value!r}") from None
    raise ValueError(f"expected an integer, got {type(value).__name__}")


def parse_path(value: Any) -> Path:
    return Path(parse_str(str(value) if isinstance(value, Path) else value)).expanduser()


_BOOLS = {"on": True, "true": True, "yes": True, "1": True,
          "off": False, "false": False, "no": False, "0": False, "default": None}


def parse_bool(value: Any) -> bool | None:
    """``on``/``off``/``default`` (and true/false, yes/no, 1/0) -> True/False/None."""
    if value is None or isinstance(value, bool):
        return value
    key = str(value).strip().lower()
    if key not in _BOOLS:
        raise ValueError("expected on, off or default")
    return _BOOLS[key]


@dataclass(frozen=True)
class Option:
    """One option, as declared on its dataclass field."""

    help: str
    parse: Callable[[Any], Any] = parse_str  # a command-line string or a file's value -> the value
    choices: tuple[str, ...] = ()
    least: int | None = None  # numbers: the smallest valid value
    why: str = ""  # why ``least`` (said in the error)
    kind: str = VALUE
    sweep: str = AXIS  # AXIS, SINGLE or "" (not a sweep option)
    group: str = ""  # the --help group ("": the parser's own)
    metavar: str | None = None
    flag: str = ""  # default: "--" + the field's name with dashes
    #: Part of what a run is (its name's hash, :attr:`fsbench.runner.Run.key`); False for where
    #: results go and what computes them, and for a value the key takes resolved instead.
    in_key: bool = True

    def check(self, value: Any) -> None:
        """ValueError (a message without the flag) unless ``value`` is a valid parsed value."""
        if self.choices and value not in self.choices:
            raise ValueError(f"must be one of {', '.join(self.choices)}, got {value!r}")
        if self.least is not None and value < self.least:
            why = f" ({self.why})" if self.why else ""
            raise ValueError(f"must be at least {self.least}{why}, got {value}")

    def convert(self, raw: Any) -> Any:
        """A command-line string or a file's value, parsed and checked (ValueError if invalid)."""
        value = self.parse(raw)
        self.check(value)
        return value

    def argtype(self) -> Callable[[str], Any]:
        """The parser as argparse's ``type``: a value that does not parse is a usage error;
        choices are argparse's, other checks :func:`check_fields`'."""

        def parse(text: str) -> Any:
            try:
                return self.parse(text)
            except ValueError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None

        parse.__name__ = self.parse.__name__.removeprefix("parse_") or "value"
        return parse


def option(default: Any = dataclasses.MISSING, *, help: str,
           default_factory: Any = dataclasses.MISSING, **spec: Any) -> Any:
    """A dataclass field that is an option: ``default`` and the :class:`Option` fields."""
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={"option": Option(help=help, **spec)})


@dataclass(frozen=True)
class Declared:
    """An option with its field: name, flag and default."""

    name: str
    option: Option
    default: Any  # dataclasses.MISSING when required

    @property
    def flag(self) -> str:
        return self.option.flag or "--" + self.name.replace("_", "-")


def options_of(cls: type) -> Iterator[Declared]:
    """The options ``cls`` declares, in field order."""
    for f in dataclasses.fields(cls):
        opt = f.metadata.get("option")
        if opt is None:
            continue
        default = f.default
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        yield Declared(f.name, opt, default)


def _help(d: Declared) -> str:
    """The help text, with the default when it is a value worth saying."""
    shown = (d.default is not None and d.default is not dataclasses.MISSING
             and d.option.kind in (VALUE, EACH))
    return f"{d.option.help} (default {d.default})" if shown else d.option.help


def add_arguments(parser: Any, cls: type, *, required: tuple[str, ...] = (),
                  groups: dict[str, Any] | None = None, skip: tuple[str, ...] = (),
                  prefix: str = "") -> None:
    """``cls``'s options as flags of ``parser`` (or of an argument group); each parses into the
    attribute ``prefix`` + its field's name (:func:`from_namespace` reads them back).

    ``groups`` (title -> argument group) is filled as groups are first needed. An option of kind
    OVERRIDES is two flags: its own (a file, into ``config``) and ``--set`` (a list, into ``set``).
    Values are parsed here and checked by :func:`check_fields` (one-line errors, not usage).
    """
    groups = {} if groups is None else groups
    for d in options_of(cls):
        opt = d.option
        if d.name in skip:
            continue
        where = parser
        if opt.group:
            if opt.group not in groups:
                groups[opt.group] = parser.add_argument_group(opt.group)
            where = groups[opt.group]
        kwargs: dict[str, Any] = {"dest": prefix + d.name, "help": _help(d)}
        if opt.kind == OVERRIDES:
            where.add_argument(d.flag, dest="config", type=opt.argtype(), metavar=opt.metavar,
                               help=opt.help)
            where.add_argument("--set", action="append", default=[], metavar=SET_METAVAR,
                               help=SET_HELP)
            continue
        if opt.kind == SWITCH:
            kwargs.update(action="store_true")
        elif opt.kind == TRISTATE:
            kwargs.update(action=argparse.BooleanOptionalAction, default=None)
        elif opt.kind == EACH:
            kwargs.update(type=_each(opt), action="extend", metavar=opt.metavar or "A[,B...]")
        else:
            kwargs.update(type=opt.argtype(), choices=opt.choices or None,
                          metavar=None if opt.choices else opt.metavar or d.name.upper())
            if d.default is dataclasses.MISSING:
                kwargs["required"] = d.name in required
            else:
                kwargs["default"] = d.default
        where.add_argument(d.flag, **kwargs)


def _each(opt: Option) -> Callable[[str], list[Any]]:
    """argparse ``type`` of an EACH option: ``"0,1,2"`` -> ``[0, 1, 2]``."""
    what = "integers" if opt.parse is parse_int else "values"

    def parse(text: str) -> list[Any]:
        try:
            values = [opt.parse(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {what} separated by commas, got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError("expected at least one value")
        return values

    return parse


def from_namespace(cls: type, args: argparse.Namespace, prefix: str = "") -> Any:
    """An instance of ``cls`` from the flags :func:`add_arguments` added (without OVERRIDES or
    EACH options, which the caller resolves); an option without a flag there takes its default."""
    return cls(**{d.name: getattr(args, prefix + d.name, d.default) for d in options_of(cls)
                  if d.option.kind not in (OVERRIDES, EACH)})


def given(cls: type, args: argparse.Namespace, prefix: str = "") -> list[str]:
    """The flags of ``cls``'s options given on the command line (a value other than the default)."""
    out = []
    for d in options_of(cls):
        if d.option.kind == OVERRIDES:
            if args.config is not None or args.set:
                out.append(d.flag)
            continue
        value = getattr(args, prefix + d.name, d.default)
        if value is not None and value != d.default:
            out.append(d.flag)
    return out


def check_fields(obj: Any) -> None:
    """ConfigError naming the flag unless every option of dataclass ``obj`` has a valid value
    (a value of None is valid where it is the default: "not given")."""
    for d in options_of(type(obj)):
        value = getattr(obj, d.name)
        if d.option.kind in (SWITCH, TRISTATE, OVERRIDES) or (value is None and d.default is None):
            continue
        try:
            d.option.convert(value)
        except ValueError as exc:
            raise ConfigError(f"{d.flag} {exc}") from None

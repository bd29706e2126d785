"""Model options declared once, on the fields of a model's config dataclass.

A built-in model's config dataclass (``TransformerConfig``, ``LeNet5ModernConfig``, ...) says for
each field that a user may set from the command line: its help text, its flag and what values it
takes. Everything else is derived from that: the CLI's flags and their parsing, the library's
check of the values, and the registry's list of the options a model takes. Nothing here imports
torch.

Example::

    @dataclass(frozen=True)
    class ToyConfig:
        width: int = field(default=8, metadata=option("hidden width (default {default})"))

        def __post_init__(self) -> None:
            check_options(self)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flowprof.errors import ModelError

_KEY = "flowprof.option"  # the field-metadata key that marks a command-line option


@dataclass(frozen=True)
class Kind:
    """What values an option takes: how to read one from a command line and how to check one."""

    text: str  # the values, for messages: "a positive integer"
    read: Callable[[str], Any]  # command-line text -> value; ValueError when malformed
    accepts: Callable[[Any], bool]  # is this value allowed?

    def parse(self, text: str) -> Any:
        """Command-line text -> value; ``ValueError`` with a one-line message when not allowed."""
        try:
            value = self.read(text)
        except ValueError:
            raise ValueError(f"expected {self.text}, got {text!r}") from None
        if not self.accepts(value):
            raise ValueError(f"expected {self.text}, got {value}")
        return value


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


POSITIVE_INT = Kind("a positive integer", int, _is_positive_int)
# Text checked by the config itself (an enum's values: the config says which it knows).
TEXT = Kind("text", str, lambda value: True)


@dataclass(frozen=True)
class Option:
    """One command-line option of a model: ``--flag VALUE`` sets config field ``name``."""

    name: str  # the config field, and the keyword the model's factory takes
    help: str  # ``{default}`` in it is replaced by the field's default
    kind: Kind
    default: Any

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def help_text(self) -> str:
        return self.help.format(default=self.default)


def option(help: str, kind: Kind = POSITIVE_INT) -> dict[str, Any]:
    """Field metadata that makes a config field a command-line option of its model.

    ``help`` may hold ``{default}``; ``kind`` says what values the option takes (default: a
    positive integer). Use as ``field(default=256, metadata=option("embedding size"))``.
    """
    return {_KEY: (help, kind)}


def options(config: type) -> list[Option]:
    """The command-line options of a config dataclass, in field order."""
    found = []
    for f in dataclasses.fields(config):
        if _KEY in f.metadata:
            help_, kind = f.metadata[_KEY]
            default = None if f.default is dataclasses.MISSING else f.default
            found.append(Option(f.name, help_, kind, default))
    return found


def settable(config: type) -> list[str]:
    """Every field a caller may set (the options and the library-only fields), in field order."""
    return [f.name for f in dataclasses.fields(config) if f.init]


def check_options(config: Any) -> None:
    """Raise ModelError for an option field whose value its kind does not accept.

    A field whose default is None may stay None (it is then derived from the others).
    """
    for opt in options(type(config)):
        value = getattr(config, opt.name)
        if value is None and opt.default is None:
            continue
        if not opt.kind.accepts(value):
            raise ModelError(f"{opt.name} must be {opt.kind.text}, got {value!r}")


def reject_unknown(model: str, config: type, given: Mapping[str, Any]) -> None:
    """Raise ModelError for a given option (not None) that ``config`` has no field for."""
    known = settable(config)
    unknown = sorted(k for k, v in given.items() if v is not None and k not in known)
    if unknown:
        takes = f"takes only {', '.join(known)}" if known else "takes no model options"
        raise ModelError(f"{model} {takes}; got {', '.join(unknown)}")

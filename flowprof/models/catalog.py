"""What the built-in models are, without building one: names, summaries and options.

Each built-in model is declared once, in a module of ``flowprof/models/configs/``: its config
dataclass (whose fields are its options, :mod:`flowprof.models.config`) and a :func:`register`
call naming it, saying in one line what it is and where its factory lives (``"module:function"``,
imported only when the model is built). This module finds those declarations and answers the
questions that need no model: the names (``flowprof models``), the options (the CLI's flags) and
whether a name and its options are ones a model takes. Nothing here imports torch, so ``--help``
and bad-input errors stay fast; :mod:`flowprof.models.registry` builds the models.

Example, a whole model in ``flowprof/models/configs/toy.py`` (a real one puts its network and
factory in ``flowprof/models/toy.py``, where torch is imported at the top)::

    @dataclass(frozen=True)
    class ToyConfig:
        width: int = field(default=8, metadata=option("hidden width (default {default})"))

        def __post_init__(self) -> None:
            check_options(self)

    register("toy", "one linear layer", ToyConfig, "flowprof.models.toy:build_toy")
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flowprof.errors import ModelError
from flowprof.models import config as model_config


@dataclass(frozen=True)
class ModelEntry:
    """A built-in model: its name, one line on what it is, its config dataclass (whose fields are
    the options it takes) and its factory: ``"package.module:function"``, imported when the model
    is built, or the function itself."""

    name: str
    summary: str
    config: type
    factory: str | Callable[..., Any]

    def options(self) -> list[model_config.Option]:
        """The model's command-line options, from its config's fields."""
        return model_config.options(self.config)

    def load(self) -> Callable[..., Any]:
        """The factory (importing its module, and so torch, when given by name)."""
        if callable(self.factory):
            return self.factory
        module, _, attr = self.factory.partition(":")
        return getattr(importlib.import_module(module), attr)


_CATALOG: dict[str, ModelEntry] = {}


def register(
    name: str, summary: str, config: type, factory: str | Callable[..., Any]
) -> ModelEntry:
    """Declare built-in model ``name``; a second declaration of a name is a bug.

    ``config`` is the model's config dataclass: the registry passes the factory only options
    that are its fields, and the CLI derives the model's flags from it. ``factory`` is
    ``"package.module:function"`` (so that declaring the model imports nothing heavy) or the
    function itself.
    """
    if name in _CATALOG:
        raise RuntimeError(f"model {name!r} is registered twice")
    if isinstance(factory, str) and not all(factory.partition(":")[::2]):
        raise ValueError(f"factory of {name!r} must be 'package.module:function', got {factory!r}")
    entry = ModelEntry(name, summary, config, factory)
    _CATALOG[name] = entry
    return entry


def _load_declarations() -> None:
    """Import every module of flowprof/models/configs/ (each declares its models on import)."""
    package = importlib.import_module("flowprof.models.configs")
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")


def names() -> list[str]:
    """The built-in model names, sorted."""
    _load_declarations()
    return sorted(_CATALOG)


def entries() -> list[ModelEntry]:
    """The built-in models, sorted by name."""
    return [_CATALOG[n] for n in names()]


def entry(name: str) -> ModelEntry:
    """The built-in model ``name``; ModelError, with the near names, when there is none."""
    _load_declarations()
    if name not in _CATALOG:
        close = difflib.get_close_matches(name, _CATALOG, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        known = ", ".join(sorted(_CATALOG)) + ", torchvision:NAME, package.module:factory"
        raise ModelError(f"unknown model {name!r}{hint} (known: {known})")
    return _CATALOG[name]


def check(name: str, options: Mapping[str, Any]) -> None:
    """Raise ModelError if ``name`` is no built-in model or ``options`` has one it does not take
    (options that are None count as not given). Names with a ``:`` (torchvision's, a user's
    factory) are left to their builders."""
    if ":" not in name:
        model_config.reject_unknown(name, entry(name).config, options)
    elif not name.startswith("torchvision:"):
        check_model_name(name)


def check_model_name(spec: str) -> tuple[str, str]:
    """``package.module:factory`` or ``path/to/file.py:factory`` split in two; a ModelError for a
    malformed one (an empty or dotted-wrong module, a factory that is not a Python name)."""
    module_name, _, attr = spec.rpartition(":")
    example = "e.g. mypkg.nets:make or path/to/nets.py:make"
    if not module_name or not attr:
        raise ModelError(f"malformed model name {spec!r}: expected MODULE:FACTORY, {example}")
    if not attr.isidentifier():
        raise ModelError(f"malformed model name {spec!r}: {attr!r} is not a Python name; {example}")
    if not module_name.endswith(".py") and not all(
        part.isidentifier() for part in module_name.split(".")
    ):
        raise ModelError(
            f"malformed model name {spec!r}: {module_name!r} is neither a module (a.b.c) nor a "
            f".py file; {example}"
        )
    return module_name, attr


def options() -> list[tuple[model_config.Option, str]]:
    """Every built-in model's command-line options, each once, with the first model (by name)
    that takes it: the flags of ``trace``, ``sweep`` and ``pipeline``.

    Grouped by config, the config with the most options first (the transformer's, the models
    whose options a user reaches for most), then by model name; in field order within a config.
    """
    by_config: dict[type, str] = {}
    for e in entries():
        by_config.setdefault(e.config, e.name)
    order = sorted(by_config, key=lambda c: (-len(model_config.options(c)), by_config[c]))
    seen: dict[str, tuple[model_config.Option, str]] = {}
    for config in order:
        for opt in model_config.options(config):
            if opt.name in seen and seen[opt.name][0].kind is not opt.kind:
                raise RuntimeError(f"option --{opt.name} means two things in two models")
            seen.setdefault(opt.name, (opt, by_config[config]))
    return list(seen.values())

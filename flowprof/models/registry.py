"""Model names -> factories, and the example inputs each model is traced with.

Names are a contract (docs/design.md): ``lenet5``, ``lenet5-dws``, ``lenet5-modern``,
``lenet5-modern-dws``, ``transformer``, ``torchvision:NAME`` and ``package.module:factory`` (or
``path/to/file.py:factory``).
Each model file registers itself with :func:`register`, naming its config dataclass, whose
fields are the options the model takes (:mod:`flowprof.models.config`); this module never lists
models or options by hand: every module of ``flowprof/models/`` is imported on first use.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib
import importlib.util
import inspect
import pkgutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flowprof.errors import ModelError
from flowprof.models import config as model_config


@dataclass(frozen=True)
class InputSpec:
    """One example input: its name, shape and dtype; ``high`` bounds integer inputs (token ids)."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32
    high: int | None = None

    def tensor(self, device: str | torch.device = "meta", generator=None) -> torch.Tensor:
        """A tensor of this spec: empty on ``meta`` (allocates nothing), random elsewhere."""
        if torch.device(device).type == "meta":
            return torch.empty(self.shape, dtype=self.dtype, device="meta")
        if self.dtype.is_floating_point:
            return torch.randn(self.shape, generator=generator).to(dtype=self.dtype, device=device)
        return torch.randint(0, self.high or 2, self.shape, generator=generator, device=device).to(
            self.dtype
        )


@dataclass
class BuiltModel:
    """A constructed model with the inputs it is traced with and the config it was built from."""

    name: str
    module: nn.Module
    inputs: tuple[InputSpec, ...]
    config: Mapping[str, Any] = field(default_factory=dict)

    def example_inputs(self, device: str | torch.device = "meta", generator=None):
        return tuple(spec.tensor(device, generator) for spec in self.inputs)


# A factory takes the model options (and ``input_shapes``, a list of shapes or None) and returns a
# BuiltModel. It is called inside ``torch.device(device)``, so ``meta`` allocates no weights.
Factory = Callable[..., BuiltModel]


@dataclass(frozen=True)
class ModelEntry:
    """A built-in model: its factory, one line on what it is, and its config dataclass (whose
    fields are the options it takes; :func:`flowprof.models.config.option` marks the CLI's)."""

    name: str
    factory: Factory
    summary: str
    config: type

    def options(self) -> list[model_config.Option]:
        """The model's command-line options, from its config's fields."""
        return model_config.options(self.config)


_REGISTRY: dict[str, ModelEntry] = {}
# Modules of flowprof/models/ that hold no model.
_NOT_MODELS = frozenset({"config", "registry"})


def register(name: str, summary: str, config: type) -> Callable[[Factory], Factory]:
    """Register ``factory`` under ``name``; a second registration of a name is a bug.

    ``config`` is the model's config dataclass: the registry passes the factory only options
    that are its fields, and the CLI derives the model's flags from it.
    """

    def decorate(factory: Factory) -> Factory:
        if name in _REGISTRY:
            raise RuntimeError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelEntry(name, factory, summary, config)
        return factory

    return decorate


def _load_builtin_models() -> None:
    """Import every model file of flowprof/models/ (each registers its models on import)."""
    package = importlib.import_module("flowprof.models")
    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in _NOT_MODELS and not info.name.startswith("_"):
            importlib.import_module(f"flowprof.models.{info.name}")


def names() -> list[str]:
    """The built-in model names, sorted."""
    _load_builtin_models()
    return sorted(_REGISTRY)


def entries() -> list[ModelEntry]:
    """The built-in models, sorted by name."""
    _load_builtin_models()
    return [_REGISTRY[n] for n in sorted(_REGISTRY)]


def options() -> list[tuple[model_config.Option, str]]:
    """Every built-in model's command-line options, each once, with the first model (by name)
    that takes it: the flags of ``trace``, ``sweep`` and ``pipeline``.

    Grouped by config, the config with the most options first (the transformer's, the models
    whose options a user reaches for most), then by model name; in field order within a config.
    """
    by_config: dict[type, str] = {}
    for entry in entries():
        by_config.setdefault(entry.config, entry.name)
    order = sorted(by_config, key=lambda c: (-len(model_config.options(c)), by_config[c]))
    seen: dict[str, tuple[model_config.Option, str]] = {}
    for config in order:
        for opt in model_config.options(config):
            if opt.name in seen and seen[opt.name][0].kind is not opt.kind:
                raise RuntimeError(f"option --{opt.name} means two things in two models")
            seen.setdefault(opt.name, (opt, by_config[config]))
    return list(seen.values())


def build(
    name: str,
    *,
    device: str | torch.device = "meta",
    input_shapes: Sequence[Sequence[int]] | None = None,
    input_dtypes: Sequence[str | torch.dtype | None] | None = None,
    **options: Any,
) -> BuiltModel:
    """Build model ``name`` on ``device`` (``meta`` by default: no weights are allocated).

    ``input_shapes`` replaces the model's example input shapes; ``input_dtypes`` (one per input,
    a torch dtype or its name, None to keep the model's) their dtypes, e.g. int64 for token ids.
    """
    if name.startswith("torchvision:"):
        factory = _torchvision_factory(name.split(":", 1)[1])
    elif ":" in name:
        factory = _user_factory(name)
    else:
        _load_builtin_models()
        if name not in _REGISTRY:
            close = difflib.get_close_matches(name, _REGISTRY, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            known = ", ".join(sorted(_REGISTRY)) + ", torchvision:NAME, package.module:factory"
            raise ModelError(f"unknown model {name!r}{hint} (known: {known})")
        entry = _REGISTRY[name]
        model_config.reject_unknown(name, entry.config, options)
        factory = entry.factory
    shapes = [tuple(int(d) for d in s) for s in input_shapes] if input_shapes else None
    accepted = inspect.signature(factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            flags = ", ".join("--" + o.replace("_", "-") for o in unknown)
            raise ModelError(f"model {name} does not take {flags}")
    with torch.device(device):
        built = factory(input_shapes=shapes, **options)
    with contextlib.suppress(NotImplementedError):  # torch.export's modules refuse eval()
        built.module.eval()
    if input_dtypes is not None and any(d is not None for d in input_dtypes):
        built.inputs = _with_dtypes(built.inputs, input_dtypes)
    return built


def _with_dtypes(
    inputs: tuple[InputSpec, ...], dtypes: Sequence[str | torch.dtype | None]
) -> tuple[InputSpec, ...]:
    if len(dtypes) != len(inputs):
        raise ModelError(f"{len(dtypes)} input dtypes for a model of {len(inputs)} inputs")
    out = []
    for spec, d in zip(inputs, dtypes, strict=True):
        if isinstance(d, str):
            dtype = getattr(torch, d, None)
            if not isinstance(dtype, torch.dtype):
                raise ModelError(f"unknown input dtype {d!r}")
            d = dtype
        out.append(spec if d is None else replace(spec, dtype=d))
    return tuple(out)


def _single_input(shapes, default: tuple[int, ...]) -> tuple[InputSpec, ...]:
    if shapes and len(shapes) != 1:
        raise ModelError(f"this model takes one input, got {len(shapes)} shapes")
    return (InputSpec("x", tuple(shapes[0]) if shapes else default),)


def _torchvision_factory(arch: str) -> Factory:
    def factory(input_shapes=None, **options) -> BuiltModel:
        if options:
            raise ModelError(f"torchvision models take no model options, got {sorted(options)}")
        import torchvision  # heavy: imported only when a torchvision model is asked for

        available = torchvision.models.list_models(module=torchvision.models)
        if arch not in available:
            close = difflib.get_close_matches(arch, available, n=3)
            suggestions = ", ".join(f"torchvision:{c}" for c in close)
            hint = f"; did you mean {suggestions}?" if close else ""
            raise ModelError(f"unknown torchvision classification model {arch!r}{hint}")
        # (a few builders, e.g. regnet, compute their widths with tensors: not on meta)
        build = functools.partial(torchvision.models.get_model, arch, weights=None)
        module = _on_meta_else_cpu(build, f"torchvision:{arch}")
        inputs = _single_input(input_shapes, (1, 3, 224, 224))
        return BuiltModel(f"torchvision:{arch}", module, inputs, {"arch": arch, "weights": None})

    return factory


def _load_module(name: str) -> Any:
    """An importable module (``package.module``), or a Python file (``path/to/file.py``)."""
    if not name.endswith(".py"):
        return importlib.import_module(name)
    path = Path(name)
    if not path.is_file():
        raise ImportError(f"no file {name}")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # (dataclasses and pickling look modules up)
    spec.loader.exec_module(module)
    return module


def _on_meta_else_cpu(make: Callable[[], Any], name: str) -> Any:
    """Build a model: first as asked (on meta, for the tracer: no weights allocated), then, if
    that fails there, on the CPU. A builder may run tensors while building (a width computed
    from a tensor, torch.jit.trace, torch.export), which meta tensors cannot; the tracer still
    analyses the CPU-built model on meta stand-ins of its weights. One that fails on the CPU too
    is the model's author's to mend: its error, as a ModelError."""
    try:
        return make()
    except ModelError:
        raise
    except Exception as first:
        failed = first
        if torch.get_default_device().type == "meta":
            try:
                with torch.device("cpu"):
                    return make()
            except Exception as exc:
                failed = exc
    raise ModelError(f"{name} raised {type(failed).__name__}: {failed}") from None


def _user_factory(spec: str) -> Factory:
    module_name, _, attr = spec.rpartition(":")

    def factory(input_shapes=None, **options) -> BuiltModel:
        try:
            fn = getattr(_load_module(module_name), attr)
        except (ImportError, AttributeError, SyntaxError) as exc:
            raise ModelError(f"cannot load model factory {spec!r}: {exc}") from None
        made = _on_meta_else_cpu(lambda: fn(**options), spec)
        if isinstance(made, BuiltModel):
            return made
        if not isinstance(made, nn.Module):
            raise ModelError(f"{spec} returned {type(made).__name__}, not a torch.nn.Module")
        if not input_shapes:
            raise ModelError(
                f"{spec} is a user model: give its input shape with --input, e.g. 1x3x224x224"
            )
        dtype = next((p.dtype for p in made.parameters() if p.is_floating_point()), torch.float32)
        inputs = tuple(
            InputSpec(f"x{i}" if len(input_shapes) > 1 else "x", tuple(s), dtype)
            for i, s in enumerate(input_shapes)
        )
        return BuiltModel(spec, made, inputs, {"factory": spec})

    return factory

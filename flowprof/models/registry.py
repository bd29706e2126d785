"""Model names -> factories, and the example inputs each model is traced with.

Names are a contract (docs/design.md): ``lenet5``, ``lenet5-dws``, ``lenet5-modern``,
``lenet5-modern-dws``, ``transformer``, ``torchvision:NAME`` and ``package.module:factory`` (or
``path/to/file.py:factory``).
Each built-in model is declared in :mod:`flowprof.models.catalog` (a module of
``flowprof/models/configs/``: its name, summary, config dataclass and factory), without torch;
this module builds them, importing a model's factory only when that model is built. It never
lists models or options by hand.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flowprof.errors import ModelError
from flowprof.models import catalog

# Listing needs no model: the catalog's lists, here too for the registry's callers.
from flowprof.models.catalog import entries as entries
from flowprof.models.catalog import names as names


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
        catalog.check(name, options)
        factory = catalog.entry(name).load()
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
    """An importable module (``package.module``), or a Python file (``path/to/file.py``).

    As Python does for a script, the user's project is importable while it loads: the current
    folder, and for a file its own folder (so that it can import the files beside it). Both stay
    on ``sys.path`` afterwards, as a script's folder does, so that what the model imports lazily
    and the pipeline's stage processes (which inherit ``sys.path``) find them too."""
    _importable(Path.cwd())
    if not name.endswith(".py"):
        return importlib.import_module(name)
    path = Path(name).resolve()
    if not path.is_file():
        raise ImportError(f"no file {name}")
    _importable(path.parent)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # (dataclasses and pickling look modules up)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        if sys.modules.get(spec.name) is module:
            del sys.modules[spec.name]
        raise
    _LOADED_FILES[spec.name] = str(path)
    return module


# Modules loaded from a user's file, by module name: a stage process of the pipeline loads them
# again before it unpickles the model (their classes are looked up by module name).
_LOADED_FILES: dict[str, str] = {}


def loaded_files() -> dict[str, str]:
    """The user's model files loaded so far: module name -> absolute path."""
    return dict(_LOADED_FILES)


def load_files(files: Mapping[str, str]) -> None:
    """Load the user's model files :func:`loaded_files` named in another process (the pipeline's
    stage processes), so that pickled models that use their classes can be loaded."""
    for module_name, path in files.items():
        if module_name not in sys.modules:
            _load_module(path)


def _importable(folder: Path) -> None:
    text = str(folder)
    if text not in sys.path and not (folder == Path.cwd() and "" in sys.path):
        sys.path.insert(0, text)


def _user_code_error(spec: str, exc: BaseException, stage: str) -> ModelError:
    """An exception raised by the user's own code, as a ModelError naming the place in the user's
    file it was raised from (the last frame outside flowprof and torch)."""
    import traceback

    where = ""
    frames = traceback.extract_tb(exc.__traceback__)
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f" at {exc.filename}:{exc.lineno}"
    else:
        mine = Path(__file__).resolve().parents[1]
        for frame in reversed(frames):
            file = Path(frame.filename)
            if frame.filename.startswith("<") or mine in file.parents or "torch" in file.parts:
                continue
            where = f" at {frame.filename}:{frame.lineno}"
            break
    if isinstance(exc, SystemExit):
        return ModelError(
            f"{spec}: the factory exited (sys.exit({exc.code!r})){where} while {stage}; a factory "
            "must return a torch.nn.Module"
        )
    text = str(exc).strip().splitlines()
    message = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return ModelError(f"{spec}: {stage} raised {message}{where}")


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


def check_input_count(module: nn.Module, count: int, spec: str) -> None:
    """Refuse ``count`` positional inputs when forward cannot take that many (too many, or fewer
    than it requires): a ModelError saying how many it takes."""
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):  # (a builtin or scripted forward: nothing to check)
        return
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    if len(required) <= count <= len(positional):
        return
    names = ", ".join(p.name for p in positional)
    takes = (
        f"{len(positional)}" if len(required) == len(positional) else
        f"{len(required)} to {len(positional)}"
    )  # fmt: skip
    raise ModelError(
        f"{spec}: forward takes {takes} input{'s' if len(positional) != 1 else ''} ({names}), "
        f"{count} {'were' if count != 1 else 'was'} given with --input"
    )


def _user_factory(spec: str) -> Factory:
    module_name, attr = catalog.check_model_name(spec)

    def factory(input_shapes=None, **options) -> BuiltModel:
        # Whatever the user's code raises, or a sys.exit in it, is the user's to mend.
        try:
            module = _load_module(module_name)
        except (ImportError, SyntaxError) as exc:
            if isinstance(exc, SyntaxError) or not _raised_inside(exc, module_name):
                raise ModelError(f"cannot load model factory {spec!r}: {exc}") from None
            raise _user_code_error(spec, exc, f"importing {module_name}") from None
        except (Exception, SystemExit) as exc:
            raise _user_code_error(spec, exc, f"importing {module_name}") from None
        try:
            fn = getattr(module, attr)
        except AttributeError:
            raise ModelError(
                f"cannot load model factory {spec!r}: {module_name} has no {attr!r}"
            ) from None
        try:
            made = _on_meta_else_cpu(lambda: fn(**options), spec)
        except ModelError:
            raise
        except SystemExit as exc:
            raise _user_code_error(spec, exc, "building the model") from None
        if isinstance(made, BuiltModel):
            return made
        if not isinstance(made, nn.Module):
            raise ModelError(f"{spec} returned {type(made).__name__}, not a torch.nn.Module")
        if not input_shapes:
            raise ModelError(
                f"{spec} is a user model: give its input shape with --input, e.g. 1x3x224x224"
            )
        check_input_count(made, len(input_shapes), spec)
        dtype = next((p.dtype for p in made.parameters() if p.is_floating_point()), torch.float32)
        inputs = tuple(
            InputSpec(f"x{i}" if len(input_shapes) > 1 else "x", tuple(s), dtype)
            for i, s in enumerate(input_shapes)
        )
        return BuiltModel(spec, made, inputs, {"factory": spec})

    return factory


def _raised_inside(exc: ImportError, module_name: str) -> bool:
    """True for an ImportError raised by the code of the user's module (it imports something
    missing), False when the module itself cannot be found."""
    missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
    if missing and (module_name == missing or module_name.startswith(missing + ".")):
        return False  # the module named, or a package above it, is not there
    return not str(exc).startswith("no file ")

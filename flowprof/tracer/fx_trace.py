"""The only file that touches torch.fx: structure from a symbolic trace, counts from running it.

1. A custom fx Tracer records the graph. A submodule that fx cannot trace (data-dependent control
   flow, e.g. torch.nn.Transformer's fast-path checks) is made a leaf and the trace is retried, so
   the user never sees a TraceError; if the top-level forward itself cannot be traced, the whole
   model becomes one leaf. Either way fx has not seen all of the model: its blocks are then
   recorded by hooks as it runs instead (tracer/hook_trace.py; not for TorchScript, which runs
   no Python to hook), and those leaves stay leaves only for a pipeline, which runs fx nodes.
2. An fx Interpreter runs the graph on meta tensors (no weight or activation is allocated; fake
   tensors where meta cannot, real ones only for a model that branches on values and was given
   real inputs and weights). Ops whose meta kernels are slow Python decompositions get their
   outputs from tracer/meta_shapes.py. Three interceptors attribute every operation to the fx
   node that is running:
   - module formulas, via forward hooks on modules counted as a whole (nn.MultiheadAttention),
   - function formulas, via a TorchFunctionMode (F.scaled_dot_product_attention, before PyTorch
     picks a fused kernel or decomposes it),
   - ATen formulas, via a TorchDispatchMode, for everything else.
   Inside a module or function formula the ops underneath are not counted again.
3. The fx nodes and what running each one did become the run's record (tracer/units.py, the
   record the hooked path fills too), from which the one builder makes leaf units (one per
   leaf-module call or computing function call) and the tensors that cross between them; free
   ops (views, getitem) fold into the unit that produced their input.

Leaves (one rule for both paths, :func:`is_leaf`): torch.nn's modules (fx's default), modules fx
could not trace, and modules of a class that a formula counts as a whole (so that the formula
applies on the fx path as it does on the hooked path).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.immutable_collections import immutable_list
from torch.nn.modules import module as _global_hooks
from torch.nn.utils.stateless import _reparametrize_module
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors
from torch.utils._python_dispatch import TorchDispatchMode

from flowprof.errors import FlowprofError, UnsupportedModelError
from flowprof.tracer import formulas, hook_trace, meta_shapes, training_step
from flowprof.tracer.counts import Tally
from flowprof.tracer.graph import TensorMeta
from flowprof.tracer.training_step import TrainingStep
from flowprof.tracer.units import RunRecord, UnitCall

# --- 1. structure ----------------------------------------------------------------------------


_PLAIN_ARGS = frozenset([int, float, bool, str, type(None), torch.dtype, torch.device])


def is_leaf(m: nn.Module) -> bool:
    """The leaf rule of both paths: torch.fx's default (a torch.nn module other than Sequential),
    or a module whose class a formula counts as a whole (a user's class registered with
    ``formulas.formula``: traced through, its formula would be silently ignored)."""
    return _stock_tracer().is_leaf_module(m, "") or formulas.formula_for_module(m) is not None


class _Tracer(fx.Tracer):
    """Leaves by :func:`is_leaf` plus ``extra_leaves``; remembers which module a trace failed
    in."""

    # Buffers become get_attr nodes, like parameters. With fx's default (False) an expression on
    # buffers alone (``self.mask[:T, :T] == 0``) is evaluated once at trace time and baked into a
    # constant, so what the model computes on every call would go uncounted.
    proxy_buffer_attributes = True

    def __init__(self, extra_leaves: set[str]):
        super().__init__()
        self.extra_leaves = extra_leaves
        self.failed_in: str | None = None
        self.failure: BaseException | None = None

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return (
            qualname in self.extra_leaves
            or super().is_leaf_module(m, qualname)
            or formulas.formula_for_module(m) is not None
        )

    def create_arg(self, a: Any) -> Any:
        # The common arguments first (fx's own create_arg tries a dozen cases before these, on
        # every argument of every node); anything else goes to fx.
        kind = type(a)
        if kind in _PLAIN_ARGS:
            return a
        if kind is fx.Proxy:
            return a.node
        if kind is tuple or kind is list:
            return kind(self.create_arg(x) for x in a)
        return super().create_arg(a)

    def call_module(self, m, forward, args, kwargs):
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception as exc:
            qualname = self.path_of_module(m)
            if self.failed_in is None and not self.is_leaf_module(m, qualname):
                self.failed_in, self.failure = qualname, exc
            raise


class _Whole(nn.Module):
    """Wraps a model whose own forward cannot be traced, so that it becomes one leaf."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *args):
        return self.model(*args)


def _whole_model_graph(model: nn.Module, n_inputs: int | None = None) -> fx.Graph:
    """The graph of ``_Whole(model)``: one placeholder per positional input, one call of
    ``model``. Built by hand because fx cannot trace ``_Whole.forward`` itself: ``*args`` becomes
    a single Proxy and unpacking it raises TraceError.

    The inputs are ``model.forward``'s required positional parameters, and as many of its
    optional ones (or of ``*args``) as the caller gives inputs for (``n_inputs``): an optional
    mask passed positionally is an input like the others, not dropped."""
    named, _, var_positional = _forward_parameters(model)
    required = sum(1 for p in named if p.default is p.empty)
    count = max(required, n_inputs or 0, 1)
    names = [p.name for p in named[:count]]
    if len(names) < count and var_positional:
        names += [f"arg{i}" for i in range(len(names), count)]
    graph = fx.Graph()
    args = tuple(graph.placeholder(name) for name in names or ["input"])
    call = graph.call_module("model", args)
    call.meta["nn_module_stack"] = {"model": ("model", type(model))}
    graph.output(call)
    return graph


@dataclass
class Structure:
    """A traced model: the fx graph and the module it runs against (a shallow twin of the model,
    see :func:`_shallow_twin`, or the wrapper when the whole model had to become a leaf)."""

    root: nn.Module
    graph: fx.Graph
    leaves_added: dict[str, str]  # qualified name -> why fx could not trace it
    root_prefix: str = ""  # "model." when the whole model had to become a leaf
    # why the counting run had to be made as torch.compile sees the model (a branch on values)
    run_as_compiled: str | None = None
    # the counting run records the blocks by hooks as the model runs (not from the fx graph)
    hooked: bool = False
    _graph_module: fx.GraphModule | None = field(default=None, repr=False)

    @property
    def graph_module(self) -> fx.GraphModule:
        """The graph as an fx.GraphModule (made on first use: generating its code costs more than
        counting a small model, and counting does not need it)."""
        if self._graph_module is None:
            self._graph_module = fx.GraphModule(self.root, self.graph, type(self.root).__name__)
        return self._graph_module


def trace_structure(
    model: nn.Module,
    n_inputs: int | None = None,
    max_retries: int = 64,
    given: Sequence[Any] = (),
    leaves: Iterable[str] = (),
) -> Structure:
    """Symbolically trace ``model``; untraceable submodules become leaves (see module doc).
    ``n_inputs``, the number of positional inputs it will be run on, decides which optional
    parameters keep their defaults (:func:`_concrete_args`) and, when the whole model has to
    become a leaf, how many inputs that leaf takes. ``given``: the inputs themselves, when known;
    those that are not tensors (a None in a mask's place) are traced as those constants.
    ``leaves``: module paths kept as leaves besides those fx cannot trace."""
    concrete = _concrete_args(model, n_inputs, given)
    extra: set[str] = set(leaves)
    why: dict[str, str] = {}
    root = _shallow_twin(model)
    for _ in range(max_retries):
        tracer = _Tracer(extra)
        try:
            with _checkpoint_refused(model):
                graph = tracer.trace(root, concrete_args=concrete or None)
        except Exception as exc:
            failed = tracer.failed_in
            if failed is None:  # the top-level forward itself
                why["model"] = _one_line(exc)
                graph = _whole_model_graph(model, n_inputs)
                return Structure(_Whole(model), graph, why, "model.")
            extra.add(failed)
            why[failed] = _one_line(tracer.failure or exc)
            continue
        return Structure(tracer.root, graph, why)
    raise UnsupportedModelError(f"torch.fx could not trace {type(model).__name__}")


class _Checkpointed(UnsupportedModelError):
    """torch.utils.checkpoint called in a forward being traced: fx does not trace it (the module
    that calls it is recorded by hooks instead); never seen outside the tracer."""


@contextlib.contextmanager
def _checkpoint_refused(model: nn.Module):
    """``torch.utils.checkpoint.checkpoint`` raises while fx traces: fx would trace through it
    into the graph of a plain forward, and the recomputation it costs a training step would be
    lost. The module that calls it becomes a leaf instead, recorded by hooks as it runs, where
    the checkpoint runs for real. Patched where forwards find it: the module attribute and the
    globals of the model's forwards that imported it by name; restored on exit."""
    import torch.utils.checkpoint as cp

    original = cp.checkpoint

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise _Checkpointed("torch.utils.checkpoint is recorded by hooks, not traced by fx")

    patched: list[dict[str, Any]] = []
    for m in model.modules():
        fn_globals = getattr(type(m).forward, "__globals__", None)
        if fn_globals is None or any(g is fn_globals for g in patched):
            continue
        for k, v in fn_globals.items():
            if v is original:
                fn_globals[k] = refuse
                patched.append(fn_globals)
                break
    cp.checkpoint = refuse
    try:
        yield
    finally:
        cp.checkpoint = original
        for fn_globals in patched:
            for k, v in fn_globals.items():
                if v is refuse:
                    fn_globals[k] = original


def _shallow_twin(model: nn.Module) -> nn.Module:
    """A second module object sharing ``model``'s submodules, parameters and buffers, to trace in
    its place: torch.fx stores the tensors it folds into constants (``_tensor_constant0``, ...) as
    attributes of the module it traces, a new one each trace, and the user's model is not ours to
    change. (The model itself when it cannot be copied.)"""
    try:
        twin = copy.copy(model)
    except Exception:
        return model
    return twin if type(twin) is type(model) else model


def _concrete_args(
    model: nn.Module, n_inputs: int | None, given: Sequence[Any] = ()
) -> dict[str, Any] | None:
    """The parameters of ``model.forward`` that fx traces as constants: the optional ones a run
    on ``n_inputs`` positional inputs leaves at their defaults, with those defaults, and those
    ``given`` a value that is not a tensor. Without this fx makes every parameter a Proxy, so
    ``if mask is not None`` traces the masked path of a model called without a mask, and checks
    such as "inputs_embeds and input_ids are not both given" (Hugging Face models) fail."""
    if n_inputs is None:
        return None
    named, keyword, _ = _forward_parameters(model)
    concrete = {p.name: p.default for p in named[n_inputs:] + keyword if p.default is not p.empty}
    given_values = zip(named, given, strict=False)  # (*args inputs have no parameter name)
    concrete |= {p.name: x for p, x in given_values if not isinstance(x, torch.Tensor)}
    return concrete or None


def _forward_parameters(
    model: nn.Module,
) -> tuple[list[inspect.Parameter], list[inspect.Parameter], bool]:
    """``model.forward``'s positional parameters, its keyword-only ones, and whether it takes
    ``*args``; nothing of a forward whose signature Python cannot read."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return [], [], False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return (
        [p for p in params if p.kind in positional],
        [p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY],
        any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params),
    )


def _failed_at(n: fx.Node, args: Any, kwargs: Any) -> str:
    """Where a node that failed is, for the one-line error: its op, the block it is in and the
    shapes it was given (``torch.cat in up (inputs 1x8x14x14, 1x8x15x15)``)."""
    if n.op == "call_function":
        name = getattr(n.target, "__name__", str(n.target))
        module = getattr(n.target, "__module__", None)
        op = f"{module.removeprefix('_')}.{name}" if module else name  # torch.cat, operator.add
    elif n.op == "call_module":
        op = f"module {n.target}"
    else:
        op = f"{n.op} {n.target}"
    stack = n.meta.get("nn_module_stack") or {}
    block = next(reversed(stack.values()), None)
    block = block[0] if isinstance(block, tuple) else block
    if n.op == "call_module":
        block = str(n.target)
    with torch._C.DisableTorchFunction():
        shapes = [
            "x".join(map(str, t.shape)) or "scalar"
            for t in torch.utils._pytree.tree_leaves((args, kwargs))
            if isinstance(t, torch.Tensor)
        ]
    where = f"{op} in {block}" if block and not op.endswith(str(block)) else op
    return f"{where} (inputs {', '.join(shapes)})" if shapes else where


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


# --- 2. counting -----------------------------------------------------------------------------


@dataclass
class NodeRecord(Tally):
    """What running one fx node did: its tally and its output."""

    out: Any = None  # nested TensorMeta / None
    returned: str | None = None  # the input node whose tensor it returned (an in-place op)
    is_view: bool = False  # its output is one tensor that shares the data of another
    requires_grad: bool = False  # (a training step) a tensor of its output needs a gradient


class _Recorder:
    """Where the interceptors put counts: the tally of what is running (an fx node's record, a
    hooked run's unit), else ``outside``, the work that runs outside every unit: nothing counted
    is dropped."""

    def __init__(self) -> None:
        self.outside = Tally()
        self.current: Tally = self.outside
        self.inside_formula = 0
        self.pinned: Tally | None = None  # a training step: the unit a checkpoint recomputes

    def add(self, f: formulas.Formula, call: formulas.Call) -> None:
        self.current.count = self.current.count + f.fn(call)
        self.current.ops[f.name] += 1

    def miss(self, name: str) -> None:
        self.current.uncounted[name] += 1


# id(overload) -> (overload, meta shortcut or None, free?, formula or None, name): resolved once
# per overload (hashing an OpOverload runs Python code; this is asked for every op of every
# trace). Holding the overload keeps its id from being reused.
_OP_INFO: dict[int, tuple[Any, Any, bool, formulas.Formula | None, str]] = {}


def _op_info(func) -> tuple[Any, Any, bool, formulas.Formula | None, str]:
    info = _OP_INFO.get(id(func))
    if info is None:
        free = formulas.is_free(func)
        f = None if free else formulas.lookup(func)
        shortcut = meta_shapes.handler(func)
        info = _OP_INFO[id(func)] = (func, shortcut, free, f, formulas.op_name(func))
    return info


class _AtenCounter(TorchDispatchMode):
    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # PyTorch wraps a mode's __torch_dispatch__ so that torch.compile skips its frames; the
        # wrapper imports torch._dynamo on first use (0.7 s, 160 MB) and adds two Python calls to
        # every op. Nothing here runs under torch.compile, so the wrapper is declined.
        return False

    def __init__(self, rec: _Recorder, meta: bool = False):
        super().__init__()
        self.rec = rec
        self.meta = meta  # plain meta tensors: shape-preserving ops may take the shortcut

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        _, shortcut, free, f, name = _op_info(func)
        out = shortcut(func, args, kwargs) if self.meta and shortcut is not None else None
        if out is None:
            out = func(*args, **kwargs)
        if free or self.rec.inside_formula:
            return out
        if f is None:
            self.rec.miss(name)
        else:
            self.rec.add(f, formulas.Call(tuple(args), dict(kwargs), out))
        return out


class _TrainingCounter(_AtenCounter):
    """The ATen counter of a training step: an op that autograd runs in the backward counts into
    the backward (or recompute) tally of the forward piece its node was tagged with
    (tracer/training_step.py); every other op where :class:`_AtenCounter` counts it."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        node = torch._C._current_autograd_node()
        if node is None:
            return super().__torch_dispatch__(func, types, args, kwargs)
        with _routed(self.rec, node):
            return super().__torch_dispatch__(func, types, args, kwargs)


@contextlib.contextmanager
def _routed(rec: _Recorder, node: Any):
    """Counts go to the backward (or recompute) tally of what autograd ``node`` belongs to
    (training_step.backward_tally) for the duration, then back to what was counting."""
    saved, rec.current = rec.current, training_step.backward_tally(node, rec)
    try:
        yield
    finally:
        rec.current = saved


class _FunctionCounter(TorchFunctionMode):
    """Function formulas, and the default device for tensors made in forward (what
    ``with torch.device(device)`` does, folded into this mode: one Python mode per call, not two).
    """

    def __init__(
        self,
        rec: _Recorder,
        table: dict[Any, formulas.Formula],
        device: torch.device,
        step: TrainingStep | None = None,
    ):
        super().__init__()
        self.rec = rec
        self.table = table
        self.device = device
        self.constructors = _device_constructors()
        self.step = step  # a training step: tag the autograd nodes each call makes

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.step is None:
            return self._count(func, args, kwargs or {})
        rec = self.rec
        node = torch._C._current_autograd_node()
        if node is not None:  # Python run by the backward (a checkpoint's recomputed forward)
            with _routed(rec, node):
                out = self._count(func, args, kwargs or {})
            if torch.is_grad_enabled():  # (its own backward, reentrant checkpoint's, is the unit's)
                training_step.tag(out, training_step.recompute_owner(node, rec))
            return out
        out = self._count(func, args, kwargs or {})
        training_step.tag(out, rec.current)
        return out

    def _count(self, func, args, kwargs):
        f = self.table.get(func)
        if f is None or self.rec.inside_formula:
            if func in self.constructors and kwargs.get("device") is None:
                kwargs["device"] = self.device
            return func(*args, **kwargs)
        self.rec.inside_formula += 1
        try:
            out = func(*args, **kwargs)
        finally:
            self.rec.inside_formula -= 1
        self.rec.add(f, formulas.Call(tuple(args), dict(kwargs), out))
        return out


class _HookedFunctionCounter(_FunctionCounter):
    """The function mode of a hooked run: each torch function the forward itself calls (not
    one inside a leaf module, a formula or another function) goes to ``hooks``, which records
    it as it runs."""

    def __init__(self, *args: Any, hooks: hook_trace.HookRun):
        super().__init__(*args)
        self.hooks = hooks

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        count = super().__torch_function__
        if (
            self.rec.inside_formula
            or not self.hooks.active()
            or (self.step is not None and torch._C._current_autograd_node() is not None)
        ):
            return count(func, types, args, kwargs)
        return self.hooks.function_call(
            func, args, kwargs, lambda: count(func, types, args, kwargs)
        )


@contextlib.contextmanager
def _module_formula_hooks(model: nn.Module, rec: _Recorder):
    """Forward hooks on every module counted as a whole; removed on exit."""
    handles = []

    def pre(module, args, kwargs):
        rec.inside_formula += 1

    def post(module, args, kwargs, out):
        rec.inside_formula -= 1
        if rec.inside_formula == 0:
            rec.add(formulas.formula_for_module(module), formulas.Call(args, kwargs, out, module))

    for m in model.modules():
        if formulas.formula_for_module(m) is not None:
            handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(m.register_forward_hook(post, with_kwargs=True))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _meta_of(value: Any) -> Any:
    """The tensors in a node's output, as TensorMeta, nested like the output (the containers
    :func:`hook_trace.parts` looks into); None where none."""
    if isinstance(value, torch.Tensor):
        return TensorMeta.of(value)
    parts = hook_trace.parts(value)
    return None if parts is None else tuple(_meta_of(v) for v in parts)


def _thaw(value: Any) -> Any:
    """fx hands list arguments to the function it calls as its immutable lists; a function that
    writes into a list argument (torchvision's video Swin transformer does) would fail on them,
    where the model run without fx gets a plain list."""
    if type(value) is immutable_list:
        return [_thaw(v) for v in value]
    return value


class _Interpreter(fx.Interpreter):
    def __init__(self, structure: Structure, rec: _Recorder, records: dict[str, NodeRecord]):
        super().__init__(structure.root, garbage_collect_values=True, graph=structure.graph)
        self.rec = rec
        self.records = records

    def run_node(self, n: fx.Node) -> Any:
        record = self.records.setdefault(n.name, NodeRecord())
        self.rec.current = record
        try:  # fx.Interpreter.run_node without its bookkeeping for nested tracing
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            if any(type(a) is immutable_list for a in args):
                args = tuple(_thaw(a) for a in args)
            if any(type(v) is immutable_list for v in kwargs.values()):
                kwargs = {k: _thaw(v) for k, v in kwargs.items()}
            out = getattr(self, n.op)(n.target, args, kwargs)
        except Exception as exc:
            if not hasattr(exc, "flowprof_node"):  # the innermost node: where it failed
                exc.flowprof_node = _failed_at(n, args, kwargs)
            raise
        finally:
            self.rec.current = self.rec.outside
        with torch._C.DisableTorchFunction():  # reading shapes is not the model's work
            record.out = _meta_of(out)
            record.is_view = isinstance(out, torch.Tensor) and out._is_view()
            record.requires_grad = torch.is_grad_enabled() and any(
                t.requires_grad for t in hook_trace.tensors_in(out)
            )
        if isinstance(out, torch.Tensor):  # an op that returns a tensor it read: in place
            env = self.env
            for u in n.all_input_nodes:
                if env.get(u) is out:
                    record.returned = u.name
                    break
        return out

    def run_model(self, *inputs: Any) -> Any:
        """Run the graph as a call of the model runs its forward: with the model's own forward
        hooks and pre-hooks around it (torch.fx's trace never runs them; work in them is outside
        every unit), or without, the usual case, directly."""
        root = self.module
        if not (
            root._forward_pre_hooks
            or root._forward_hooks
            or _global_hooks._global_forward_pre_hooks
            or _global_hooks._global_forward_hooks
        ):
            return self.run(*inputs)
        # nn.Module.__call__ runs the hooks around ``forward``: here the graph, for this call only
        # (the traced root is a shallow twin of the user's model where it could be copied)
        missing = object()
        saved = root.__dict__.get("forward", missing)
        root.__dict__["forward"] = self.run
        try:
            return root(*inputs)
        finally:
            if saved is missing:
                del root.__dict__["forward"]
            else:
                root.__dict__["forward"] = saved


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Counts are of an inference forward pass: eval mode, restored afterwards.

    A module that refuses eval() (torch.export's modules: their mode was fixed when they were
    exported) is run as it is."""
    training = [m for m in model.modules() if m.training]
    if training:  # (nothing to do for a model in eval mode, the usual case: no attribute writes)
        try:
            model.eval()
        except NotImplementedError:
            training = []
    try:
        yield
    finally:
        for m in training:
            m.training = True


@contextlib.contextmanager
def train_mode(model: nn.Module):
    """A training step runs in train mode: set, and every module's flag restored afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    with contextlib.suppress(NotImplementedError):  # (torch.export's modules: mode fixed)
        model.train()
    try:
        yield
    finally:
        for m, training in flags:
            m.training = training


def model_device(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def _data_dependent(exc: BaseException) -> bool:
    """True when fake tensors could not decide something that depends on tensor values."""
    from torch._subclasses.fake_tensor import (
        DataDependentOutputException,
        DynamicOutputShapeException,
    )

    while exc is not None:
        if isinstance(exc, (DataDependentOutputException, DynamicOutputShapeException)):
            return True
        if "data-dependent" in str(exc) or "data dependent" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _run(
    structure: Structure,
    model: nn.Module,
    inputs: Sequence[Any],
    device: torch.device,
    fake_mode: FakeTensorMode | None,
    meta_state: dict[str, torch.Tensor] | None = None,
    hooks: bool = False,
    clock: bool = False,
    step: TrainingStep | None = None,
) -> RunRecord:
    records: dict[str, NodeRecord] = {}
    rec = _Recorder()
    hook_run: hook_trace.HookRun | None = None
    loss: UnitCall | None = None
    counter = _TrainingCounter if step is not None else _AtenCounter
    meta = device.type == "meta" and fake_mode is None
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.enable_grad() if step is not None else torch.no_grad())
        stack.enter_context(_module_formula_hooks(model, rec))
        if meta_state:  # real weights stand in as meta tensors for this run only
            stack.enter_context(_reparametrize_module(structure.root, meta_state, tie_weights=True))
        if device.type == "meta":
            stack.enter_context(_autocast_on_meta())
        if fake_mode is not None:
            stack.enter_context(fake_mode)
        stack.enter_context(counter(rec, meta=meta))
        table = formulas.function_formulas()
        # a training step in mixed precision: forward and loss under autocast (fake CPU tensors)
        amp = step.autocast() if step is not None else contextlib.nullcontext()
        with amp:
            if hooks:
                hook_run, out = _hooked_run(
                    structure, model, inputs, rec, table, device, clock, step, stack
                )
            else:
                stack.enter_context(_FunctionCounter(rec, table, device, step))
                out = _Interpreter(structure, rec, records).run_model(*inputs)
            if step is not None:
                loss, value = _loss(step, rec, out)
        del out
        if step is not None:
            value.backward()
            del value
    # (after the run: the real weights are back, which the record's units own)
    if hook_run is not None:
        record = hook_run.records()
        # (what the training counter routed to no unit: the run's work outside every unit)
        record.outside.absorb_phases(rec.outside)
    else:
        record = _fx_record(structure, model, records, rec.outside)
    if step is not None:
        assert loss is not None  # (set in the run above)
        at = len(record.calls) - (bool(record.calls) and record.calls[-1].role == "output")
        loss.inputs = list(record.calls[at].inputs) if at < len(record.calls) else []
        record.calls.insert(at, loss)
        if step.update:
            with contextlib.ExitStack() as stack:
                if fake_mode is not None:
                    stack.enter_context(fake_mode)
                stack.enter_context(_AtenCounter(rec, meta=meta))
                _optimizer_steps(step, structure, record, rec, meta_state or {})
            record.outside.absorb_phases(rec.outside)  # (the loss scaler's update)
    return record


def _loss(step: TrainingStep, rec: _Recorder, out: Any) -> tuple[UnitCall, torch.Tensor]:
    """The loss of the model's output, counted as a unit of its own (``loss``), scaled by the
    loss scaler in fp16 mixed precision; the backward from it is counted by the training counter
    into the tallies the forward tagged."""
    call = UnitCall("loss", "loss", (), [])
    rec.current = call.tally
    try:
        value, call.kind = training_step.loss_of(step, out)
        value = training_step.scaled(step, value)
        training_step.tag(value, call.tally)
    finally:
        rec.current = rec.outside
    return call, value


def _optimizer_steps(
    step: TrainingStep,
    structure: Structure,
    record: RunRecord,
    rec: _Recorder,
    meta_state: dict[str, torch.Tensor],
) -> None:
    """The optimizer of each unit over the parameters it owns (the first unit that reads a
    parameter, the rule by which parameters are counted), run on the stand-ins that got the
    gradients."""
    stand_in: dict[int, torch.Tensor] = {}
    for name, p in structure.root.named_parameters(remove_duplicate=False):
        if name in meta_state and id(p) not in stand_in:
            stand_in[id(p)] = meta_state[name]
    owner: dict[int, UnitCall] = {}
    params: dict[int, torch.Tensor] = {}
    for call in record.calls:
        read = list(call.parameters)
        for v in call.inputs:
            base = v.origin()
            if base.weight is not None and base.is_parameter:
                read.append(base.weight)
        for p in read:
            if id(p) not in owner:
                owner[id(p)] = call
                params[id(p)] = stand_in.get(id(p), p)
    groups: dict[int, tuple[Tally, list[nn.Parameter]]] = {}
    for key, call in owner.items():
        p = params[key]
        if p.requires_grad:
            groups.setdefault(id(call), (call.tally, []))[1].append(p)

    def set_current(tally: Tally | None) -> None:
        rec.current = rec.outside if tally is None else tally

    training_step.run_optimizer(step, list(groups.values()), set_current, rec.outside)


@contextlib.contextmanager
def _autocast_on_meta():
    """torch.autocast has no meta backend: ``torch.autocast(device_type=x.device.type)`` (Hugging
    Face's rotary embeddings disable autocast so) raises on meta tensors. During a meta run it is
    autocast on the CPU instead, which changes no meta op: the forward runs as it would without
    autocast. (torch.autocast is one class; its __init__ is restored on exit.)"""
    autocast = torch.amp.autocast_mode.autocast
    init = autocast.__init__

    def on_cpu(self, device_type, *args, **kwargs):
        init(self, "cpu" if device_type == "meta" else device_type, *args, **kwargs)

    autocast.__init__ = on_cpu
    try:
        yield
    finally:
        autocast.__init__ = init


def uses_hooks(structure: Structure, model: nn.Module, hooks: bool | None = None) -> bool:
    """Whether the blocks are recorded by hooks as the model runs (tracer/hook_trace.py) rather
    than read from the fx graph: ``hooks`` when given (True: even where fx traced all of the
    model), else where torch.fx could not trace all of it (its own forward, or a module in it),
    since hooks see through what fx cannot, where fx leaves one block per untraceable module.
    Never for a model with TorchScript in it: a scripted forward runs no Python to hook."""
    if hooks is False or not (hooks or structure.leaves_added):
        return False  # (the usual case decided without walking the modules)
    return not any(isinstance(m, torch.jit.ScriptModule) for m in model.modules())


def whole_structure(model: nn.Module, n_inputs: int | None = None) -> Structure:
    """The structure of a model not traced by fx at all (for a hooked run only)."""
    return Structure(_Whole(model), _whole_model_graph(model, n_inputs), {}, "model.")


def _hooked_run(
    structure: Structure,
    model: nn.Module,
    inputs: Sequence[Any],
    rec: _Recorder,
    table: dict[Any, formulas.Formula],
    device: torch.device,
    clock: bool = False,
    step: TrainingStep | None = None,
    stack: contextlib.ExitStack | None = None,
) -> tuple[hook_trace.HookRun, Any]:
    """Run ``model`` with the hooks that record its units; the run (whose ``records()`` is the
    record, to be read once a training step's backward has run too) and the model's output.
    The hooks and the function mode stay on until ``stack`` closes (a checkpoint's forward
    recomputed in the backward is seen by them too); without a stack, until it returns."""
    run = hook_trace.HookRun(model, rec, is_leaf, clock)
    # Ours run first among a module's pre-hooks and last among its forward hooks, so that the
    # work of the user's own hooks on a module is inside its call, as on the fx path (where the
    # trace or the leaf's call runs them inside it). On the model itself, the other way round:
    # its hooks run outside its forward.
    handles = []
    for m in model.modules():
        if m is not model:
            handles.append(m.register_forward_pre_hook(run.pre, with_kwargs=True, prepend=True))
            handles.append(m.register_forward_hook(run.post, with_kwargs=True))
    handles.append(model.register_forward_pre_hook(run.forward_starts, with_kwargs=True))
    handles.append(model.register_forward_hook(run.forward_ends, with_kwargs=True, prepend=True))
    # (the fx graph's placeholders name the inputs, as on the fx path: forward's parameter names)
    run.input_names = [n.name for n in structure.graph.nodes if n.op == "placeholder"]

    def remove() -> None:
        for h in handles:
            h.remove()

    with contextlib.ExitStack() as own:
        outer = stack or own
        outer.callback(remove)
        outer.enter_context(_HookedFunctionCounter(rec, table, device, step, hooks=run))
        out = model(*inputs)
    return run, out


@functools.cache
def _stock_tracer() -> fx.Tracer:
    return fx.Tracer()  # made once: its constructor looks through the modules it autowraps


def timed_hooked_run(
    structure: Structure, model: nn.Module, inputs: Sequence[torch.Tensor]
) -> RunRecord:
    """``--measure`` for a model whose blocks hooks record: one hooked run on real inputs and
    weights, each unit timed and each value weighed. The counting modes are on (the units are
    told apart by what they compute), so each unit's time includes their per-op overhead."""
    device = model_device(model)
    return _run(structure, model, inputs, device, None, hooks=True, clock=True)


@contextlib.contextmanager
def _as_if_compiling():
    """``torch.compiler.is_compiling()`` answers True: libraries skip their value-dependent
    shortcuts for torch.compile and torch.export, which cannot decide them either (Hugging Face
    drops an all-ones attention mask after ``torch.all(mask == 1)``, and checks input ids for
    padding, unless compiling). Restored on exit."""
    compiler = torch.compiler
    is_compiling = compiler.is_compiling
    compiler.is_compiling = lambda: True
    try:
        yield
    finally:
        compiler.is_compiling = is_compiling


def _run_as_compiled(
    structure: Structure, model: nn.Module, inputs: Sequence[Any], hooks: bool
) -> RunRecord | None:
    """The meta (else fake) run again, as torch.compile would see the model
    (:func:`_as_if_compiling`), for a model that branched on values; None if it still cannot
    run. What it counts is the path a compiled model takes: the general one, e.g. with the
    attention mask applied whatever its values."""
    with _as_if_compiling():
        try:
            return _on_meta_else_fake(structure, model, inputs, hooks)
        except Exception:
            return None


def _on_meta_else_fake(
    structure: Structure,
    model: nn.Module,
    inputs: Sequence[Any],
    hooks: bool,
    step: TrainingStep | None = None,
) -> RunRecord:
    """The counting run on meta tensors, the fastest way that allocates nothing (real weights
    swapped for meta stand-ins during the run); where meta cannot (a tensor attribute that is
    neither parameter nor buffer, a branch on values), on fake tensors, whose error it raises.
    A training step runs on meta only: its stand-ins take the gradients and the optimizer's
    state, and the model's own parameters are left untouched."""
    if step is not None and step.amp is not None:  # (autocast has no meta backend)
        return _fake_step(structure, model, inputs, hooks, step)
    try:
        meta_state = _meta_state(structure, every=step is not None)
        meta_inputs = _empty_on(inputs, "meta", step is not None and step.input_grad)
        meta = torch.device("meta")
        return _run(structure, model, meta_inputs, meta, None, meta_state, hooks, step=step)
    except Exception as exc:
        if step is not None:
            if isinstance(exc, FlowprofError):
                raise
            raise UnsupportedModelError(
                f"the training step of {type(model).__name__} could not run on meta tensors: "
                f"{_one_line(exc)}"
            ) from exc
    device = model_device(model)
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    with fake_mode:
        fake_inputs = _empty_on(inputs, device)
    return _run(structure, model, fake_inputs, device, fake_mode, hooks=hooks)


def _fake_step(
    structure: Structure,
    model: nn.Module,
    inputs: Sequence[Any],
    hooks: bool,
    step: TrainingStep,
) -> RunRecord:
    """A training step on fake CPU tensors (no storage either): torch.autocast casts fake
    tensors as it casts real ones, not meta tensors. Stand-ins for every parameter and buffer,
    made in the fake mode, take the gradients and the optimizer's state, as on meta."""
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    cpu = torch.device("cpu")
    try:
        with fake_mode:
            state = _meta_state(structure, every=True, device=cpu)
            fake_inputs = _empty_on(inputs, cpu, step.input_grad)
        return _run(structure, model, fake_inputs, cpu, fake_mode, state, hooks, step=step)
    except FlowprofError:
        raise
    except Exception as exc:
        raise UnsupportedModelError(
            f"the mixed-precision training step of {type(model).__name__} could not run on "
            f"fake tensors: {_one_line(exc)}"
        ) from exc


def _empty_on(inputs: Sequence[Any], device: torch.device | str, grad: bool = False) -> list[Any]:
    """Empty tensors of the inputs' shapes and dtypes on ``device`` (other inputs as they are);
    ``grad``: the floating ones need a gradient."""
    return [
        torch.empty(tuple(x.shape), dtype=x.dtype, device=device).requires_grad_(
            grad and x.is_floating_point()
        )
        if isinstance(x, torch.Tensor)
        else x
        for x in inputs
    ]


def _meta_state(
    structure: Structure, every: bool = False, device: torch.device | str = "meta"
) -> dict[str, torch.Tensor]:
    """Meta stand-ins (no storage) for every parameter and buffer not on meta already (``every``:
    for those on meta too; a parameter's stand-in is a parameter that needs a gradient as it
    does, for a training step), and for the tensor constants torch.fx folded while tracing (made
    on the CPU, whatever the model's device)."""
    root = structure.root
    named = dict(root.named_parameters(remove_duplicate=False))
    named |= dict(root.named_buffers(remove_duplicate=False))
    for n in structure.graph.nodes:
        if n.op == "get_attr" and n.target not in named:
            value = _fetch(root, str(n.target))
            if isinstance(value, torch.Tensor):
                named[str(n.target)] = value
    if not every:
        return {
            n: torch.empty_like(t, device="meta")
            for n, t in named.items()
            if t.device.type != "meta"
        }
    out: dict[str, torch.Tensor] = {}
    made: dict[int, torch.Tensor] = {}  # (tied weights: one stand-in)
    for n, t in named.items():
        if id(t) not in made:
            empty = torch.empty_like(t, device=device)
            made[id(t)] = (
                nn.Parameter(empty, requires_grad=t.requires_grad)
                if isinstance(t, nn.Parameter)
                else empty
            )
        out[n] = made[id(t)]
    return out


def run_counts(
    structure: Structure,
    model: nn.Module,
    inputs: Sequence[Any],
    hooks: bool | None = None,
    step: TrainingStep | None = None,
) -> RunRecord:
    """Run the traced graph with the counters on: the record of the run (tracer/units.py), made
    from the fx graph's nodes and what each one did. Where the blocks are recorded by hooks
    (``hooks``, as :func:`uses_hooks` decides it when None; False for a pipeline, which needs the
    fx graph's nodes), the model itself is run with hooks instead, which fill the record. Call it
    inside ``eval_mode(model)``, the mode the graph was traced in (as ``tracer.trace`` does).

    On meta tensors, else fake ones (nothing allocated), unless the model branches on tensor
    values, which they cannot decide: then, given real inputs and real weights, it runs on those
    (the counts depend on shapes only, so they are the numbers a fake run would give for that
    path); not given them, it runs again as torch.compile sees the model (libraries skip their
    value-dependent shortcuts there), and ``structure.run_as_compiled`` says why.
    """
    if hooks is None:
        hooks = uses_hooks(structure, model)
    if step is not None:  # (see _on_meta_else_fake)
        return _on_meta_else_fake(structure, model, inputs, hooks, step)
    try:
        return _on_meta_else_fake(structure, model, inputs, hooks)
    except UnsupportedModelError:
        raise
    except Exception as exc:
        if not _data_dependent(exc):
            at = getattr(exc, "flowprof_node", None)
            raise UnsupportedModelError(
                f"shape propagation failed for {type(model).__name__}"
                f"{f' at {at}' if at else ''}: {_one_line(exc)}"
            ) from exc
        real = all(x.device.type != "meta" for x in inputs if isinstance(x, torch.Tensor)) and all(
            p.device.type != "meta" for p in model.parameters()
        )
        if not real:
            records = _run_as_compiled(structure, model, inputs, hooks)
            if records is None:
                raise UnsupportedModelError(
                    f"{type(model).__name__} branches on tensor values, which shapes alone "
                    "cannot decide: run it again with --measure, which builds the model with "
                    "real weights and runs it on random inputs (in Python: give a model on the "
                    "CPU and example tensors)"
                ) from exc
            structure.run_as_compiled = _one_line(exc)
            return records
    try:
        return _run(structure, model, inputs, model_device(model), None, hooks=hooks)
    except Exception as exc:
        raise UnsupportedModelError(
            f"running {type(model).__name__} failed: {_one_line(exc)}"
        ) from exc


# --- 3. the record of the run ------------------------------------------------------------


def _tensors(meta: Any) -> tuple[TensorMeta, ...]:
    if isinstance(meta, TensorMeta):
        return (meta,)
    if isinstance(meta, tuple):
        return tuple(t for m in meta for t in _tensors(m))
    return ()


def _stack(n: fx.Node, prefix: str) -> tuple[tuple[str, str, str], ...]:
    stack = n.meta.get("nn_module_stack") or {}
    out = []
    for key, (qualname, cls) in stack.items():
        qualname = qualname if isinstance(qualname, str) else str(qualname)
        key, qualname = key.removeprefix(prefix), qualname.removeprefix(prefix)
        if not qualname and prefix:  # the wrapper of a model traced as a whole
            continue
        name = cls if isinstance(cls, str) else getattr(cls, "__name__", str(cls))
        out.append((key, qualname, name.rsplit(".", 1)[-1]))
    return tuple(out)


_NOTHING = NodeRecord()


def _fx_record(
    structure: Structure, model: nn.Module, records: dict[str, NodeRecord], outside: Tally
) -> RunRecord:
    """The record of an fx run (tracer/units.py): the graph's nodes in order, each one an input,
    a weight, a unit call, a fold or the output, by the rules the hooked run follows too. A value
    is bound to its node's name; an in-place op's value also to the node it changed."""
    top, prefix = structure.root, structure.root_prefix
    record = RunRecord(outside=outside, parameters=tuple(model.parameters()))
    node_units = record.node_units
    bound = record.bound

    def reads(n: fx.Node) -> list[Any]:
        values = []
        for u in n.all_input_nodes:
            v = bound.get(u.name)
            if v is not None and v not in values:
                values.append(v)
        return values

    for n in structure.graph.nodes:
        rec = records.get(n.name, _NOTHING)
        tensors = _tensors(rec.out)
        op = n.op
        if op == "placeholder":
            if tensors:  # (else an optional parameter left at its default: not data)
                call, v = record.input(n.name, tensors)
                bound[n.name] = v
                node_units[n.name] = call.name
            continue
        if op == "get_attr":
            t = _fetch(top, str(n.target))
            if isinstance(t, torch.Tensor):
                record.weight(n.name, n.name, t, isinstance(t, nn.Parameter))
            continue
        if op == "output":
            node_units[n.name] = record.output(reads(n)).name
            continue
        if op != "call_module" and not RunRecord.is_data(bool(tensors), rec):
            continue  # sizes, flags: not data
        ins = reads(n)
        if op == "call_module":
            stack = _stack(n, prefix)
            call = record.module_call(stack, top.get_submodule(str(n.target)), ins, rec)
        elif RunRecord.is_fold(rec, ins):
            source = ins[0] if ins else None
            bound[n.name] = record.folded(
                n.name, n.target, source, tensors, rec.is_view, rec.requires_grad
            )
            if source is not None and source.producer is not None:
                node_units[n.name] = source.producer.name
                source.producer.tally.absorb_phases(rec)  # (its backward: the producer's)
            continue
        else:
            call = record.function_call(_stack(n, prefix), n.target, ins, rec)
        v = bound[n.name] = record.produced(call, n.name, tensors, rec.requires_grad)
        if rec.returned is not None:  # in place: later reads of what it changed read this
            bound[rec.returned] = v
        node_units[n.name] = call.name
    # (a training step) the backward of a node that is no unit and folds into none: outside's
    units = {id(c.tally) for c in record.calls}
    for rec in records.values():
        if rec.phases and id(rec) not in units:
            outside.absorb_phases(rec)
    return record


def _fetch(root: nn.Module, target: str) -> Any:
    obj: Any = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj

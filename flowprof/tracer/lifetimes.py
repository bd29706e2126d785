"""Memory of a run: every storage a forward pass or a training step allocates, who allocated it,
why it stays alive, and when it is freed.

The model's traced graph (torch.fx, :mod:`tracer.fx_trace`) runs node by node under a dispatch
mode that sees each ATen op's outputs. An output whose storage is new is an allocation; a weakref
finalizer on the storage's Python object records its free, at the moment the last tensor that
shares it dies (Python's reference counts and autograd's saved variables decide that, exactly as
in a real run: the lifetimes are the run's own, not a model of them).

On meta tensors (fake CPU tensors for mixed precision, which autocast needs) nothing is
allocated: this is the prediction, and it takes what tracing takes. On real CPU tensors the same
run allocates: that is the measurement (``device="cpu"``), whose storages are the real kernels'
outputs. Where the two differ, the meta kernels and the CPU kernels made different tensors.

Where the time is, the bytes are charged: a forward allocation to the fx node running (its
block, phase ``forward``); one in the backward to the block whose forward made the autograd node
that is running (nodes are tagged with their block as the forward makes them), phase
``backward``; the optimizer's to the block that owns the parameters it updates (the first block
that reads a parameter, as parameters are counted), phase ``optimizer``; the loss's to ``loss``.

What each storage is (its category) is decided by what it turned out to be:

- ``parameters`` and ``buffers``: the model's (stand-ins for them, made before the step);
- ``inputs``: the model's inputs and the loss's target;
- ``optimizer state``: made by a warm-up step before the measured one (steady state: momentum,
  Adam's moments and step counts exist when a step starts);
- ``gradients``: a parameter's ``.grad`` after the backward;
- ``saved activations``: what autograd saved for the backward (seen by a
  ``torch.autograd.graph.saved_tensors_hooks`` pack hook, charged to the block whose op saved it
  first), or what a checkpointed block keeps (its inputs);
- ``temporaries``: everything else: outputs passed on and freed, workspaces, the backward's
  intermediate gradients.

The step is one steady-state training step: the gradients start as None (``zero_grad`` sets
them so), the optimizer state exists; forward, loss, backward, then the optimizer of each block.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from flowprof.errors import BadSpecError, UnsupportedModelError
from flowprof.tracer import fx_trace, training_step
from flowprof.tracer.training_step import TrainingStep

CATEGORIES = (
    "parameters",
    "buffers",
    "inputs",
    "optimizer state",
    "gradients",
    "saved activations",
    "temporaries",
)
PHASES = ("forward", "loss", "backward", "optimizer")
_TAG = "flowprof-memory"  # autograd node metadata key: the block whose forward made the node


@dataclass
class Storage:
    """One allocation: its bytes, where it was made and freed (event indices), what it is."""

    nbytes: int
    block: str
    phase: str
    born: int  # index of its allocation event (-1: alive before the step)
    died: int | None = None  # index of its free event (None: alive after the step)
    category: str = "temporaries"
    saved_by: str | None = None  # the block whose op saved it for the backward first
    op: str = ""  # the ATen op whose output it was ("" for what existed before)


@dataclass(frozen=True)
class Event:
    """An allocation (``delta`` > 0) or a free, in execution order, and the live bytes after it."""

    block: str
    phase: str
    delta: int
    live: int
    storage: int  # index into Lifetimes.storages


@dataclass(frozen=True)
class Segment:
    """A stretch of the run spent in one block's one phase: live bytes at its start and end and
    the most live during it."""

    block: str
    phase: str
    start: int  # index of its first event
    end: int  # index after its last event
    live_before: int
    live_after: int
    peak: int


@dataclass
class Lifetimes:
    """The record of one run: storages, events, and the segments (block boundaries)."""

    storages: list[Storage] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    baseline: int = 0  # bytes alive when the step started (parameters, state, inputs)
    device: str = "meta"
    # a CUDA run: torch.cuda.memory_allocated() when the step started, and its maximum during it
    cuda_allocated: int | None = None
    cuda_max_allocated: int | None = None
    blocks: list[str] = field(default_factory=list)  # in forward order
    module_of: dict[str, str] = field(default_factory=dict)  # block -> enclosing module path

    @property
    def peak(self) -> int:
        return max([self.baseline, *(e.live for e in self.events)])

    @property
    def peak_at(self) -> Event | None:
        """The event at which the live bytes first reach the peak (None: the baseline is it)."""
        top = self.peak
        return next((e for e in self.events if e.live == top), None)

    def live_by_category(self, at: int) -> dict[str, int]:
        """Bytes alive after event ``at`` (-1: at the start), by category."""
        out = dict.fromkeys(CATEGORIES, 0)
        for s in self.storages:
            if s.born <= at and (s.died is None or s.died > at):
                out[s.category] += s.nbytes
        return out


_aten = torch.ops.aten
# In-place elementwise ops (the optimizers' and the backward's accumulations): on meta tensors the
# output is the input itself, whatever the meta kernel checks (a wrong shape would fail the real
# run, not this one; the CPU measurement runs the real kernels).
_IN_PLACE = frozenset(
    [
        _aten.add_,
        _aten.sub_,
        _aten.mul_,
        _aten.div_,
        _aten.addcmul_,
        _aten.addcdiv_,
        _aten.lerp_,
        _aten.sqrt_,
        _aten.clamp_,
        _aten.neg_,
        _aten.zero_,
        _aten.fill_,
        _aten.copy_,
        _aten.pow_,
    ]
)


def _plain_meta(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.is_meta


class _Shortcut(TorchDispatchMode):
    """Runs each op, on plain meta tensors through the tracer's shortcut (the output the meta
    kernel would make, made directly: tracer/meta_shapes.py)."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:  # (as tracer.fx_trace._AtenCounter: no dynamo here)
        return False

    def __init__(self, meta: bool):
        super().__init__()
        self.meta = meta  # plain meta tensors (not fake ones)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.meta:
            if func.overloadpacket in _IN_PLACE and args and _plain_meta(args[0]):
                return args[0]  # (an in-place elementwise op returns its input, as it was)
            shortcut = fx_trace._op_info(func)[1]
            if shortcut is not None:
                out = shortcut(func, args, kwargs)
                if out is not None:
                    return out
        return func(*args, **kwargs)


class _Allocations(_Shortcut):
    """Sees every op's outputs: new storages are allocations, charged to ``where``."""

    def __init__(self, log: _Log, meta: bool):
        super().__init__(meta)
        self.log = log

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = super().__torch_dispatch__(func, types, args, kwargs)
        log = self.log
        if log.cpu_kernels and func in _CPU_KERNELS:
            out = _CPU_KERNELS[func](args, out)
        node = torch._C._current_autograd_node()
        if node is not None:  # the backward: the block whose forward made the running node
            block = node.metadata.get(_TAG)
            if block is not None:
                log.where = (block, "recompute" if torch.is_grad_enabled() else "backward")
        log.op = func
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                log.seen(t)
        log.op = None
        return out


def _cpu_layer_norm(args: Any, out: Any) -> Any:
    """The CPU's LayerNorm keeps its mean and 1/std in the input's dtype (the meta kernel, like
    CUDA's, makes them fp32 for a 16-bit input)."""
    y, mean, rstd = out
    dtype = args[0].dtype
    if mean.dtype == dtype:
        return out
    return y, torch.empty_like(mean, dtype=dtype), torch.empty_like(rstd, dtype=dtype)


def _cpu_mse_loss(args: Any, out: Any) -> Any:
    """The CPU's mse_loss, reduced (mean or sum), returns its 0-dim result in a storage the size
    of its input: it reduces into the buffer of the elementwise losses, whose capacity stays (the
    meta kernel allocates the 0-dim result alone)."""
    x = args[0]
    if out.dim() != 0 or x.numel() <= 1:
        return out
    return torch.empty(x.numel(), dtype=out.dtype, device=out.device).as_strided((), ())


def _cpu_batch_norm(args: Any, out: Any) -> Any:
    """The CPU's BatchNorm on a 16-bit input with fp32 parameters (mixed precision: autocast
    keeps the weights fp32) keeps its batch mean and 1/std in fp32 (the meta kernel: in the
    input's dtype)."""
    x = args[0]
    y, mean, invstd = out
    mixed = any(
        isinstance(t, torch.Tensor) and t.dtype != x.dtype for t in args[1:5] if t is not None
    )
    if not mixed or mean.dtype == torch.float32:
        return out
    return y, mean.to(torch.float32), invstd.to(torch.float32)


# Ops whose CPU kernels' outputs differ in storage from the meta kernels': a prediction for the
# CPU (``kernels="cpu"``) gives the CPU's. Each was found by a CPU measurement
# (analyses/memory.py's differences) and checked against the CPU kernel in tests/test_memory.py.
_CPU_KERNELS = {
    torch.ops.aten.native_layer_norm.default: _cpu_layer_norm,
    torch.ops.aten.mse_loss.default: _cpu_mse_loss,
    torch.ops.aten.native_batch_norm.default: _cpu_batch_norm,
}


class _CpuAttention(TorchFunctionMode):
    """``scaled_dot_product_attention`` as the CPU runs it. On meta (and fake) tensors torch
    picks the math backend (the softmax's s x s output saved); the CPU picks by
    ``torch._fused_sdp_choice``, asked here with empty CPU tensors of the same shapes, and takes
    its flash kernel (the output and the log-sum-exp saved) where it can."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not nn.functional.scaled_dot_product_attention:
            return func(*args, **kwargs)
        q, k, v, *rest = args
        names = ("attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
        given = dict(zip(names, rest, strict=False)) | kwargs
        mask, p = given.get("attn_mask"), given.get("dropout_p", 0.0)
        causal, scale = given.get("is_causal", False), given.get("scale")
        if given.get("enable_gqa") or q.device.type == "cpu" and not _is_fake(q):
            return func(*args, **kwargs)
        with torch._C.DisableTorchFunction():
            probe = [
                torch.empty(t.shape, dtype=t.dtype, device="cpu").requires_grad_(t.requires_grad)
                for t in (q, k, v)
            ]
            cpu_mask = None if mask is None else torch.empty(mask.shape, dtype=mask.dtype)
            choice = torch._fused_sdp_choice(*probe, cpu_mask, p, causal, scale=scale)
        if choice != int(torch.nn.attention.SDPBackend.FLASH_ATTENTION):
            return func(*args, **kwargs)
        flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
        return flash(q, k, v, p, causal, attn_mask=mask, scale=scale)[0]


def _is_fake(t: torch.Tensor) -> bool:
    from torch._subclasses.fake_tensor import FakeTensor

    return isinstance(t, FakeTensor)


class _Log:
    """The run's record as it is made: which storages are alive (by their StorageImpl's
    address), where the run is (block, phase), the live bytes."""

    def __init__(self) -> None:
        self.rec = Lifetimes()
        self.where: tuple[str, str] = ("(start)", "setup")
        self.index: dict[int, int] = {}  # StorageImpl address -> index in rec.storages (alive)
        self.live = 0
        self.recording = False
        self.op: Any = None  # the op whose outputs are being seen
        self.cpu_kernels = False  # a prediction for the CPU: its kernels' outputs (below)

    def seen(self, t: torch.Tensor, category: str | None = None) -> int:
        s = t.untyped_storage()
        key = s._cdata
        at = self.index.get(key)
        if at is not None:
            if category and not self.rec.storages[at].category:
                self.rec.storages[at].category = category
            return at
        born = len(self.rec.events) if self.recording else -1
        block, phase = self.where
        at = len(self.rec.storages)
        op = "" if self.op is None else self.op.name()
        self.rec.storages.append(
            Storage(s.nbytes(), block, phase, born, category=category or "", op=op)
        )
        self.index[key] = at
        weakref.finalize(s, self.freed, key, at)
        if self.recording:
            self.live += s.nbytes()
            self.rec.events.append(Event(block, phase, s.nbytes(), self.live, at))
        else:
            self.rec.baseline += s.nbytes()
            self.live = self.rec.baseline
        return at

    def freed(self, key: int, at: int) -> None:
        if self.index.get(key) == at:
            del self.index[key]
        storage = self.rec.storages[at]
        if not self.recording:  # (before the step: a warm-up's temporaries; after: not ours)
            if storage.born == -1 and self.rec.events == []:
                self.rec.baseline -= storage.nbytes
                self.live = self.rec.baseline
                storage.died = -2  # (never alive in the step)
            return
        block, phase = self.where
        storage.died = len(self.rec.events)
        self.live -= storage.nbytes
        self.rec.events.append(Event(block, phase, -storage.nbytes, self.live, at))

    def saved(self, t: torch.Tensor) -> None:
        at = self.seen(t)
        s = self.rec.storages[at]
        if s.saved_by is None:
            s.saved_by = self.where[0]


def _tag(out: Any, block: str) -> None:
    """Tag the autograd nodes behind ``out`` that are not tagged yet with ``block``."""
    stack = [t.grad_fn for t in tree_leaves(out) if isinstance(t, torch.Tensor) and t.grad_fn]
    while stack:
        node = stack.pop()
        if _TAG in node.metadata:
            continue
        node.metadata[_TAG] = block
        stack.extend(n for n, _ in node.next_functions if n is not None)


def block_name(n: fx.Node) -> str:
    """The block an fx node is: a module call is its module's path, a function its node name."""
    return str(n.target) if n.op == "call_module" else n.name


def enclosing_module(n: fx.Node) -> str:
    """The path of the module whose forward an fx node runs in ("" at the top)."""
    if n.op == "call_module":
        return str(n.target)
    stack = n.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1]
    return path[0] if isinstance(path, tuple) else str(path)


class _Interpreter(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, log: _Log, checkpointed: set[str]):
        super().__init__(gm, garbage_collect_values=True)
        self.log = log
        self.checkpointed = checkpointed

    def run_node(self, n: fx.Node) -> Any:
        if n.op in ("placeholder", "output", "get_attr"):
            return super().run_node(n)
        block = block_name(n)
        self.log.where = (block, "forward")
        out = super().run_node(n)
        _tag(out, block)
        return out

    def call_module(self, target, args, kwargs):
        if target not in self.checkpointed:
            return super().call_module(target, args, kwargs)
        from torch.utils.checkpoint import checkpoint

        module = self.fetch_attr(target)
        for t in tree_leaves((args, kwargs)):  # what a checkpointed block keeps: its inputs
            if isinstance(t, torch.Tensor):
                self.log.saved(t)
        return checkpoint(module, *args, use_reentrant=False, **kwargs)


def _owners(gm: fx.GraphModule) -> dict[int, str]:
    """id(parameter) -> the block that reads it first (parameters are counted where first read)."""
    owner: dict[int, str] = {}
    for n in gm.graph.nodes:
        read: list[torch.Tensor] = []
        if n.op == "call_module":
            read = list(gm.get_submodule(str(n.target)).parameters())
        elif n.op == "call_function" or n.op == "call_method":
            for a in n.all_input_nodes:
                if a.op == "get_attr":
                    v = fx_trace._fetch(gm, str(a.target))
                    if isinstance(v, nn.Parameter):
                        read.append(v)
        for p in read:
            owner.setdefault(id(p), block_name(n))
    return owner


def run(
    model: nn.Module,
    inputs: Sequence[Any],
    step: TrainingStep | None,
    *,
    device: str = "meta",
    dtype: torch.dtype | None = None,
    checkpoint: Iterable[str] = (),
    kernels: str = "cpu",
) -> Lifetimes:
    """The lifetimes of one forward pass (``step`` None, in eval mode, no grad) or one
    steady-state training step of ``model`` on ``inputs`` (tensors, or shapes).

    ``device``: ``"meta"`` predicts (nothing allocated; fake CPU tensors under mixed precision),
    ``"cpu"`` or ``"cuda"`` measures (a real run on copies of the model's weights, the model
    untouched; on CUDA, the caching allocator's ``max_memory_allocated`` is read as well).
    ``dtype``: run the model in this dtype (its weights and floating inputs cast), as
    ``model.to(dtype)`` would. ``checkpoint``: module paths to recompute in the backward
    (``torch.utils.checkpoint``, non-reentrant), each run as one block. ``kernels``: whose
    kernels a prediction gives the outputs of where they differ from the meta kernels: ``"cpu"``
    (:data:`_CPU_KERNELS`), or ``"meta"`` (as they are; CUDA's agree with them there).
    """
    checkpointed = set(checkpoint)
    known = {name for name, _ in model.named_modules() if name}
    unknown = sorted(checkpointed - known)
    if unknown:
        raise BadSpecError(f"no module {unknown[0]!r} in {type(model).__name__} to checkpoint")
    with fx_trace.train_mode(model) if step is not None else fx_trace.eval_mode(model):
        structure = _structure(model, len(inputs), checkpointed)
        return _run(structure, inputs, step, device, dtype, checkpointed, kernels == "cpu")


def _structure(model: nn.Module, n_inputs: int, leaves: set[str]) -> fx_trace.Structure:
    structure = fx_trace.trace_structure(model, n_inputs, leaves=leaves)
    if structure.leaves_added:
        first = next(iter(structure.leaves_added))
        raise UnsupportedModelError(
            f"memory needs torch.fx to trace all of {type(model).__name__}; it could not "
            f"trace {first!r}: {structure.leaves_added[first]}"
        )
    return structure


def _state(
    structure: fx_trace.Structure, device: str, dtype: torch.dtype | None, empty: bool
) -> dict[str, torch.Tensor]:
    """Stand-ins for the weights, cast to ``dtype``: ``empty`` ones (a prediction: meta, or fake
    CPU tensors), else copies on ``device`` (random where the model's own are on meta)."""
    root = structure.root
    named = dict(root.named_parameters(remove_duplicate=False))
    named |= dict(root.named_buffers(remove_duplicate=False))
    out: dict[str, torch.Tensor] = {}
    made: dict[int, torch.Tensor] = {}
    for n, t in named.items():
        if id(t) not in made:
            cast = dtype if dtype is not None and t.is_floating_point() else t.dtype
            if empty or t.device.type == "meta":
                copy = torch.empty(t.shape, dtype=cast, device=device)
                if not empty:
                    copy.normal_(0, 0.02)
            else:
                copy = t.detach().to(device=device, dtype=cast, copy=True)
            made[id(t)] = (
                nn.Parameter(copy, requires_grad=t.requires_grad)
                if isinstance(t, nn.Parameter)
                else copy
            )
        out[n] = made[id(t)]
    return out


def _inputs(
    inputs: Sequence[Any], device: str, dtype: torch.dtype | None, grad: bool, empty: bool
) -> list:
    """The inputs on ``device``, floating ones cast to ``dtype``: empty for a prediction, else
    copies (random where the inputs given are shapes on meta)."""
    out = []
    for x in inputs:
        if isinstance(x, torch.Tensor):
            cast = dtype if dtype is not None and x.is_floating_point() else x.dtype
            if empty or x.device.type == "meta":
                y = torch.empty(tuple(x.shape), dtype=cast, device=device)
                if not empty:
                    y = y.normal_() if y.is_floating_point() else y.zero_()
            else:
                y = x.detach().to(device=device, dtype=cast, copy=True)
            out.append(y.requires_grad_(grad and y.is_floating_point()))
        else:
            out.append(x)
    return out


def _run(
    structure: fx_trace.Structure,
    inputs: Sequence[Any],
    step: TrainingStep | None,
    device: str,
    dtype: torch.dtype | None,
    checkpointed: set[str],
    cpu_kernels: bool,
) -> Lifetimes:
    from torch.nn.utils.stateless import _reparametrize_module

    log = _Log()
    log.cpu_kernels = cpu_kernels and device == "meta"
    rec = log.rec
    fake = step is not None and step.amp is not None and device == "meta"
    run_device = "cpu" if fake else device
    gm = structure.graph_module
    rec.device = device
    with contextlib.ExitStack() as stack:
        if fake:
            from torch._subclasses.fake_tensor import FakeTensorMode

            stack.enter_context(FakeTensorMode(allow_non_fake_inputs=False))
        empty = device == "meta"
        state = _state(structure, run_device, dtype, empty)
        xs = _inputs(inputs, run_device, dtype, step is not None and step.input_grad, empty)
        stack.enter_context(_reparametrize_module(gm, state, tie_weights=True))
        if run_device == "meta":
            stack.enter_context(fx_trace._autocast_on_meta())
        owners = _owners(gm)
        for n in gm.graph.nodes:
            if n.op not in ("placeholder", "output", "get_attr"):
                rec.blocks.append(block_name(n))
                rec.module_of[block_name(n)] = enclosing_module(n)
        groups: list[tuple[str, torch.optim.Optimizer, list[nn.Parameter]]] = []
        target = None
        if step is not None:  # (before the recording: its work is not the step's)
            with _Shortcut(run_device == "meta"):
                target = _warm_up(step, gm, xs, owners, groups, checkpointed, rec.blocks)
        stack.enter_context(_Allocations(log, run_device == "meta"))
        if log.cpu_kernels:
            stack.enter_context(_CpuAttention())
        for t in state.values():
            if isinstance(t, nn.Parameter):
                log.where = (owners.get(id(t), "(unused)"), "setup")
            log.seen(t, "parameters" if isinstance(t, nn.Parameter) else "buffers")
        log.where = ("(start)", "setup")
        for x in [*xs, target]:
            if isinstance(x, torch.Tensor):
                log.seen(x, "inputs")
        for block, opt, _ in groups:  # (the state: alive before the step, as in a real loop)
            log.where = (block, "setup")
            for st in opt.state.values():
                for v in st.values():
                    if isinstance(v, torch.Tensor):
                        log.seen(v, "optimizer state")
        cuda = device.startswith("cuda")
        if cuda:  # (the caching allocator's own count, beside the storages recorded)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            rec.cuda_allocated = torch.cuda.memory_allocated()
        log.recording = True
        try:
            if step is None:
                with torch.no_grad():
                    out = _Interpreter(gm, log, checkpointed).run(*xs)
                del out
            else:
                _step(step, gm, xs, target, groups, checkpointed, log)
        finally:
            log.recording = False
        if cuda:
            torch.cuda.synchronize()
            rec.cuda_max_allocated = torch.cuda.max_memory_allocated()
    _categorize(rec, log, state)
    rec.segments = _segments(rec)
    return rec


def _forward_and_loss(step, gm, xs, target, checkpointed, log) -> torch.Tensor:
    hooks = torch.autograd.graph.saved_tensors_hooks(lambda t: (log.saved(t), t)[1], lambda t: t)
    with hooks, _autocast(step, xs):
        out = _Interpreter(gm, log, checkpointed).run(*xs)
        log.where = ("loss", "loss")
        value = _loss(step, out, target)
        del out
        value = training_step.scaled(step, value)
        _tag(value, "loss")
    return value


def _autocast(step: TrainingStep, xs: Sequence[Any]) -> Any:
    """The step's autocast on the device the run is on (the CPU's for meta and fake tensors)."""
    on = next((x.device.type for x in xs if isinstance(x, torch.Tensor)), "cpu")
    if step.amp is None or on != "cuda":
        return step.autocast()
    return torch.autocast("cuda", dtype=torch.bfloat16 if step.amp == "bf16" else torch.float16)


def _loss(step: TrainingStep, out: Any, target: torch.Tensor | None) -> torch.Tensor:
    if target is None:
        return training_step.loss_of(step, out)[0]
    y = next(t for t in tree_leaves(out) if isinstance(t, torch.Tensor) and t.requires_grad)
    if step.loss_kind(y) == "mse":
        return nn.functional.mse_loss(y, target)
    scores = y.reshape(-1, y.shape[-1]) if y.dim() != 2 else y
    return nn.functional.cross_entropy(scores, target)


def _warm_up(step, gm, xs, owners, groups, checkpointed, blocks) -> torch.Tensor | None:
    """The step before the measured one: the optimizers made and stepped once (their state
    exists, as in a steady state), the loss's target made (an input of the step), the gradients
    set to None after (``zero_grad``). Run before the recording starts."""
    by_block: dict[str, list[nn.Parameter]] = {}
    params: dict[int, nn.Parameter] = {}
    for p in gm.parameters():
        if id(p) in params or not p.requires_grad:
            continue
        params[id(p)] = p
        block = owners.get(id(p))
        if block is not None:
            by_block.setdefault(block, []).append(p)
    order = {b: i for i, b in enumerate(blocks)}
    target = None
    if step.loss in ("auto", "mse", "cross-entropy"):
        with torch.no_grad(), _autocast(step, xs):
            probe = _Interpreter(gm, _Log(), checkpointed).run(*xs)
        y = next((t for t in tree_leaves(probe) if isinstance(t, torch.Tensor)), None)
        if y is not None:
            kind = step.loss_kind(y)
            if kind == "mse":
                target = torch.zeros(y.shape, dtype=y.dtype, device=y.device)
            elif kind == "cross-entropy":
                rows = y.numel() // y.shape[-1]
                target = torch.zeros(rows, dtype=torch.long, device=y.device)
        del probe, y
    if step.update:
        for block in sorted(by_block, key=lambda b: order.get(b, len(order))):
            ps = by_block[block]
            for p in ps:
                p.grad = torch.zeros_like(p)
            opt = step.make_optimizer(ps)
            opt.step()
            for p in ps:
                p.grad = None
            groups.append((block, opt, ps))
    return target


def _step(step, gm, xs, target, groups, checkpointed, log) -> None:
    value = _forward_and_loss(step, gm, xs, target, checkpointed, log)
    log.where = ("loss", "backward")
    value.backward()
    del value
    for block, opt, _ in groups:
        log.where = (block, "optimizer")
        opt.step()
    log.where = ("(end)", "optimizer")


def _categorize(rec: Lifetimes, log: _Log, state: dict[str, torch.Tensor]) -> None:
    """Each storage's category from what it turned out to be (module doc)."""
    grads: set[int] = set()
    for t in state.values():
        if isinstance(t, nn.Parameter) and t.grad is not None:
            grads.add(t.grad.untyped_storage()._cdata)
    grad_at = {log.index[k] for k in grads if k in log.index}
    for i, s in enumerate(rec.storages):
        if s.category:
            continue
        if i in grad_at:
            s.category = "gradients"
        elif s.saved_by is not None:
            s.category = "saved activations"
        else:
            s.category = "temporaries"


def _segments(rec: Lifetimes) -> list[Segment]:
    out: list[Segment] = []
    live = rec.baseline
    start = 0
    for i, e in enumerate(rec.events):
        if i > start and (e.block, e.phase) != (rec.events[start].block, rec.events[start].phase):
            out.append(_segment(rec, start, i, live))
            live = rec.events[i - 1].live
            start = i
    if rec.events:
        out.append(_segment(rec, start, len(rec.events), live))
    return out


def _segment(rec: Lifetimes, start: int, end: int, before: int) -> Segment:
    first = rec.events[start]
    peak = max(e.live for e in rec.events[start:end])
    return Segment(first.block, first.phase, start, end, before, rec.events[end - 1].live, peak)

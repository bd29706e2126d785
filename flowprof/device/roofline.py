"""Each block's predicted time on a device, from its counts and bytes (the roofline model).

For every leaf block (one leaf-module call or one computing function call):

- **FLOPs** = 2 x ``macs`` (matrix products: conv, linear, matmul, attention) + the block's other
  operations (its elementary operations beyond those of the products: normalisation, softmax,
  activations, bias additions ...; a product's K multiplications and K-1 additions per dot
  product are its 2K FLOPs).
- **bytes moved** = inputs + outputs + weights, at the accounted precision: the bits of the
  edges into the block and of the distinct tensors it sends on (``Edge.bits``,
  ``Block.activation_bits``: the model's floating tensors at the precision, other tensors at
  their own width) and its parameters and buffers at the precision, over 8. This is the least
  a block must read and write once; what it re-reads from memory inside (a tiled GEMM
  re-reading a tile) is not counted.
- **arithmetic intensity** = FLOPs / bytes.
- **roofline time** = max(compute, memory): compute = 2 x macs / matrix rate + other ops /
  vector rate, memory = bytes / bandwidth. The **bound** is the larger term.
- **predicted time** = roofline time + the fixed cost of the call (:func:`overhead`; on a GPU
  the larger of the two, refinement 5).

Refinements, each from a measurement of the device (empty for a datasheet GPU, which is then the
plain roofline at its peaks), never from the blocks being predicted:

1. *Efficiency by op size*: the matrix rate is read from the measured curve of the op's class
   (``conv`` for convolutions, ``matmul`` for the rest) at the op's FLOPs: small products reach
   a smaller share of the peak (threading, packing and blocking overheads of the BLAS/oneDNN
   kernels) than the large GEMM that sets the peak. The ladders read their weights cold, from
   main memory, as a layer of a model larger than the cache does (microbench.py).
2. *Bandwidth by working set*: the bandwidth is read from the measured STREAM-triad curve at the
   bytes the block moves: a block whose tensors fit in cache is not held to main memory's speed.
3. *Ceilings per op kind*: attention's batched products (two batched operands) are read from a
   measured batched-matmul ladder, not the square one: many small matmuls reach less per FLOP.
4. *Cold weights*: when the model's weights are more than the last-level cache holds, each
   block's weights are read at main memory's bandwidth (a forward pass evicts them before the
   next reads them again), and only its activations, just written by the block before, at the
   working-set bandwidth of refinement 2.
5. *Call overhead*: each block pays the measured fixed cost of one fx node of a trivial op
   (Python interpreter, dispatcher, allocation; on a GPU the launch), plus that of one aten op
   per further op it calls (``Unit.ops``): without it, every small block is predicted far too
   fast. On a CPU the host runs the kernels itself, so the overhead adds to the roofline time;
   on a GPU it launches them asynchronously, so a block takes the longer of the two (the GPU
   waits for the host only when the kernels are shorter than their launches). A datasheet GPU
   has no measured overhead (0).

10. *Conv ladders by image size* (:func:`ladder`): the conv ladder is measured on 32 x 32, 16 x
   16 and 8 x 8 images; a 2-D convolution is read from the one nearest its output's side
   (sqrt(H x W), in ratio), forward and backward: at the same FLOPs, a convolution over few
   pixels and many channels (resnet's last stage: 7 x 7, 512 channels; a GEMM with a short
   side) reaches less of the peak than one over many pixels. (Numbered 10: refinements 6 to 9
   are the training phases', below.)

A block grouped at a depth is predicted as the sum of its leaf blocks (the roofline applies per
kernel, one after another; a group's pooled FLOPs and bytes would let one member's compute hide
another's memory traffic), and its bound is that of the members holding most of its time.

**The training phases** (a graph traced with ``phases=``; :func:`predict_phases`). The same
roofline, on each phase's counts (``Block.counts()[phase]``) and the bytes that phase moves:

- *Backward* of a leaf block (:func:`backward_bytes`):

  - **reads** (``input_bytes``): the incoming gradient, one tensor per consumer of what the block
    sent on (``Edge.grad_bits`` of its out-edges but the one to the output node, whose gradient
    the loss block sends: each consumer's backward writes its own, and autograd adds them up),
    and the saved activations: the block's forward inputs (the bits of
    its in-edges; what convolution, linear, matmul and the norms keep for the backward; an
    activation that keeps its output instead keeps a tensor of the same size);
  - **writes** (``output_bytes``): the input gradient, only for the inputs that need one (the
    ``grad_bits`` of its in-edges: none for the first layer, whose input needs no gradient);
  - **weights** (``weight_bytes``): the weights read, at the accounted precision, only when an
    input gradient is computed (it is the incoming gradient times the weight; the weight
    gradient needs only the saved input and the incoming gradient), plus the weight and bias
    gradients written (``Block.param_grad_bits``: one per trainable element; none for a frozen
    layer).

  Refinement 6, *cold saved activations*: the forward wrote them long before the backward reads
  them, in reverse order, after every later block's forward and backward; when the model's
  activations (the bits every block sends on) are more than the last-level cache, they are read
  at main memory's bandwidth, the gradients (just written by the block after) at the
  working-set bandwidth. The call overhead (refinement 5) is that of one autograd node of a
  trivial op (``measured["autograd_node_seconds"]``, timed as the measurement times a node; the
  fx node's cost where it is not measured) plus one aten op per further backward op the block
  ran.
  Refinement 8, *backward ceilings*: the matrix rate is read from the measured backward
  ladder of the op's class (``conv_backward``, ``matmul_backward``, ``bmm_backward``:
  microbench.py runs each forward ladder backward by autograd; a transposed convolution and a
  weight gradient that sums over the batch and the image do not reach the forward's rate), at
  the size of one of the backward's products, the forward's matrix FLOPs: the input gradient
  and the weight gradient are each a product with the forward's multiply-accumulates, run one
  after the other, not one product of their sum. A device without those ladders reads the
  forward's (``Device.matrix_rate``: the class's forward curve, the ``matmul`` curve, the
  peak).
- *Optimizer* of a leaf block (:func:`optimizer_bytes`), over its ``trainable`` parameter
  elements at the accounted precision: the least it must move is the parameters read and
  written, the gradients read and each state tensor read and written (SGD with momentum: 1
  state tensor, 5 accesses per element; Adam and AdamW: 2, 7 accesses). Refinement 7, *as the
  implementation streams it*: torch.optim's for-loop implementation (what runs on the CPU)
  makes one pass over memory per op, so it moves more, in accesses per element
  (:data:`OPTIMIZER_ACCESSES`): SGD ``buf.mul_`` 2 + ``buf.add_(grad)`` 3 + ``param.add_(buf)``
  3 = 8; Adam ``exp_avg.lerp_(grad)`` 3 + ``exp_avg_sq.mul_`` 2 + ``.addcmul_(grad, grad)`` 3 +
  ``sqrt`` 2 + ``div`` 2 + ``add_(eps)`` 2 + ``param.addcdiv_(exp_avg, denom)`` 4 = 18; AdamW
  adds ``param.mul_(1 - lr wd)`` 2 = 20. The bandwidth: when the model's weights are more than
  the last-level cache holds (refinement 4), main memory's (a step touches each parameter,
  gradient and state tensor once, and the rest of the step, the other blocks' updates, the
  backward before, evicts it); else the working set's (parameters, gradients and state). Its
  compute is every operation counted over the vector rate. Its call overhead is measured per
  optimizer (``measured["optimizer_seconds"]``: the fixed cost of one ``step()`` call and of
  each aten op it dispatches, the Python work of torch.optim's loop; the fx node's and aten
  op's costs where not measured). An optimizer the step names by a
  function has no table entry: the least bytes with no state, which a note says.
  Refinement 9, *the optimizer's own rate*: where the device has it measured
  (``measured["optimizer_curves"]``: parameter elements per second of the optimizer's step
  over one parameter, by its size, the fixed costs taken off), the compute term is the block's
  trainable elements over that rate at its size, in place of its operations over the vector
  rate: the loop's square roots, divisions and lerps run slower per element than the ``mul``
  the vector rate is measured with, and each of its passes waits for the one before. The
  ladder stops at 2^18 elements (microbench.py says why); a larger block reads its last point,
  and is then usually held by the memory term.

The forward of a training step is predicted as above (its op count and overhead are the
forward's alone).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from flowprof.device.table import Device
from flowprof.tracer.counts import ZERO, Phase
from flowprof.tracer.graph import Block, BlockGraph, Precision, Unit

# torch.optim's for-loop steps (what runs on the CPU): state tensors per parameter, and element
# accesses per parameter element, the least (each tensor once) and as the loop streams them
# (module docstring, refinement 7)
OPTIMIZER_STATES = {"sgd": 1, "adam": 2, "adamw": 2}
OPTIMIZER_ACCESSES = {"sgd": 8, "adam": 18, "adamw": 20}


class Bound(StrEnum):
    """What limits a block's time in the roofline model."""

    COMPUTE = "compute"
    MEMORY = "memory"


BATCHED_KINDS = ("matmul", "bmm", "baddbmm", "einsum", "scaled_dot_product_attention")
CONV_KINDS = ("Conv1d", "Conv2d", "Conv3d", "conv1d", "conv2d", "conv3d", "convolution")


CONV_MAIN_SIDE = 32  # the image side of the main conv ladder (microbench.conv_curve)


def ladder(block: Block, device: Device, precision: str, base: str) -> str:
    """The measured ladder a block's products are read from: ``base`` (``op_class(block)``,
    with ``_backward`` for a backward), and for a 2-D convolution the ladder whose image side is
    nearest (in ratio) the block's output side, sqrt(H x W) (refinement 10): ``conv@8``,
    ``conv@16`` where the device has them, else ``conv`` (32 x 32)."""
    if not base.startswith("conv") or not block.output_shapes:
        return base
    shape = block.output_shapes[0]
    if len(shape) != 4:
        return base
    side = math.sqrt(shape[2] * shape[3])
    if side <= 0:
        return base
    sides = {CONV_MAIN_SIDE: base}
    prefix = f"{precision}/{base}@"
    for key in device.matrix_curves:
        if key.startswith(prefix) and key[len(prefix) :].isdigit():
            sides[int(key[len(prefix) :])] = key.split("/", 1)[1]
    best = min(sides, key=lambda s: abs(math.log(side / s)))
    return sides[best]


def op_class(block: Block) -> str:
    """The micro-benchmark a block's matrix products are read from: ``conv`` for convolutions;
    ``bmm`` for a product of two batched operands (attention's per-head products: many small
    matmuls, slower per FLOP than one large one); ``matmul`` for the rest (linear layers, whose
    weight is one matrix whatever the input's rank)."""
    if block.kind in CONV_KINDS or block.kind.lower().startswith("conv"):
        return "conv"
    batched = [s for s in block.input_shapes if len(s) >= 3]
    if block.kind in BATCHED_KINDS and len(batched) >= 2:
        return "bmm"
    return "matmul"


@dataclass(frozen=True)
class BlockTime:
    """The prediction (and measurement, if any) of one block. Seconds, bytes, FLOPs."""

    block: str
    kind: str
    matrix_flops: float  # 2 x macs
    other_flops: float  # every other operation
    input_bytes: float
    output_bytes: float
    weight_bytes: float
    compute_seconds: float
    memory_seconds: float
    roofline_seconds: float  # a leaf: max(compute, memory); a group: the sum of its members'
    bound: Bound  # a leaf: the larger term; a group: that of the members with most of its time
    overhead_seconds: float
    measured_seconds: float | None = None
    members: int = 1  # leaf blocks summed into it
    asynchronous: bool = False  # a GPU: the host's launches overlap the kernels (refinement 5)
    phase: str = "forward"  # forward, backward or optimizer (a training step's phases)

    @property
    def flops(self) -> float:
        return self.matrix_flops + self.other_flops

    @property
    def bytes(self) -> float:
        return self.input_bytes + self.output_bytes + self.weight_bytes

    @property
    def intensity(self) -> float:
        """FLOPs per byte moved (0 for a block that moves nothing)."""
        return self.flops / self.bytes if self.bytes else 0.0

    @property
    def predicted_seconds(self) -> float:
        if self.asynchronous:
            return max(self.roofline_seconds, self.overhead_seconds)
        return self.roofline_seconds + self.overhead_seconds

    @property
    def gemm_dominated(self) -> bool:
        """Most of its FLOPs are matrix products (conv, linear, matmul)."""
        return self.matrix_flops > 0 and self.matrix_flops >= self.other_flops

    @property
    def error(self) -> float | None:
        """(predicted - measured) / measured; None when not measured."""
        if not self.measured_seconds:
            return None
        return (self.predicted_seconds - self.measured_seconds) / self.measured_seconds

    @property
    def measured_bound(self) -> Bound | None:
        """The roofline term the measurement is closest to (in ratio), after the predicted call
        overhead is taken off: a block labelled memory-bound that runs far faster than its bytes
        at the bandwidth allow, nearer its compute time, was not held by memory, and the other
        way round. None when not measured."""
        if self.measured_seconds is None:
            return None
        t = self.measured_seconds
        if not self.asynchronous:
            t = max(t - self.overhead_seconds, 1e-12)
        if self.compute_seconds <= 0:
            return Bound.MEMORY
        if self.memory_seconds <= 0:
            return Bound.COMPUTE
        far_c = abs(math.log(t / self.compute_seconds))
        far_m = abs(math.log(t / self.memory_seconds))
        return Bound.COMPUTE if far_c <= far_m else Bound.MEMORY

    def to_dict(self) -> dict[str, Any]:
        return {
            "block": self.block,
            "kind": self.kind,
            "phase": self.phase,
            "flops": self.flops,
            "matrix_flops": self.matrix_flops,
            "other_flops": self.other_flops,
            "bytes": self.bytes,
            "input_bytes": self.input_bytes,
            "output_bytes": self.output_bytes,
            "weight_bytes": self.weight_bytes,
            "intensity": self.intensity,
            "bound": self.bound.value,
            "compute_seconds": self.compute_seconds,
            "memory_seconds": self.memory_seconds,
            "overhead_seconds": self.overhead_seconds,
            "predicted_seconds": self.predicted_seconds,
            "measured_seconds": self.measured_seconds,
            "error": self.error,
            "measured_bound": None if self.measured_bound is None else self.measured_bound.value,
        }


@dataclass(frozen=True)
class Prediction:
    """Predicted (and measured) time of every block of a graph on one device."""

    device: Device
    precision: str
    blocks: tuple[BlockTime, ...]
    model: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)
    phase: str = "forward"

    def measured(self) -> list[BlockTime]:
        return [b for b in self.blocks if b.measured_seconds is not None]

    def predicted_seconds(self) -> float:
        return sum(b.predicted_seconds for b in self.blocks)

    def measured_seconds(self) -> float | None:
        m = self.measured()
        return sum(b.measured_seconds for b in m) if m and len(m) == len(self.blocks) else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "phase": self.phase,
            "device": self.device.to_dict(),
            "precision": self.precision,
            "predicted_seconds": self.predicted_seconds(),
            "measured_seconds": self.measured_seconds(),
            "blocks": [b.to_dict() for b in self.blocks],
            "notes": list(self.notes),
        }


def error_summary(blocks: Iterable[BlockTime]) -> dict[str, Any]:
    """Over the measured ``blocks``: how many, the median and 90th percentile of
    |predicted - measured| / measured, and the share whose bound the measurement agrees with."""
    measured = [b for b in blocks if b.error is not None]
    errors = sorted(abs(b.error) for b in measured)
    if not errors:
        return {"blocks": 0, "median_abs_error": None, "p90_abs_error": None, "bound_agree": None}
    return {
        "blocks": len(errors),
        "median_abs_error": statistics.median(errors),
        "p90_abs_error": percentile(errors, 0.9),
        "bound_agree": sum(b.bound == b.measured_bound for b in measured) / len(measured),
    }


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` by linear interpolation between closest ranks."""
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (pos - lo) * (s[hi] - s[lo])


_PREFIXES = tuple(f"{p.value}:" for p in Phase if p is not Phase.FORWARD)


def phase_ops(unit: Unit | None, phase: Phase = Phase.FORWARD) -> int:
    """Op calls (counted or not) the unit ran in ``phase`` (a training step's unit records the
    other phases' ops as ``phase:name``)."""
    if unit is None:
        return 0
    calls = [*unit.ops, *unit.uncounted]
    if phase is Phase.FORWARD:
        return sum(n for name, n in calls if not name.startswith(_PREFIXES))
    prefix = f"{phase.value}:"
    return sum(n for name, n in calls if name.startswith(prefix))


def overhead(
    device: Device, unit: Unit | None, phase: Phase = Phase.FORWARD, optimizer: str = ""
) -> float:
    """The fixed cost of one block's ``phase`` (refinement 5): forward, one fx node plus one aten
    op per further op it calls; backward, one autograd node plus one aten op per further op;
    optimizer, one ``step()`` call plus the measured per-op cost of ``optimizer`` per op (see
    the module docstring)."""
    ops = phase_ops(unit, phase)
    if phase is Phase.FORWARD:
        return device.call_seconds + (max(1, ops) - 1) * device.op_seconds
    if phase is Phase.BACKWARD:
        node = device.measured.get("autograd_node_seconds", device.call_seconds)
        return node + (max(1, ops) - 1) * device.op_seconds
    call, per_op = device.measured.get("optimizer_seconds", {}).get(
        optimizer, (device.call_seconds, device.op_seconds)
    )
    return call + ops * per_op


def weights_stay_cold(graph: BlockGraph, device: Device, precision: str) -> bool:
    """Whether each block's weights come from main memory (refinement 4): when the model's
    weights at ``precision`` are more than the device's cache holds (``measured["cache_bytes"]``;
    a device without that figure: always), a pass has evicted a block's weights by the next."""
    cache = device.measured.get("cache_bytes")
    if not cache:
        return True
    weight_bits = sum(u.params + u.buffers for u in graph.units) * _bits(precision)
    return weight_bits / 8 > cache


def _bits(precision: str) -> int:
    try:
        return Precision(precision).bits
    except ValueError:  # a device precision no Precision names (tf32): fp32 tensors
        return 32


def leaf_time(
    graph: BlockGraph,
    block: Block,
    device: Device,
    precision: str,
    unit: Unit | None = None,
    weights_cold: bool = False,
) -> BlockTime:
    """The prediction for one leaf ``block`` of ``graph`` (see the module docstring)."""
    bits = _bits(precision)
    input_bits = sum(d["edge"].bits for _, _, d in graph.graph.in_edges(block.name, data=True))
    matrix = 2.0 * block.macs
    other = max(float(block.count.total) - matrix, 0.0)
    in_bytes, out_bytes = input_bits / 8, block.activation_bits / 8
    weight_bytes = (block.param_bits + block.buffers * bits) / 8
    nbytes = in_bytes + out_bytes + weight_bytes
    compute = 0.0
    if matrix:
        cls = ladder(block, device, precision, op_class(block))
        compute += matrix / device.matrix_rate(precision, cls, matrix)
    if other:
        compute += other / device.vector_flops
    if weights_cold:  # (refinement 4) the weights from main memory, the activations from cache
        moved = in_bytes + out_bytes
        memory = weight_bytes / device.bandwidth
        memory += moved / device.bandwidth_at(moved) if moved else 0.0
    else:
        memory = nbytes / device.bandwidth_at(nbytes) if nbytes else 0.0
    return BlockTime(
        block=block.name,
        kind=block.kind,
        matrix_flops=matrix,
        other_flops=other,
        input_bytes=in_bytes,
        output_bytes=out_bytes,
        weight_bytes=weight_bytes,
        compute_seconds=compute,
        memory_seconds=memory,
        roofline_seconds=max(compute, memory),
        bound=Bound.COMPUTE if compute >= memory else Bound.MEMORY,
        overhead_seconds=overhead(device, unit),
        measured_seconds=block.seconds,
        asynchronous=device.kind == "gpu",
    )


@dataclass(frozen=True)
class BackwardBytes:
    """What one block's backward moves, in bytes (module docstring)."""

    incoming_gradient: float  # read: the gradients of what it sent on, one per consumer
    saved_activations: float  # read: its forward inputs
    input_gradient: float  # written: the gradients of its inputs that need one
    weights: float  # read: only when an input gradient is computed
    weight_gradients: float  # written: one per trainable parameter element


def backward_bytes(graph: BlockGraph, block: Block, precision: str) -> BackwardBytes:
    """The bytes ``block``'s backward moves at ``precision`` (see the module docstring)."""
    out_edges = [  # (none from the output node: the loss sends the gradient)
        d["edge"]
        for _, dst, d in graph.graph.out_edges(block.name, data=True)
        if graph.block(dst).role != "output"
    ]
    in_edges = [d["edge"] for _, _, d in graph.graph.in_edges(block.name, data=True)]
    input_gradient = sum(e.grad_bits for e in in_edges) / 8
    return BackwardBytes(
        incoming_gradient=sum(e.grad_bits for e in out_edges) / 8,
        saved_activations=sum(e.bits for e in in_edges) / 8,
        input_gradient=input_gradient,
        weights=block.param_bits / 8 if input_gradient else 0.0,
        weight_gradients=block.trainable * _bits(precision) / 8,
    )


def optimizer_bytes(block: Block, precision: str, optimizer: str) -> tuple[float, float, float]:
    """(the least bytes, the bytes as torch.optim's for-loop streams them, the working set) of
    ``block``'s update by ``optimizer`` (``sgd``, ``adam``, ``adamw``; another: no state)."""
    element = block.trainable * _bits(precision) / 8
    states = OPTIMIZER_STATES.get(optimizer, 0)
    least = element * (3 + 2 * states)  # param read and written, grad read, state read/written
    streamed = element * OPTIMIZER_ACCESSES.get(optimizer, 3 + 2 * states)
    return least, streamed, element * (2 + states)


def _memory(parts: list[tuple[float, bool]], device: Device) -> float:
    """Seconds to move ``parts`` (bytes, cold): a cold part at main memory's bandwidth, the rest
    together at the working-set bandwidth of their sum (refinements 2, 4 and 6)."""
    warm = sum(b for b, cold in parts if not cold)
    cold = sum(b for b, c in parts if c)
    seconds = cold / device.bandwidth if cold else 0.0
    return seconds + (warm / device.bandwidth_at(warm) if warm else 0.0)


def leaf_phase_time(
    graph: BlockGraph,
    block: Block,
    device: Device,
    precision: str,
    phase: Phase,
    unit: Unit | None = None,
    weights_cold: bool = False,
    activations_cold: bool = False,
    optimizer: str = "",
) -> BlockTime:
    """The prediction for the ``phase`` (backward or optimizer) of one leaf ``block`` of a
    training step's ``graph`` (see the module docstring)."""
    count = block.counts().get(phase, ZERO)
    matrix = 2.0 * count.macs
    other = max(float(count.total) - matrix, 0.0)
    compute = 0.0
    if matrix:  # (refinements 1 and 8) the backward's rate at one product's size
        size = 2.0 * block.macs if block.macs else matrix
        cls = ladder(block, device, precision, f"{op_class(block)}_backward")
        compute += matrix / device.matrix_rate(precision, cls, size)
    if other:
        compute += other / device.vector_flops
    if phase is Phase.BACKWARD:
        b = backward_bytes(graph, block, precision)
        in_bytes = b.incoming_gradient + b.saved_activations
        out_bytes = b.input_gradient
        weight_bytes = b.weights + b.weight_gradients
        memory = _memory(
            [
                (b.incoming_gradient + b.input_gradient, False),
                (b.saved_activations, activations_cold),
                (weight_bytes, weights_cold),
            ],
            device,
        )
    else:
        _, streamed, working_set = optimizer_bytes(block, precision, optimizer)
        in_bytes = out_bytes = 0.0
        weight_bytes = streamed
        # (refinements 4 and 7) each tensor is touched once a step: from main memory when the
        # model's weights are more than the cache holds
        bandwidth = device.bandwidth if weights_cold else device.bandwidth_at(working_set)
        memory = streamed / bandwidth if streamed else 0.0
        curve = device.measured.get("optimizer_curves", {}).get(optimizer)
        if curve and block.trainable:  # (refinement 9) the optimizer's own measured rate
            from flowprof.device.table import interpolate

            points = tuple((float(n), float(r)) for n, r in curve)
            compute = block.trainable / interpolate(points, block.trainable)
    return BlockTime(
        block=block.name,
        kind=block.kind,
        matrix_flops=matrix,
        other_flops=other,
        input_bytes=in_bytes,
        output_bytes=out_bytes,
        weight_bytes=weight_bytes,
        compute_seconds=compute,
        memory_seconds=memory,
        roofline_seconds=max(compute, memory),
        bound=Bound.COMPUTE if compute >= memory else Bound.MEMORY,
        overhead_seconds=overhead(device, unit, phase, optimizer),
        measured_seconds=block.seconds_of(phase),
        asynchronous=device.kind == "gpu",
        phase=phase.value,
    )


def activations_stay_cold(graph: BlockGraph, device: Device) -> bool:
    """Whether the backward reads the saved activations from main memory (refinement 6): when
    the bits every block sends on are more than the device's cache holds (a device without that
    figure: always)."""
    cache = device.measured.get("cache_bytes")
    if not cache:
        return True
    return sum(b.activation_bits for b in graph.blocks()) / 8 > cache


def _summed(block: Block, parts: list[BlockTime]) -> BlockTime:
    """A grouped block as the sum of its leaf blocks (their kernels run one after another); its
    bound that of the members holding most of its roofline time."""
    by_bound = {Bound.COMPUTE: 0.0, Bound.MEMORY: 0.0}
    for p in parts:
        by_bound[p.bound] += p.roofline_seconds
    return BlockTime(
        block=block.name,
        kind=block.kind,
        matrix_flops=sum(p.matrix_flops for p in parts),
        other_flops=sum(p.other_flops for p in parts),
        input_bytes=sum(p.input_bytes for p in parts),
        output_bytes=sum(p.output_bytes for p in parts),
        weight_bytes=sum(p.weight_bytes for p in parts),
        compute_seconds=sum(p.compute_seconds for p in parts),
        memory_seconds=sum(p.memory_seconds for p in parts),
        roofline_seconds=sum(p.roofline_seconds for p in parts),
        bound=max(by_bound, key=lambda k: by_bound[k]),
        # what the members' predictions add beyond their roofline times (on a GPU, the launches
        # not hidden behind kernels), so that the group's prediction is exactly their sum
        overhead_seconds=sum(p.predicted_seconds - p.roofline_seconds for p in parts),
        measured_seconds=block.seconds_of(parts[0].phase if parts else Phase.FORWARD),
        members=len(parts),
        phase=parts[0].phase if parts else Phase.FORWARD.value,
    )


def resolve(device: str | Device) -> tuple[Device, list[str]]:
    """A Device from its name (:func:`flowprof.device.get`), with notes on what was done."""
    if isinstance(device, Device):
        return device, []
    from flowprof.device import get_with_notes

    return get_with_notes(device)


def predict_time(
    graph: BlockGraph,
    device: str | Device = "cpu",
    precision: str | None = None,
    phase: str | Phase = Phase.FORWARD,
) -> Prediction:
    """The predicted time of every block of ``graph`` on ``device`` (a name such as ``"h100"``
    or ``"cpu"``, or a :class:`~flowprof.device.Device`), at ``precision`` (default the graph's
    accounted precision), beside the measured time where the graph was traced with
    ``measure=True``. ``phase``: a training step's ``backward`` or ``optimizer`` (the blocks
    that have such work), default the forward. See this module's docstring for the model and
    its refinements."""
    dev, notes = resolve(device)
    phase = _phase(phase, graph)
    prec = precision or graph.precision.value
    dev.peak(prec)  # an unlisted precision: one clear error before any work
    leaf = graph if graph.depth is None else graph.by_block(None)
    units = {u.name: u for u in graph.units}
    cold = weights_stay_cold(graph, dev, prec)
    optimizer = str((graph.meta.get("training_step") or {}).get("optimizer") or "")
    if phase is Phase.OPTIMIZER and optimizer not in OPTIMIZER_STATES:
        notes.append(
            f"optimizer {optimizer or '?'}: no table of its state; its bytes are the least with "
            "no state (parameters read and written, gradients read)"
        )

    def one(b: Block) -> BlockTime:
        unit = units.get(b.members[0]) if b.members else None
        if phase is Phase.FORWARD:
            return leaf_time(leaf, b, dev, prec, unit, cold)
        return leaf_phase_time(
            leaf, b, dev, prec, phase, unit, cold, activations_stay_cold(leaf, dev), optimizer
        )

    leaf_times = {b.name: one(b) for b in leaf.blocks() if _has(b, phase)}
    if graph.depth is None:
        times = tuple(leaf_times[b.name] for b in graph.blocks() if b.name in leaf_times)
    else:
        unit_block = {u: b.name for b in leaf.blocks() for u in b.members}
        grouped = []
        for b in graph.blocks():
            names = [unit_block.get(m) for m in b.members]
            parts = [leaf_times[n] for n in names if n in leaf_times]
            if parts:
                grouped.append(_summed(b, parts))
        times = tuple(grouped)
    model = str(graph.meta.get("model", ""))
    return Prediction(dev, prec, times, model, tuple(notes), phase.value)


def _phase(phase: str | Phase, graph: BlockGraph) -> Phase:
    from flowprof.errors import BadSpecError

    try:
        p = Phase(phase)
    except ValueError:
        known = "forward, backward, optimizer"
        raise BadSpecError(f"unknown phase {phase!r} (known: {known})") from None
    if p is Phase.RECOMPUTE:
        raise BadSpecError("the recompute phase is not predicted (predict its forward)")
    if p not in graph.phases() and p is not Phase.FORWARD:
        raise BadSpecError(f"the graph has no {p.value} phase (trace it with phases=...)")
    return p


def _has(block: Block, phase: Phase) -> bool:
    """Whether ``block`` has work in ``phase``: every block runs a forward; the other phases
    are predicted for the blocks the training step recorded them for."""
    return phase is Phase.FORWARD or phase in dict(block.other_phases)


def predict_phases(
    graph: BlockGraph, device: str | Device = "cpu", precision: str | None = None
) -> list[Prediction]:
    """:func:`predict_time` of each phase ``graph`` counted, in order (forward, then a training
    step's backward and optimizer; recompute is left out)."""
    return [
        predict_time(graph, device, precision, p)
        for p in graph.phases()
        if p in (Phase.FORWARD, Phase.BACKWARD, Phase.OPTIMIZER)
    ]

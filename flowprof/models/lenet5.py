"""LeNet-5 as LeCun, Bottou, Bengio and Haffner describe it (Proc. IEEE, 1998), and its
depthwise-separable twin.

Submodules carry the names of the paper's Fig. 2, so the traced block graph reads like the figure::

    x 1@32x32 -> c1 6@28x28 -> s2 6@14x14 -> c3 16@10x10 -> s4 16@5x5 -> c5 120@1x1
      -> f6 84 -> output 10

What each layer computes, as in the paper:

- Every layer up to F6 ends in the squashing f(a) = 1.7159 tanh(2a/3), a child module named
  ``squash`` of that layer (the paper applies it to every unit "in layers up to F6", convolutional
  ones included), so a layer's block holds its own non-linearity.
- S2 and S4: each map sums its four inputs of a 2x2 window, multiplies the sum by a trainable
  coefficient, adds a trainable bias, then squashes (one coefficient and one bias per map).
- C3 computes only the connections of the paper's Table I: the S2 maps that each C3 map reads are
  gathered with a fixed index and convolved with grouped convolutions (no dense convolution with a
  mask), so its parameters and operation counts are the paper's.
- Output: ten Euclidean RBF units, y_i = sum_j (x_j - w_ij)^2, whose parameter vectors are fixed
  +-1 codes (a buffer, not trained). The network returns these penalties: lower is better, and
  ``-output`` serves as the logits of a cross-entropy loss.
- Trainable weights are initialised as in the paper: uniform in +-2.4 / F_i, F_i the unit's fan-in.

``lenet5-dws`` replaces every convolution by a depthwise KxK convolution (one filter per input
map, same stride and padding, no bias because the pointwise bias right after it absorbs it)
followed by a pointwise 1x1 convolution; in C3 the pointwise stage keeps Table I.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from flowprof.models.config import reject_unknown
from flowprof.models.registry import BuiltModel, InputSpec, ModelError, register

IMAGE_SHAPE = (1, 32, 32)  # MNIST's 28x28 digits padded by 2, as the paper feeds them
DEFAULT_INPUT = (1, *IMAGE_SHAPE)  # one image: the per-example dataflow

SQUASH_AMPLITUDE = 1.7159  # A: makes f(1) = 1 and f(-1) = -1 (paper, Appendix A)
SQUASH_SLOPE = 2.0 / 3.0  # S: puts the maximum of f's second derivative at a = +-1

# Table I of the paper: the S2 maps (0-5) that each of the 16 C3 maps reads. Maps 0-5 read three
# contiguous S2 maps, 6-11 four contiguous ones, 12-14 four discontiguous ones, 15 all six.
C3_TABLE: tuple[tuple[int, ...], ...] = (
    (0, 1, 2),
    (1, 2, 3),
    (2, 3, 4),
    (3, 4, 5),
    (0, 4, 5),
    (0, 1, 5),
    (0, 1, 2, 3),
    (1, 2, 3, 4),
    (2, 3, 4, 5),
    (0, 3, 4, 5),
    (0, 1, 4, 5),
    (0, 1, 2, 5),
    (0, 1, 3, 4),
    (1, 2, 4, 5),
    (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)

# The RBF codes: the paper drew each class as a stylised 7x12 bitmap (its Fig. 3), which is why F6
# has 7 * 12 = 84 units. These are our hand-drawn digits, '#' = +1 and '.' = -1, read row by row.
# Deterministic, free of any random generator, and buildable on the meta device.
DIGIT_BITMAPS: tuple[tuple[str, ...], ...] = (
    (
        ".......",
        "..###..",
        ".##.##.",
        "##...##",
        "##...##",
        "##...##",
        "##...##",
        "##...##",
        "##...##",
        ".##.##.",
        "..###..",
        ".......",
    ),  # 0
    (
        ".......",
        "...##..",
        "..###..",
        ".####..",
        "...##..",
        "...##..",
        "...##..",
        "...##..",
        "...##..",
        "...##..",
        ".######",
        ".......",
    ),  # 1
    (
        ".......",
        ".#####.",
        "##...##",
        ".....##",
        ".....##",
        "....##.",
        "...##..",
        "..##...",
        ".##....",
        "##.....",
        "#######",
        ".......",
    ),  # 2
    (
        ".......",
        ".#####.",
        "##...##",
        ".....##",
        ".....##",
        "..####.",
        ".....##",
        ".....##",
        ".....##",
        "##...##",
        ".#####.",
        ".......",
    ),  # 3
    (
        ".......",
        "....##.",
        "...###.",
        "..####.",
        ".##.##.",
        "##..##.",
        "#######",
        "....##.",
        "....##.",
        "....##.",
        "....##.",
        ".......",
    ),  # 4
    (
        ".......",
        "#######",
        "##.....",
        "##.....",
        "######.",
        ".....##",
        ".....##",
        ".....##",
        ".....##",
        "##...##",
        ".#####.",
        ".......",
    ),  # 5
    (
        ".......",
        "..####.",
        ".##....",
        "##.....",
        "##.....",
        "######.",
        "##...##",
        "##...##",
        "##...##",
        "##...##",
        ".#####.",
        ".......",
    ),  # 6
    (
        ".......",
        "#######",
        ".....##",
        ".....##",
        "....##.",
        "....##.",
        "...##..",
        "...##..",
        "..##...",
        "..##...",
        "..##...",
        ".......",
    ),  # 7
    (
        ".......",
        ".#####.",
        "##...##",
        "##...##",
        "##...##",
        ".#####.",
        "##...##",
        "##...##",
        "##...##",
        "##...##",
        ".#####.",
        ".......",
    ),  # 8
    (
        ".......",
        ".#####.",
        "##...##",
        "##...##",
        "##...##",
        "##...##",
        ".######",
        ".....##",
        ".....##",
        "....##.",
        ".####..",
        ".......",
    ),  # 9
)


def rbf_codes() -> list[list[float]]:
    """The ten fixed RBF parameter vectors: each digit's 7x12 bitmap as 84 values of +-1."""
    return [
        [1.0 if pixel == "#" else -1.0 for row in bitmap for pixel in row]
        for bitmap in DIGIT_BITMAPS
    ]


class Squash(nn.Module):
    """The paper's sigmoid squashing f(a) = A tanh(S a), A = 1.7159, S = 2/3."""

    def forward(self, a: Tensor) -> Tensor:
        return SQUASH_AMPLITUDE * torch.tanh(SQUASH_SLOPE * a)


class Subsampling(nn.Module):
    """S2 / S4: per map, sum each 2x2 window, times a trainable coefficient, plus a bias, squash.

    The sum is written as a reshape into windows and a sum, the paper's own operation (not an
    average pool scaled by 4), so operation counts are those of the paper's units.
    """

    def __init__(self, maps: int) -> None:
        super().__init__()
        # One coefficient and one bias per map, shaped to broadcast over (B, maps, H, W).
        self.weight = nn.Parameter(torch.empty(maps, 1, 1))
        self.bias = nn.Parameter(torch.empty(maps, 1, 1))
        self.squash = Squash()

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W)
        windows = x.unflatten(3, (-1, 2)).unflatten(2, (-1, 2))  # (B, C, H/2, 2, W/2, 2)
        sums = windows.sum(dim=(3, 5))  # (B, C, H/2, W/2)
        return self.squash(sums * self.weight + self.bias)


class TableConv(nn.Module):
    """A convolution of only the connections in ``table``: output map j reads input maps table[j].

    Consecutive output maps with the same fan-in form one grouped convolution (child
    ``fan_in<N>``): their input maps are gathered in table order with a fixed index (buffer
    ``index<N>``, skipped when it would gather every map in order) and each group convolves its
    own N maps. The groups' outputs are concatenated back in table order. For C3 that is 6 maps
    from 3 inputs (groups=6), 9 maps from 4 inputs (groups=9) and 1 map from all 6.
    """

    def __init__(self, in_maps: int, table: Sequence[Sequence[int]], kernel_size: int) -> None:
        super().__init__()
        runs: list[list[Sequence[int]]] = []  # consecutive output maps of equal fan-in
        for inputs in table:
            if runs and len(runs[-1][0]) == len(inputs):
                runs[-1].append(inputs)
            else:
                runs.append([inputs])
        self.fan_ins = tuple(len(run[0]) for run in runs)
        if len(set(self.fan_ins)) != len(self.fan_ins):
            raise ValueError("table rows of equal fan-in must be consecutive")
        self.gathers: dict[int, bool] = {}
        for run in runs:
            fan_in, maps = len(run[0]), len(run)
            index = [i for inputs in run for i in inputs]
            # Gathering every input map in order would be a copy that changes nothing.
            self.gathers[fan_in] = index != list(range(in_maps))
            if self.gathers[fan_in]:
                self.register_buffer(
                    f"index{fan_in}", torch.tensor(index, dtype=torch.int64), persistent=False
                )
            conv = nn.Conv2d(maps * fan_in, maps, kernel_size, groups=maps)
            self.add_module(f"fan_in{fan_in}", conv)

    def forward(self, x: Tensor) -> Tensor:  # (B, in_maps, H, W)
        maps = []
        for fan_in in self.fan_ins:  # fixed at construction: traces as straight-line code
            x_in = x  # (B, in_maps, H, W)
            if self.gathers[fan_in]:
                x_in = x.index_select(1, getattr(self, f"index{fan_in}"))  # (B, n*fan_in, H, W)
            maps.append(getattr(self, f"fan_in{fan_in}")(x_in))  # (B, n, H', W')
        return torch.cat(maps, dim=1)  # (B, len(table), H', W')


class RBFOutput(nn.Module):
    """Euclidean RBF units: y_i = sum_j (x_j - w_ij)^2 with fixed codes w (buffer ``codes``)."""

    def __init__(self, codes: Sequence[Sequence[float]]) -> None:
        super().__init__()
        # Fixed, not trained; not saved either, since the constructor rebuilds it exactly.
        self.register_buffer("codes", torch.tensor(codes, dtype=torch.float32), persistent=False)

    def forward(self, x: Tensor) -> Tensor:  # (B, 84)
        d = x.unsqueeze(1) - self.codes  # (B, 10, 84)
        return (d * d).sum(dim=-1)  # (B, 10)


def depthwise(maps: int, kernel_size: int) -> nn.Conv2d:
    """A depthwise KxK convolution, one filter per map (depth multiplier 1).

    No bias: the pointwise convolution that always follows adds one per output map, which
    absorbs any bias here (a depthwise bias would be a redundant parameter).
    """
    return nn.Conv2d(maps, maps, kernel_size, groups=maps, bias=False)


def conv_layer(
    in_maps: int, out_maps: int, kernel_size: int, separable: bool, activation: nn.Module
) -> nn.Sequential:
    """A convolution then ``activation``: children ``conv`` (or ``depthwise`` and ``pointwise``)."""
    if separable:
        convs = [
            ("depthwise", depthwise(in_maps, kernel_size)),
            ("pointwise", nn.Conv2d(in_maps, out_maps, 1)),
        ]
    else:
        convs = [("conv", nn.Conv2d(in_maps, out_maps, kernel_size))]
    name = "squash" if isinstance(activation, Squash) else "activation"
    return nn.Sequential(OrderedDict([*convs, (name, activation)]))


class LeNet5(nn.Module):
    """The 1998 paper's LeNet-5 (``separable=False``) or its depthwise-separable twin."""

    # The outputs are RBF penalties (distances to each class's code), not logits: training uses
    # -output as the logits (training/loop.py reads this attribute).
    output_is_distance = True

    def __init__(self, separable: bool = False) -> None:
        super().__init__()
        self.separable = separable
        self.c1 = conv_layer(1, 6, 5, separable, Squash())
        self.s2 = Subsampling(6)
        if separable:
            c3 = [("depthwise", depthwise(6, 5)), ("pointwise", TableConv(6, C3_TABLE, 1))]
        else:
            c3 = [("conv", TableConv(6, C3_TABLE, 5))]
        self.c3 = nn.Sequential(OrderedDict([*c3, ("squash", Squash())]))
        self.s4 = Subsampling(16)
        self.c5 = conv_layer(16, 120, 5, separable, Squash())
        self.f6 = nn.Sequential(OrderedDict(linear=nn.Linear(120, 84), squash=Squash()))
        self.output = RBFOutput(rbf_codes())
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The paper's initialisation: weights and biases uniform in +-2.4 / F_i (F_i = fan-in).

        On the meta device the uniform draws are no-ops, so nothing is computed or allocated.
        """
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                fan_in = module.weight.shape[1:].numel()  # (in/groups) * K * K, or in_features
            elif isinstance(module, Subsampling):
                fan_in = 4  # the 2x2 window the coefficient multiplies
            else:
                continue
            bound = 2.4 / fan_in
            for param in (module.weight, module.bias):
                if param is not None:
                    nn.init.uniform_(param, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:  # (B, 1, 32, 32)
        x = self.c1(x)  # (B, 6, 28, 28)
        x = self.s2(x)  # (B, 6, 14, 14)
        x = self.c3(x)  # (B, 16, 10, 10)
        x = self.s4(x)  # (B, 16, 5, 5)
        x = self.c5(x)  # (B, 120, 1, 1)
        x = self.f6(x.flatten(1))  # (B, 84)
        return self.output(x)  # (B, 10): RBF penalties, lower is better


@dataclass(frozen=True)
class LeNet5Config:
    """LeNet-5's options: none. The paper fixes every size (32x32 input, 6-16-120-84-10 maps and
    units, Table I), and its depthwise-separable twin is a model of its own name
    (``lenet5-dws``), so that a name says which network a table is of. The input batch is set
    with ``--input``."""


def image_input(model: str, input_shapes: Sequence[Sequence[int]] | None) -> tuple[InputSpec]:
    """The one image input of a LeNet-5: ``N x 1 x 32 x 32`` (default 1x1x32x32).

    F6 expects C5 to be 120 maps of 1x1, which only a 32x32 single-channel image gives.
    """
    if not input_shapes:
        return (InputSpec("x", DEFAULT_INPUT),)
    if len(input_shapes) != 1:
        raise ModelError(f"{model} takes one input, got {len(input_shapes)} shapes")
    shape = tuple(input_shapes[0])
    if len(shape) != 4 or shape[1:] != IMAGE_SHAPE or shape[0] < 1:
        text = "x".join(str(d) for d in shape)
        raise ModelError(f"{model} takes Nx1x32x32 images (e.g. 1x1x32x32), got {text}")
    return (InputSpec("x", shape),)


def _build(name: str, separable: bool, input_shapes, options) -> BuiltModel:
    reject_unknown(name, LeNet5Config, options)
    inputs = image_input(name, input_shapes)
    config = {
        "paper": "LeCun, Bottou, Bengio, Haffner, Proc. IEEE 1998",
        "separable": separable,
        "squash": "1.7159*tanh(2a/3)",
        "c3": "Table I connections only",
        "output": "RBF penalties (lower is better; logits = -output)",
        "rbf_codes": "fixed 7x12 digit bitmaps, +-1",
    }
    return BuiltModel(name, LeNet5(separable=separable), inputs, config)


@register(
    "lenet5",
    "LeNet-5 of LeCun et al. 1998: Table I C3, trainable subsampling, RBF output",
    LeNet5Config,
)
def build_lenet5(input_shapes: Sequence[Sequence[int]] | None = None, **options: Any) -> BuiltModel:
    """The 1998 paper's LeNet-5 (60,000 trainable parameters); input Nx1x32x32."""
    return _build("lenet5", False, input_shapes, options)


@register("lenet5-dws", "LeNet-5 of 1998 with every convolution depthwise-separable", LeNet5Config)
def build_lenet5_dws(
    input_shapes: Sequence[Sequence[int]] | None = None, **options: Any
) -> BuiltModel:
    """The paper's LeNet-5 with depthwise + pointwise convolutions; input Nx1x32x32."""
    return _build("lenet5-dws", True, input_shapes, options)

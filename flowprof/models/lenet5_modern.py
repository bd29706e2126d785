"""The common PyTorch rendition of LeNet-5, and its depthwise-separable twin, for comparison.

What tutorials call LeNet-5 differs from the 1998 paper (``models/lenet5.py``) in four ways:

- C3 is a full convolution (every C3 map reads all six S2 maps), not Table I;
- S2 and S4 are plain 2x2 average pools: no trainable coefficient, bias or squashing;
- the activation is ``torch.tanh`` (option ``activation="tanh"``, the default, closest to the paper)
  or ReLU (``activation="relu"``), after C1, C3, C5 and F6;
- the output is a linear layer of 10 logits, not Euclidean RBF units.

The input is 1x1x32x32 like the paper's network (MNIST padded by 2, rather than padding=2 on C1
with 28x28 input), so that both families take the same input and their tables line up layer by
layer; C5 is a 5x5 convolution giving 120 maps of 1x1, as in the paper. Submodules keep the
paper's names (``c1`` ... ``output``), each convolution layer a ``conv`` (or ``depthwise`` and
``pointwise``) followed by ``activation``. Weights keep PyTorch's default initialisation.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from torch import Tensor, nn

from flowprof.models.config import TEXT, option, reject_unknown
from flowprof.models.lenet5 import conv_layer, image_input
from flowprof.models.registry import BuiltModel, ModelError, register


class Activation(StrEnum):
    """The non-linearity after C1, C3, C5 and F6."""

    TANH = "tanh"  # the default: closest to the paper's scaled tanh
    RELU = "relu"  # what most modern renditions use

    def module(self) -> nn.Module:
        return nn.Tanh() if self is Activation.TANH else nn.ReLU()


def parse_activation(value: str | Activation) -> Activation:
    """``"tanh"`` / ``"relu"`` -> :class:`Activation`; anything else is a ModelError."""
    try:
        return Activation(str(value).lower())
    except ValueError:
        choices = ", ".join(a.value for a in Activation)
        raise ModelError(f"unknown activation {value!r}; choose one of {choices}") from None


class LeNet5Modern(nn.Module):
    """Full C3, average pooling, tanh or ReLU, linear output; ``separable`` for the DWS twin."""

    def __init__(self, activation: Activation = Activation.TANH, separable: bool = False) -> None:
        super().__init__()
        self.separable = separable
        self.c1 = conv_layer(1, 6, 5, separable, activation.module())
        self.s2 = nn.AvgPool2d(2)
        self.c3 = conv_layer(6, 16, 5, separable, activation.module())
        self.s4 = nn.AvgPool2d(2)
        self.c5 = conv_layer(16, 120, 5, separable, activation.module())
        self.f6 = nn.Sequential(
            OrderedDict(linear=nn.Linear(120, 84), activation=activation.module())
        )
        self.output = nn.Linear(84, 10)

    def forward(self, x: Tensor) -> Tensor:  # (B, 1, 32, 32)
        x = self.c1(x)  # (B, 6, 28, 28)
        x = self.s2(x)  # (B, 6, 14, 14)
        x = self.c3(x)  # (B, 16, 10, 10)
        x = self.s4(x)  # (B, 16, 5, 5)
        x = self.c5(x)  # (B, 120, 1, 1)
        x = self.f6(x.flatten(1))  # (B, 84)
        return self.output(x)  # (B, 10): logits


@dataclass(frozen=True)
class LeNet5ModernConfig:
    """The options of the common rendition (and its depthwise-separable twin)."""

    # tanh: closest to the paper's scaled tanh, so the two families differ only where their
    # layers do; relu is what most modern renditions use
    activation: Activation = field(
        default=Activation.TANH, metadata=option("'tanh' or 'relu'", TEXT)
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "activation", parse_activation(self.activation))


def _build(
    name: str, separable: bool, input_shapes: Sequence[Sequence[int]] | None, options: dict
) -> BuiltModel:
    reject_unknown(name, LeNet5ModernConfig, options)
    given = {k: v for k, v in options.items() if v is not None}
    activation = LeNet5ModernConfig(**given).activation
    inputs = image_input(name, input_shapes)
    config = {
        "separable": separable,
        "activation": activation.value,
        "c3": "full",
        "pooling": "average 2x2",
        "output": "logits",
    }
    return BuiltModel(name, LeNet5Modern(activation, separable), inputs, config)


@register(
    "lenet5-modern",
    "LeNet-5 as PyTorch tutorials write it: full C3, avg-pool, linear out",
    LeNet5ModernConfig,
)
def build_lenet5_modern(
    input_shapes: Sequence[Sequence[int]] | None = None, **options: Any
) -> BuiltModel:
    """The common rendition (61,706 parameters); option ``activation`` tanh|relu; Nx1x32x32."""
    return _build("lenet5-modern", False, input_shapes, options)


@register(
    "lenet5-modern-dws",
    "The common LeNet-5 with every convolution depthwise-separable",
    LeNet5ModernConfig,
)
def build_lenet5_modern_dws(
    input_shapes: Sequence[Sequence[int]] | None = None, **options: Any
) -> BuiltModel:
    """The common rendition with depthwise + pointwise convolutions; option ``activation``."""
    return _build("lenet5-modern-dws", True, input_shapes, options)

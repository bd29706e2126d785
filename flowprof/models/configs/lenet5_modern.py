"""The options of the common LeNet-5 rendition (:class:`LeNet5ModernConfig`) and the catalog
entries of ``lenet5-modern`` and ``lenet5-modern-dws``, whose networks are in
:mod:`flowprof.models.lenet5_modern`."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from flowprof.errors import ModelError
from flowprof.models.catalog import register
from flowprof.models.config import TEXT, option


class Activation(StrEnum):
    """The non-linearity after C1, C3, C5 and F6."""

    TANH = "tanh"  # the default: closest to the paper's scaled tanh
    RELU = "relu"  # what most modern renditions use


def parse_activation(value: str | Activation) -> Activation:
    """``"tanh"`` / ``"relu"`` -> :class:`Activation`; anything else is a ModelError."""
    try:
        return Activation(str(value).lower())
    except ValueError:
        choices = ", ".join(a.value for a in Activation)
        raise ModelError(f"unknown activation {value!r}; choose one of {choices}") from None


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


register(
    "lenet5-modern",
    "LeNet-5 as PyTorch tutorials write it: full C3, avg-pool, linear out",
    LeNet5ModernConfig,
    "flowprof.models.lenet5_modern:build_lenet5_modern",
)
register(
    "lenet5-modern-dws",
    "The common LeNet-5 with every convolution depthwise-separable",
    LeNet5ModernConfig,
    "flowprof.models.lenet5_modern:build_lenet5_modern_dws",
)

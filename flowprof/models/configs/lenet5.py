"""LeNet-5's options (none: :class:`LeNet5Config`) and the catalog entries of ``lenet5`` and
``lenet5-dws``, whose networks are in :mod:`flowprof.models.lenet5`."""

from __future__ import annotations

from dataclasses import dataclass

from flowprof.models.catalog import register


@dataclass(frozen=True)
class LeNet5Config:
    """LeNet-5's options: none. The paper fixes every size (32x32 input, 6-16-120-84-10 maps and
    units, Table I), and its depthwise-separable twin is a model of its own name
    (``lenet5-dws``), so that a name says which network a table is of. The input batch is set
    with ``--input``."""


register(
    "lenet5",
    "LeNet-5 of LeCun et al. 1998: Table I C3, trainable subsampling, RBF output",
    LeNet5Config,
    "flowprof.models.lenet5:build_lenet5",
)
register(
    "lenet5-dws",
    "LeNet-5 of 1998 with every convolution depthwise-separable",
    LeNet5Config,
    "flowprof.models.lenet5:build_lenet5_dws",
)

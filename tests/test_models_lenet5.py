"""LeNet-5 (1998 paper and common rendition) and their depthwise-separable twins.

Expected figures are derived by hand below from the paper's text (LeCun et al., Proc. IEEE 1998,
section II.B), never read back from the models. Also here: the check that every registered model
traces with plain ``torch.fx.symbolic_trace`` and that its GraphModule computes what it does.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from flowprof.models import registry
from flowprof.models.lenet5 import C3_TABLE, LeNet5, Squash, rbf_codes
from flowprof.models.lenet5_modern import LeNet5Modern
from flowprof.models.registry import ModelError

LAYERS = ("c1", "s2", "c3", "s4", "c5", "f6", "output")

# --- The paper's figures, each derived by hand --------------------------------------------------
# A convolutional map's units share one kernel and one bias, so a C layer's connections are
# (its trainable parameters) x (output positions per map). An S unit has 4 inputs + 1 bias.
PAPER_PARAMS = {
    "c1": 6 * (5 * 5 * 1 + 1),  # 6 maps x (25 taps + bias) = 156
    "s2": 6 * 2,  # 6 maps x (coefficient + bias) = 12
    # Table I: 6 maps read 3 S2 maps, 9 read 4, 1 reads all 6; each map has one bias.
    "c3": 6 * (3 * 25 + 1) + 9 * (4 * 25 + 1) + 1 * (6 * 25 + 1),  # 456 + 909 + 151 = 1,516
    "s4": 16 * 2,  # 32
    "c5": 120 * (16 * 25 + 1),  # 120 maps read all 16 S4 maps: 120 x 401 = 48,120
    "f6": 84 * (120 + 1),  # 84 units x (120 inputs + bias) = 10,164
    "output": 0,  # the RBF codes are fixed, not trained
}
PAPER_CONNECTIONS = {
    "c1": 156 * 28 * 28,  # 156 x 784 positions = 122,304
    "s2": 6 * 14 * 14 * (4 + 1),  # 1,176 units x 5 = 5,880
    "c3": 1516 * 10 * 10,  # 151,600
    "s4": 16 * 5 * 5 * (4 + 1),  # 400 units x 5 = 2,000
    "c5": 48120 * 1 * 1,  # 1x1 maps: connections = parameters = 48,120
    "f6": 10164,  # fully connected: connections = parameters
}
PAPER_TOTAL = 156 + 12 + 1516 + 32 + 48120 + 10164  # = 60,000, the paper's figure
OUT_SHAPES = {  # per image, from the paper's Fig. 2
    "c1": (6, 28, 28),  # 32 - 5 + 1 = 28
    "s2": (6, 14, 14),
    "c3": (16, 10, 10),  # 14 - 5 + 1 = 10
    "s4": (16, 5, 5),
    "c5": (120, 1, 1),  # 5 - 5 + 1 = 1
    "f6": (84,),
    "output": (10,),
}

# Table I exactly as printed in the paper: row = S2 map, column = C3 map, X = connected.
TABLE_I = """
X...XXX..XXXX.XX
XX...XXX..XXXX.X
XXX...XXX..X.XXX
.XXX..XXXX..X.XX
..XXX..XXXX.XX.X
...XXX..XXXX.XXX
"""


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def layer_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The output of each top-level layer, captured by forward hooks."""
    outputs: dict[str, torch.Tensor] = {}
    handles = [
        getattr(model, name).register_forward_hook(
            lambda _m, _i, out, name=name: outputs.__setitem__(name, out)
        )
        for name in LAYERS
    ]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return outputs


def build(name: str, **options) -> nn.Module:
    torch.manual_seed(0)
    return registry.build(name, device="cpu", **options).module


# --- The paper's LeNet-5 ------------------------------------------------------------------------


def test_paper_figures_add_up():
    assert PAPER_TOTAL == 60_000
    assert PAPER_CONNECTIONS["c1"] == 122_304
    assert PAPER_CONNECTIONS["c3"] == 151_600


@pytest.mark.parametrize("layer", LAYERS)
def test_lenet5_trainable_parameters_per_layer_are_the_papers(layer):
    assert n_params(getattr(build("lenet5"), layer)) == PAPER_PARAMS[layer]


def test_lenet5_total_is_sixty_thousand():
    assert n_params(build("lenet5")) == 60_000


def test_lenet5_connections_per_layer_are_the_papers():
    model = build("lenet5")
    outs = layer_outputs(model, torch.zeros(1, 1, 32, 32))
    for layer in ("c1", "c3", "c5"):  # shared kernels: parameters x positions per map
        h, w = outs[layer].shape[-2:]
        assert n_params(getattr(model, layer)) * h * w == PAPER_CONNECTIONS[layer], layer
    for layer in ("s2", "s4"):  # every unit: a 2x2 window plus its bias
        assert outs[layer][0].numel() * (2 * 2 + 1) == PAPER_CONNECTIONS[layer], layer
    assert n_params(model.f6) == PAPER_CONNECTIONS["f6"]


def test_lenet5_layer_shapes_follow_the_figure():
    outs = layer_outputs(build("lenet5"), torch.zeros(3, 1, 32, 32))
    assert {k: tuple(v.shape) for k, v in outs.items()} == {
        k: (3, *s) for k, s in OUT_SHAPES.items()
    }


def test_c3_has_weights_only_for_table_i_connections():
    c3 = build("lenet5").c3
    weights = sum(m.weight.numel() for m in c3.modules() if isinstance(m, nn.Conv2d))
    assert weights == 60 * 5 * 5  # Table I has 60 X's (10 per row), each a 5x5 kernel: 1,500


@pytest.mark.parametrize("name", ["lenet5", "lenet5-dws"])
def test_c3_connectivity_measured_from_behaviour_is_table_i(name):
    """Perturb one S2 map at a time and see which C3 maps move: that is the connection table."""
    c3 = build(name).c3
    x = torch.randn(1, 6, 14, 14)
    base = c3(x)
    rows = []
    for s2_map in range(6):
        bumped = x.clone()
        bumped[0, s2_map] += 1.0
        moved = (c3(bumped) - base).abs().amax(dim=(0, 2, 3)) > 0  # (16,)
        rows.append("".join("X" if m else "." for m in moved))
    assert rows == TABLE_I.split()
    assert [tuple(r for r in range(6) if TABLE_I.split()[r][c] == "X") for c in range(16)] == list(
        C3_TABLE
    )


def test_subsampling_is_squashed_coefficient_times_window_sum_plus_bias():
    s2 = build("lenet5").s2
    x = torch.randn(2, 6, 28, 28)
    window_sum = F.avg_pool2d(x, 2) * 4  # an independent oracle for the 2x2 sums
    a = window_sum * s2.weight.view(1, 6, 1, 1) + s2.bias.view(1, 6, 1, 1)
    torch.testing.assert_close(s2(x), 1.7159 * torch.tanh(2 * a / 3))


def test_squash_maps_plus_minus_one_to_itself():
    # The paper picks A = 1.7159 so that f(1) = 1 and f(-1) = -1.
    out = Squash()(torch.tensor([-1.0, 0.0, 1.0]))
    torch.testing.assert_close(out, torch.tensor([-1.0, 0.0, 1.0]), atol=1e-4, rtol=0)


def test_rbf_output_is_squared_euclidean_distance_to_fixed_codes():
    model = build("lenet5")
    codes = model.output.codes
    assert codes.shape == (10, 84)  # 10 classes x a 7x12 bitmap
    assert set(codes.unique().tolist()) == {-1.0, 1.0}
    assert "codes" not in dict(model.named_parameters())
    assert "output.codes" in dict(model.named_buffers())
    x = torch.randn(4, 84)
    torch.testing.assert_close(model.output(x), torch.cdist(x, codes) ** 2)


def test_rbf_codes_are_deterministic_and_well_separated():
    codes = rbf_codes()
    assert codes == rbf_codes()
    torch.testing.assert_close(build("lenet5").output.codes, torch.tensor(codes))
    distances = [
        sum(a != b for a, b in zip(p, q, strict=True)) for p, q in itertools.combinations(codes, 2)
    ]
    assert min(distances) >= 8  # every pair of codes differs in at least 8 of 84 pixels


def test_lenet5_init_is_the_papers_fan_in_rule():
    model = build("lenet5")
    for module, fan_in in [
        (model.c1.conv, 25),
        (model.c3.conv.fan_in3, 75),
        (model.c5.conv, 400),
        (model.f6.linear, 120),
        (model.s2, 4),
    ]:
        assert module.weight.abs().max() <= 2.4 / fan_in


# --- Depthwise-separable twins ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("regular", "twin"), [("lenet5", "lenet5-dws"), ("lenet5-modern", "lenet5-modern-dws")]
)
def test_separable_twin_has_the_same_shapes_layer_by_layer(regular, twin):
    x = torch.randn(2, 1, 32, 32)
    a = layer_outputs(build(regular), x)
    b = layer_outputs(build(twin), x)
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}


def test_lenet5_dws_parameters_are_the_closed_form():
    # A separable KxK layer from C_in to C_out maps: depthwise C_in*K*K (no bias, the pointwise
    # bias absorbs it) + pointwise C_in*C_out + C_out. In C3 the pointwise keeps Table I: 60 + 16.
    def separable(c_in: int, c_out: int, k: int) -> int:
        return c_in * k * k + c_in * c_out + c_out

    expected = {
        "c1": separable(1, 6, 5),  # 25 + 6 + 6 = 37
        "s2": 12,
        "c3": 6 * 5 * 5 + 60 + 16,  # 150 + 76 = 226
        "s4": 32,
        "c5": separable(16, 120, 5),  # 400 + 1,920 + 120 = 2,440
        "f6": 10164,
        "output": 0,
    }
    model = build("lenet5-dws")
    assert {layer: n_params(getattr(model, layer)) for layer in LAYERS} == expected
    assert n_params(model) == 37 + 12 + 226 + 32 + 2440 + 10164 == 12_911


def test_dws_layers_are_depthwise_then_pointwise():
    model = build("lenet5-dws")
    for layer, maps in (("c1", 1), ("c3", 6), ("c5", 16)):
        dw = getattr(model, layer).depthwise
        assert (dw.groups, dw.in_channels, dw.out_channels) == (maps, maps, maps)
        assert dw.kernel_size == (5, 5) and dw.stride == (1, 1) and dw.padding == (0, 0)
    assert model.c1.pointwise.kernel_size == (1, 1)
    assert model.c3.pointwise.fan_in4.kernel_size == (1, 1)


# --- The common rendition -----------------------------------------------------------------------


def test_lenet5_modern_parameters_are_the_closed_form():
    expected = {
        "c1": 6 * (1 * 25) + 6,  # 156
        "s2": 0,  # average pooling has no weights
        "c3": 16 * (6 * 25) + 16,  # full C3: 2,416
        "s4": 0,
        "c5": 120 * (16 * 25) + 120,  # 48,120
        "f6": 84 * 120 + 84,  # 10,164
        "output": 10 * 84 + 10,  # 850
    }
    model = build("lenet5-modern")
    assert {layer: n_params(getattr(model, layer)) for layer in LAYERS} == expected
    assert n_params(model) == 156 + 2416 + 48120 + 10164 + 850 == 61_706


def test_lenet5_modern_dws_parameters_are_the_closed_form():
    expected = 37 + (6 * 25 + 6 * 16 + 16) + 2440 + 10164 + 850  # c3: 150 + 96 + 16 = 262
    assert n_params(build("lenet5-modern-dws")) == expected == 13_753


@pytest.mark.parametrize(
    ("option", "kind"), [(None, nn.Tanh), ("tanh", nn.Tanh), ("relu", nn.ReLU)]
)
def test_lenet5_modern_activation_option(option, kind):
    model = build("lenet5-modern", activation=option)
    assert isinstance(model, LeNet5Modern)
    for layer in ("c1", "c3", "c5", "f6"):
        assert isinstance(getattr(model, layer).activation, kind)


# --- Options, inputs, devices -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options", "shapes"),
    [
        ("lenet5", {"activation": "relu"}, None),  # only the modern rendition has it
        ("lenet5-dws", {"emb": 512}, None),
        ("lenet5-modern", {"activation": "gelu"}, None),
        ("lenet5", {}, [(1, 1, 28, 28)]),  # F6 needs C5 to be 1x1: 32x32 only
        ("lenet5-modern", {}, [(1, 3, 32, 32)]),
        ("lenet5", {}, [(1, 1, 32)]),
        ("lenet5-modern-dws", {}, [(1, 1, 32, 32), (1, 1, 32, 32)]),
    ],
)
def test_bad_options_and_shapes_are_model_errors(name, options, shapes):
    with pytest.raises(ModelError):
        registry.build(name, input_shapes=shapes, **options)


@pytest.mark.parametrize("name", ["lenet5", "lenet5-dws", "lenet5-modern", "lenet5-modern-dws"])
def test_input_shape_defaults_and_batch(name):
    assert registry.build(name).inputs[0].shape == (1, 1, 32, 32)
    built = registry.build(name, input_shapes=[(8, 1, 32, 32)])
    assert built.inputs[0].shape == (8, 1, 32, 32)
    (x,) = built.example_inputs("meta")
    assert built.module(x).shape == (8, 10)


@pytest.mark.parametrize("name", ["lenet5", "lenet5-dws", "lenet5-modern", "lenet5-modern-dws"])
def test_meta_build_allocates_nothing(name):
    module = registry.build(name, device="meta").module
    tensors = [*module.parameters(), *module.buffers()]
    assert tensors and all(t.is_meta for t in tensors)
    assert isinstance(module, LeNet5 | LeNet5Modern)


# --- Every registered model traces with the default torch.fx tracer -----------------------------


@pytest.mark.parametrize("name", registry.names())
def test_every_registered_model_traces_to_the_same_computation(name):
    built = registry.build(name, device="cpu")
    gm = torch.fx.symbolic_trace(built.module)
    inputs = built.example_inputs("cpu", torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(gm(*inputs), built.module(*inputs))
    # No shapes are baked in: the same trace runs on meta tensors of the model's inputs.
    meta = registry.build(name, device="meta")
    traced = torch.fx.symbolic_trace(meta.module)
    assert traced(*meta.example_inputs("meta")).is_meta


def test_all_reference_models_are_registered():
    assert {"lenet5", "lenet5-dws", "lenet5-modern", "lenet5-modern-dws", "transformer"} <= set(
        registry.names()
    )

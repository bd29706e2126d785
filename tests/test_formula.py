"""flowprof.formula: counts as exact polynomials in a model's dimensions.

Every formula is checked against concrete traces at random points that the fit never saw
(integer equality, every count of every block, every edge's bits, the totals), and the
transformer's totals against closed forms derived by hand below. The draws are 20 per model for
the transformer, the GPT-style decoder and the LeNets, 8 for resnet18 and mobilenet_v2 (a trace
of one costs about half a second here), not the issue's 100: the suite's time on two shared cores.
``FLOWPROF_FORMULA_DRAWS=100`` draws 100 for every model.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys

import pytest
import sympy
import torch
from torch import nn

import flowprof
from flowprof.analyses.formula import formula, symbol
from tests.llama_shaped import LlamaShape, LlamaShaped

E, T, B = symbol("emb"), symbol("seq"), symbol("batch")
DRAWS = int(os.environ.get("FLOWPROF_FORMULA_DRAWS", "0"))  # 0: 20, and 8 for torchvision


def gpt(emb: int = 64, heads: int = 4, layers: int = 2, vocab: int = 96) -> nn.Module:
    """A GPT-style decoder (Llama-shaped: RMSNorm, causal attention, SwiGLU MLP of 3 x emb)."""
    return LlamaShaped(LlamaShape(hidden=emb, layers=layers, heads=heads, mlp=3 * emb, vocab=vocab))


def observed(g) -> dict[tuple[str, str, str], int]:
    """The trace's numbers, read straight off the BlockGraph (not through the formula module)."""
    out = {}
    for kind, n in g.total().to_dict().items():
        out[("total", "model", kind)] = n
    out[("total", "model", "params")] = sum(b.params for b in g.blocks())
    for b in g.blocks():
        for kind, n in b.count.to_dict().items():
            out[("block", b.name, kind)] = n
        out[("block", b.name, "params")] = b.params
        out[("block", b.name, "param_bits")] = b.param_bits
    for e in g.edges():
        out[("edge", f"{e.src} -> {e.dst}", "bits")] = e.bits
    out[("activations", "model", "bits")] = sum(e.bits for e in g.edges())
    return out


def assert_exact(f, points, trace_at) -> None:
    """Every formula of ``f`` equals the trace at each point (exact integers)."""
    truths = [observed(trace_at(point)) for point in points]
    for truth in truths:  # every block count, every edge and the totals have a formula
        assert set(truth) <= {w.key for w in f.laws}, set(truth) - {w.key for w in f.laws}
    for law in f.laws:
        if law.key in truths[0]:
            assert law.expr is not None, law
            assert f.sweep(law.expr, points) == [t[law.key] for t in truths], law


def test_transformer_totals_equal_the_hand_derivation():
    f = formula("transformer", ["emb", "seq"], dtype="fp16")
    # One encoder and one decoder layer, batch 1, source = target = T tokens, d_ff = 4E, H heads
    # of E/H each. An attention's projections Q, K, V, O: 4 x (T tokens x E x E) = 4TE^2;
    # scores Q K^T: H x T x T x E/H = T^2 E; context weights V: T^2 E. FFN: T x E x 4E twice =
    # 8TE^2. Encoder: self-attention + FFN = 12TE^2 + 2T^2E; decoder: self- and cross-attention
    # (K, V of the T-token memory) + FFN = 16TE^2 + 4T^2E. Total:
    assert sympy.expand(f.total("macs") - (28 * T * E**2 + 6 * T**2 * E)) == 0
    # Parameters: an attention 4(E^2 + E); the FFN E*4E + 4E + 4E*E + E = 8E^2 + 5E; a LayerNorm
    # 2E. Encoder: 4E^2+4E + 8E^2+5E + 2*2E = 12E^2 + 13E; decoder: 2(4E^2+4E) + 8E^2+5E + 3*2E
    # = 16E^2 + 19E. Total 28E^2 + 32E, at 16 bits each.
    assert sympy.expand(f.total("params") - (28 * E**2 + 32 * E)) == 0
    assert sympy.expand(f.weight_bits - 16 * (28 * E**2 + 32 * E)) == 0
    # The attention products (3 attentions x 2T^2E) and the projections (3 x 4TE^2)
    assert sympy.expand(f.expr("group", "attention products", "macs") - 6 * T**2 * E) == 0
    assert sympy.expand(f.expr("group", "projections", "macs") - 12 * T * E**2) == 0
    assert f.non_polynomial() == [] and f.varying == ()


def test_transformer_exact_at_random_points():
    f = formula("transformer", ["emb", "seq", "batch"], dtype="fp16")
    rng = random.Random(18)
    points = [
        {"emb": 8 * rng.randint(1, 96), "seq": rng.randint(1, 300), "batch": rng.randint(1, 9)}
        for _ in range(DRAWS or 20)
    ]
    assert_exact(
        f,
        points,
        lambda p: flowprof.trace(
            "transformer", emb=p["emb"], seq_len=p["seq"], batch=p["batch"], dtype="fp16"
        ),
    )


def test_heads_alone_take_the_divisors_of_emb():
    f = formula("transformer", ["heads"], dtype="fp16", emb=32, seq_len=16)
    assert f.domains["heads"] == "heads in {1, 2, 4, 8, 16, 32}"
    # heads move additions only: scores H*T*T*(E/H - 1) = T^2 E - H T^2 and softmax's sums
    # H*T*(T - 1), in 3 attentions: 3H(T(T - 1) - T^2) = -3TH = -48 H at T = 16
    H = symbol("heads")
    assert sympy.diff(f.total("additions"), H) == -48
    assert sympy.diff(f.total("macs"), H) == 0
    points = [{"heads": h} for h in (1, 2, 4, 8, 16, 32)]
    assert_exact(
        f,
        points,
        lambda p: flowprof.trace("transformer", heads=p["heads"], emb=32, seq_len=16, dtype="fp16"),
    )


def test_crossovers_solved_analytically():
    from flowprof.analyses import comm_sweep

    f = formula("transformer", ["emb", "seq"], dtype="fp16")
    c = f.crossover("weights", "activations", "emb", seq=128)
    # weights 16(28E^2 + 32E) = activations at T = 128: 448E^2 + 512E = 912*128 E + 1288*128^2,
    # i.e. 448E^2 - 116224E - 21102592 = 0: E = (116224 + sqrt(116224^2 + 4*448*21102592)) / 896
    root = (116224 + math.sqrt(116224**2 + 4 * 448 * 21102592)) / 896
    assert float(c.roots[-1]) == pytest.approx(root, rel=1e-12)
    assert c.first == math.floor(root) + 1 == 383 and type(c.first) is int
    json.dumps(f.to_dict())  # plain JSON: no sympy numbers, no torch dtypes
    # the sweep's search over its own hand closed forms finds the same
    sw = comm_sweep.sweep("transformer", emb=[64, 128], seq_len=128, dtype="fp16")
    assert comm_sweep.crossover(sw) == c.first
    # 6T^2E = 12TE^2 at T = 2E: from T = 2E + 1 attention products lead
    at = f.crossover("attention products", "projections", "seq", emb=256)
    assert at.roots == (512,) and at.first == 513


def test_gpt_style_decoder_exact_at_random_points():
    spec = "tests.test_formula:gpt"
    f = formula(spec, ["emb", "seq"], [(1, 16)], dtype="fp16", heads=4, input_dtypes=["int64"])
    assert f.non_polynomial() == []
    rng = random.Random(7)
    points = [
        {"emb": 4 * rng.randint(1, 64), "seq": rng.randint(1, 200)} for _ in range(DRAWS or 20)
    ]
    assert_exact(
        f,
        points,
        lambda p: flowprof.trace(
            spec, [(1, p["seq"])], dtype="fp16", emb=p["emb"], heads=4, input_dtypes=["int64"]
        ),
    )


@pytest.mark.parametrize("name", ["lenet5", "lenet5-dws", "lenet5-modern", "lenet5-modern-dws"])
def test_lenets_exact_in_batch(name):
    f = formula(name, ["batch"])
    shape = flowprof.build(name).inputs[0].shape
    points = [{"batch": b} for b in random.Random(5).sample(range(1, 512), DRAWS or 20)]
    assert_exact(f, points, lambda p: flowprof.trace(name, [(p["batch"], *shape[1:])]))
    # macs grow linearly with the batch, params not at all
    assert sympy.degree(f.total("macs"), B) == 1 and f.total("params").free_symbols == set()


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_torchvision_exact_in_batch_and_size(arch):
    name = f"torchvision:{arch}"
    f = formula(name, ["batch", "size"])
    # every stride is 2 and there are five of them: one residue class modulo 32 is polynomial
    assert f.domains["size"].startswith("size = 0 (mod 32)")
    rng = random.Random(3)
    points = [
        {"batch": rng.randint(1, 16), "size": 32 * rng.randint(2, 20)} for _ in range(DRAWS or 8)
    ]
    assert_exact(f, points, lambda p: flowprof.trace(name, (p["batch"], 3, p["size"], p["size"])))


class Strided(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, stride=2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_floor_of_a_stride_is_reported_not_fitted():
    # out = floor((H - 3) / 2) + 1 rows: not a polynomial in H over all integers
    f = formula(Strided(), ["height"], (1, 1, 20, 20), period=1)
    bad = {w.key for w in f.non_polynomial()}
    assert ("total", "model", "macs") in bad
    assert all(w.expr is None for w in f.laws if w.key in bad)
    # on H = 2m (period searched: 2), macs = 9 taps x (H/2 - 1) rows x 9 columns
    g = formula(Strided(), ["height"], (1, 1, 20, 20))
    assert g.domains["height"].startswith("height = 0 (mod 2)")
    H = symbol("height")
    assert sympy.expand(g.total("macs") - 9 * 9 * (H / 2 - 1)) == 0


class Cubic(nn.Module):
    """y = W x reshaped to n x n, then y @ y: 4 x n^2 + n^3 macs (degree 3 > the bound of 2)."""

    def __init__(self, n: int = 4) -> None:
        super().__init__()
        self.n = n
        self.lin = nn.Linear(4, n * n, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x).view(self.n, self.n)  # (n, n)
        return y @ y  # (n, n)


def test_a_degree_above_the_bound_is_found_by_verification():
    f = formula("tests.test_formula:Cubic", ["n"], [(1, 4)])
    n = symbol("n")
    assert sympy.expand(f.total("macs") - (4 * n**2 + n**3)) == 0
    assert f.dimensions[0].degree == 3
    points = [{"n": v} for v in (17, 40, 61)]
    assert_exact(
        f, points, lambda p: flowprof.trace("tests.test_formula:Cubic", [(1, 4)], n=p["n"])
    )


def test_layers_set_after_the_fit_equal_a_deeper_trace():
    f = formula("transformer", ["emb", "layers"], dtype="fp16").at(layers=5)
    g = flowprof.trace("transformer", emb=48, enc_layers=5, dec_layers=5, dtype="fp16")
    # 2*5 layers of T = 128 tokens: (5 x 12 + 5 x 16) TE^2 + (5 x 2 + 5 x 4) T^2 E
    assert (
        f.evaluate(f.total("macs"), emb=48)
        == g.total().macs
        == 140 * 128 * 48**2 + 30 * 128**2 * 48
    )
    assert f.evaluate(f.activation_bits, emb=48) == sum(e.bits for e in g.edges())


class ConvUnderTest(nn.Module):
    """A 1x1 stem from the one input map to cin maps, then the layer of Problem 2(d): a regular
    k x k convolution cin -> cout (bias), or its depthwise-separable twin (depthwise k x k without
    bias, pointwise 1x1 with bias, as lenet5-dws builds it)."""

    def __init__(self, cin: int = 3, cout: int = 4, k: int = 3, dws: bool = False) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, cin, 1)
        if dws:
            self.depthwise = nn.Conv2d(cin, cin, k, groups=cin, bias=False)
            self.pointwise = nn.Conv2d(cin, cout, 1)
        else:
            self.conv = nn.Conv2d(cin, cout, k)
        self.dws = dws

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (1, cin, 80, 80)
        if self.dws:
            return self.pointwise(self.depthwise(x))  # (1, cout, 81 - k, 81 - k)
        return self.conv(x)  # (1, cout, 81 - k, 81 - k)


def test_problem_2d_mapping_derived_from_traces():
    spec, shape = "tests.test_formula:ConvUnderTest", [(1, 1, 80, 80)]
    # P = (81 - k)^2 positions and K = k^2 taps: degree 4 in k, 1 in cin and cout
    degrees = {"cin": 1, "cout": 1, "k": 4}
    reg = formula(spec, ["cin", "cout", "k"], shape, degrees=degrees, dws=False)
    dws = formula(spec, ["cin", "cout", "k"], shape, degrees=degrees, dws=True)
    cin, cout, k = symbol("cin"), symbol("cout"), symbol("k")
    x_mul, x_add = reg.block("conv", "multiplications"), reg.block("conv", "additions")
    y_mul = dws.block("depthwise", "multiplications") + dws.block("pointwise", "multiplications")
    y_add = dws.block("depthwise", "additions") + dws.block("pointwise", "additions")
    # docs of analyses/dws_mapping.py, dense layer, M = cin*cout, K = k^2: y = x (1/cout + 1/K)
    # for multiplications; additions with the regular and pointwise biases:
    # y = x (cin (K - 1) + M) / (K M)
    K, M = k**2, cin * cout
    assert sympy.simplify(y_mul / x_mul - (1 / cout + 1 / K)) == 0
    assert sympy.simplify(y_add / x_add - (cin * (K - 1) + M) / (K * M)) == 0
    # and the regular layer's own count: P K M multiplications
    assert sympy.expand(x_mul - (81 - k) ** 2 * K * M) == 0


def test_sweep_equals_evaluate_and_refuses_points_outside_the_domain():
    f = formula("lenet5", ["batch"])
    macs = f.total("macs")
    assert f.sweep(macs, [{"batch": b} for b in (1, 7, 1000)]) == [
        f.evaluate(macs, batch=b) for b in (1, 7, 1000)
    ]
    g = formula(Strided(), ["height"], (1, 1, 20, 20))
    with pytest.raises(flowprof.BadInputError):
        g.sweep(g.total("macs"), [{"height": 21}])  # an odd height is outside the domain


def test_bad_dimension_and_fixed_dimension_are_refused():
    with pytest.raises(flowprof.BadInputError, match="no dimension 'bogus'"):
        formula("transformer", ["emb", "bogus"])
    with pytest.raises(flowprof.BadInputError, match="do not fix it too"):
        formula("transformer", ["emb"], emb=64)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "cli.py", "formula", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_json_latex_and_bad_input(tmp_path):
    r = _cli("lenet5", "--symbols", "batch", "--format", "json", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    # C1 28*28 outputs * 6 maps * 25 taps = 117600; S2 none; C3 10*10 outputs * 25 taps * 60
    # connections = 150000; C5 120 * 400 = 48000; F6 84 * 120 = 10080 (the RBF output computes
    # distances: no macs)
    assert data["totals"]["macs"] == str(117600 + 150000 + 48000 + 10080) + "*batch"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "formula.json",
        "formula.tex",
        "formula.txt",
    ]
    assert r"\begin{align*}" in (tmp_path / "formula.tex").read_text()
    tex = _cli("lenet5", "--symbols", "batch", "--format", "latex", "--totals")
    assert tex.returncode == 0 and tex.stdout.startswith("% lenet5")
    assert "\n" + r"\text{[total] macs} &= 325680 batch \\" + "\n" in tex.stdout
    bad = _cli("transformer", "--symbols", "emb,bogus")
    assert bad.returncode == 2 and bad.stderr.startswith("flowprof:")
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_alexnet_adaptive_pool_found_polynomial_at_its_structural_period():
    # strides 4 (conv1) x 2 x 2 x 2 (three max pools) = 32, times the adaptive pool's 6 cells:
    # its windows floor(i h / 6) .. ceil((i + 1) h / 6) repeat with h mod 6, so 192; no period
    # of 1, 2, ..., 64 makes every count polynomial
    name = "torchvision:alexnet"
    f = formula(name, ["batch", "size"])
    assert f.domains["size"] == "size = 32 (mod 192), size >= 224"
    assert f.non_polynomial() == []
    S = symbol("size")
    # MACs by hand at 224: conv1 64*3*11*11 x 55*55 = 70,276,800; conv2 192*64*25 x 27*27 =
    # 223,948,800; conv3 384*192*9 x 13*13 = 112,140,288; conv4 256*384*9 x 169 = 149,520,384;
    # conv5 256*256*9 x 169 = 99,680,256; fc 9216*4096 + 4096*4096 + 4096*1000 = 58,621,952.
    # At 416 the maps are 103, 51, 51, 25, 25 (after conv1, pool, conv2, pool, conv3-5):
    # 64*363*103^2 + 307200*51^2 + (663552 + 884736 + 589824)*25^2 + 58,621,952.
    at224 = 70_276_800 + 223_948_800 + 112_140_288 + 149_520_384 + 99_680_256 + 58_621_952
    at416 = 64 * 363 * 103**2 + 307200 * 51**2 + (663552 + 884736 + 589824) * 625 + 58_621_952
    macs = f.total("macs")
    assert macs.subs({B: 1, S: 224}) == at224 == 714_188_480
    assert macs.subs({B: 1, S: 416}) == at416
    rng = random.Random(192)
    points = [
        {"batch": rng.randint(1, 8), "size": 192 * rng.randint(1, 9) + 32}
        for _ in range(DRAWS or 3)
    ]
    assert_exact(f, points, lambda p: flowprof.trace(name, (p["batch"], 3, p["size"], p["size"])))

"""The from-scratch transformer against PyTorch's own layers, and its options and errors.

``torch.nn.Transformer`` is the oracle: the same weights copied in give the same output. It always
ends each stack in a final LayerNorm; our post-norm model (the paper's) has none, because its last
add_norm already normalises, so for post-norm those two final norms of the reference are replaced
by ``nn.Identity``. Pre-norm stacks end in a final LayerNorm in both, and are compared as they are.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from flowprof.models import registry
from flowprof.models.registry import ModelError
from flowprof.models.transformer import Transformer, TransformerConfig

SMALL = {"emb": 32, "heads": 4, "ffn": 48, "src_len": 7, "tgt_len": 5, "batch": 2}


def sinusoids(length: int, emb: int) -> torch.Tensor:
    """The paper's positional encoding, written element by element (section 3.5)."""
    table = torch.empty(length, emb)
    for pos in range(length):
        for i in range(0, emb, 2):
            angle = pos / 10000 ** (i / emb)  # i = 2k: the exponent is 2k / d_model
            table[pos, i] = math.sin(angle)
            if i + 1 < emb:
                table[pos, i + 1] = math.cos(angle)
    return table


def reference(config: TransformerConfig) -> nn.Transformer:
    """nn.Transformer with the same sizes, random LayerNorm affines, and our final-norm choice."""
    ref = nn.Transformer(
        d_model=config.emb,
        nhead=config.heads,
        num_encoder_layers=config.enc_layers,
        num_decoder_layers=config.dec_layers,
        dim_feedforward=config.ffn,
        dropout=0.0,
        activation="relu",
        batch_first=True,
        norm_first=config.norm == "pre",
    )
    for module in ref.modules():
        if isinstance(module, nn.LayerNorm):  # not 1 and 0: so a mis-copied norm shows
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.5, 0.5)
    if config.norm == "post":
        ref.encoder.norm = nn.Identity()
        ref.decoder.norm = nn.Identity()
    return ref.eval()


@torch.no_grad()
def copy_weights(ours: Transformer, ref: nn.Transformer) -> None:
    e = ours.config.emb

    def attention(dst, src: nn.MultiheadAttention) -> None:
        # nn.MultiheadAttention packs W^Q, W^K, W^V as rows of one (3E, E) matrix.
        for i, proj in enumerate((dst.q_proj, dst.k_proj, dst.v_proj)):
            proj.weight.copy_(src.in_proj_weight[i * e : (i + 1) * e])
            proj.bias.copy_(src.in_proj_bias[i * e : (i + 1) * e])
        dst.out_proj.load_state_dict(src.out_proj.state_dict())

    def norms(layer, ref_layer, count: int) -> None:
        for k in range(1, count + 1):
            if ours.config.norm == "pre":
                dst = getattr(layer, f"norm{k}")
            else:
                dst = getattr(layer, f"add_norm{k}").norm
            dst.load_state_dict(getattr(ref_layer, f"norm{k}").state_dict())

    for layer, ref_layer in zip(ours.encoder.layers, ref.encoder.layers, strict=True):
        attention(layer.self_attn, ref_layer.self_attn)
        layer.ffn.linear1.load_state_dict(ref_layer.linear1.state_dict())
        layer.ffn.linear2.load_state_dict(ref_layer.linear2.state_dict())
        norms(layer, ref_layer, 2)
    for layer, ref_layer in zip(ours.decoder.layers, ref.decoder.layers, strict=True):
        attention(layer.self_attn, ref_layer.self_attn)
        attention(layer.cross_attn, ref_layer.multihead_attn)
        layer.ffn.linear1.load_state_dict(ref_layer.linear1.state_dict())
        layer.ffn.linear2.load_state_dict(ref_layer.linear2.state_dict())
        norms(layer, ref_layer, 3)
    if ours.config.norm == "pre":
        ours.encoder.norm.load_state_dict(ref.encoder.norm.state_dict())
        ours.decoder.norm.load_state_dict(ref.decoder.norm.state_dict())


def build(**options) -> Transformer:
    torch.manual_seed(0)
    return registry.build("transformer", device="cpu", **options).module


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- Equal to PyTorch's transformer -------------------------------------------------------------


# nn.Transformer warns that a pre-norm encoder cannot use its nested-tensor path: irrelevant here.
@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")
@pytest.mark.parametrize(
    ("norm", "layers"), [("post", 1), ("pre", 1), ("post", 2), ("pre", 2)], ids=str
)
def test_fp32_output_equals_torch_transformer(norm, layers):
    ours = build(**SMALL, norm=norm, enc_layers=layers, dec_layers=layers, dtype="fp32")
    ref = reference(ours.config)
    copy_weights(ours, ref)
    g = torch.Generator().manual_seed(1)
    src = torch.randn(2, 7, 32, generator=g)
    tgt = torch.randn(2, 5, 32, generator=g)
    # Grad stays enabled so nn.Transformer takes its plain path, not the fused inference one.
    expected = ref(
        src + sinusoids(7, 32),
        tgt + sinusoids(5, 32),
        tgt_mask=nn.Transformer.generate_square_subsequent_mask(5),
    )
    torch.testing.assert_close(ours(src, tgt), expected, atol=1e-5, rtol=1e-5)


def test_with_vocab_embeds_scaled_tokens_and_projects_to_logits():
    ours = build(**SMALL, vocab=11, dtype="fp32")
    ref = reference(ours.config)
    copy_weights(ours, ref)
    g = torch.Generator().manual_seed(2)
    src = torch.randint(0, 11, (2, 7), generator=g)
    tgt = torch.randint(0, 11, (2, 5), generator=g)
    scale = math.sqrt(32)  # the paper multiplies embeddings by sqrt(d_model)
    features = ref(
        ours.src_embed.lookup(src) * scale + sinusoids(7, 32),
        ours.tgt_embed.lookup(tgt) * scale + sinusoids(5, 32),
        tgt_mask=nn.Transformer.generate_square_subsequent_mask(5),
    )
    out = ours(src, tgt)
    assert out.shape == (2, 5, 11)
    torch.testing.assert_close(out, ours.generator(features), atol=1e-5, rtol=1e-5)


def test_positional_encoding_buffer_is_the_papers_sinusoid():
    model = build(**SMALL, dtype="fp32")
    torch.testing.assert_close(model.src_pos.pe, sinusoids(7, 32))
    torch.testing.assert_close(model.tgt_pos.pe, sinusoids(5, 32))


# --- fp16 ---------------------------------------------------------------------------------------


def test_fp16_output_is_close_to_fp32_and_finite():
    fp32 = build(dtype="fp32")  # the defaults: emb 256, 8 heads, 128 tokens
    fp16 = build()
    fp16.load_state_dict(fp32.state_dict())  # the same weights, rounded to fp16
    g = torch.Generator().manual_seed(3)
    src, tgt = torch.randn(1, 128, 256, generator=g), torch.randn(1, 128, 256, generator=g)
    with torch.no_grad():
        out16 = fp16(src.half(), tgt.half())
        out32 = fp32(src, tgt)
    assert out16.dtype == torch.float16 and out16.isfinite().all()
    # LayerNorm outputs are O(1); fp16 keeps ~3 decimal digits through two layers.
    torch.testing.assert_close(out16.float(), out32, atol=2e-2, rtol=1e-2)


@pytest.mark.parametrize("vocab", [None, 50])
def test_every_intermediate_is_fp16(vocab):
    built = registry.build("transformer", device="cpu", seq_len=8, vocab=vocab)
    assert all(t.dtype == torch.float16 for t in built.module.parameters())
    assert all(t.dtype == torch.float16 for t in built.module.buffers())
    gm = torch.fx.symbolic_trace(built.module)
    ShapeProp(gm).propagate(*built.example_inputs("cpu", torch.Generator().manual_seed(0)))
    dtypes = {
        node.name: node.meta["tensor_meta"].dtype
        for node in gm.graph.nodes
        if "tensor_meta" in node.meta and node.op not in ("placeholder",)
    }
    floats = {name: d for name, d in dtypes.items() if d.is_floating_point}
    assert floats and set(floats.values()) == {torch.float16}
    # The only non-float intermediates: the bool causal mask.
    assert {d for d in dtypes.values() if not d.is_floating_point} == {torch.bool}


# --- Causality ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_causal_mask_hides_the_future(dtype):
    model = build(**SMALL, dtype=dtype)
    g = torch.Generator().manual_seed(4)
    src = torch.randn(2, 7, 32, generator=g).to(model.config.dtype)
    tgt = torch.randn(2, 5, 32, generator=g).to(model.config.dtype)
    changed = tgt.clone()
    changed[:, 3:] = torch.randn(2, 2, 32, generator=g).to(model.config.dtype)
    with torch.no_grad():
        before, after = model(src, tgt), model(src, changed)
    assert torch.equal(before[:, :3], after[:, :3])  # masked weights are exactly 0
    assert not torch.allclose(before[:, 3:], after[:, 3:])


def test_changing_a_later_target_token_leaves_earlier_logits_unchanged():
    model = build(**SMALL, vocab=13, dtype="fp32")
    src = torch.randint(0, 13, (2, 7), generator=torch.Generator().manual_seed(5))
    tgt = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
    changed = tgt.clone()
    changed[:, 4] = torch.tensor([12, 0])
    with torch.no_grad():
        before, after = model(src, tgt), model(src, changed)
    assert torch.equal(before[:, :4], after[:, :4])
    assert not torch.allclose(before[:, 4], after[:, 4])


def test_every_target_position_sees_the_whole_source():
    model = build(**SMALL, dtype="fp32")
    g = torch.Generator().manual_seed(6)
    src, tgt = torch.randn(2, 7, 32, generator=g), torch.randn(2, 5, 32, generator=g)
    changed = src.clone()
    changed[:, -1] += 1.0  # the last source position only
    with torch.no_grad():
        moved = (model(src, tgt) - model(changed, tgt)).abs().amax(dim=(0, 2))  # (T,)
    assert (moved > 0).all()  # cross-attention is not masked


# --- Parameters and names -----------------------------------------------------------------------


def test_parameter_count_is_the_closed_form():
    e, f = 256, 4 * 256  # the defaults: emb 256, d_ff = 4 * emb
    attention = 4 * (e * e + e)  # W^Q, W^K, W^V, W^O with biases: 263,168
    ffn = (e * f + f) + (f * e + e)  # 525,568
    layer_norm = 2 * e  # gain and bias: 512
    encoder_layer = attention + ffn + 2 * layer_norm  # 789,760
    decoder_layer = 2 * attention + ffn + 3 * layer_norm  # 1,053,440
    assert encoder_layer + decoder_layer == 1_843_200
    assert n_params(build()) == 1_843_200
    # Pre-norm adds the two final stack norms.
    assert n_params(build(norm="pre")) == 1_843_200 + 2 * layer_norm
    # Token tables for src and tgt, and the generator's weight and bias.
    v = 1000
    assert n_params(build(vocab=v)) == 1_843_200 + 2 * v * e + (e * v + v)
    # nn.Transformer agrees once its two final LayerNorms are taken out.
    ref = nn.Transformer(256, 8, 1, 1, 1024, batch_first=True)
    assert n_params(ref) - 2 * layer_norm == 1_843_200


def test_block_names_follow_the_figure():
    names = {name for name, _ in build(vocab=10, seq_len=4).named_modules()}
    attention = ["q_proj", "k_proj", "v_proj", "scores", "softmax", "context", "out_proj"]
    expected = {"src_embed", "tgt_embed", "src_pos", "tgt_pos", "generator"}
    for block in ("self_attn", "add_norm1", "ffn", "add_norm2"):
        expected.add(f"encoder.layers.0.{block}")
    for block in ("self_attn", "add_norm1", "cross_attn", "add_norm2", "ffn", "add_norm3"):
        expected.add(f"decoder.layers.0.{block}")
    for attn in ("encoder.layers.0.self_attn", "decoder.layers.0.cross_attn"):
        expected |= {f"{attn}.{step}" for step in attention}
    expected |= {"decoder.layers.0.self_attn.mask", "encoder.layers.0.add_norm1.norm"}
    expected |= {f"encoder.layers.0.ffn.{s}" for s in ("linear1", "activation", "linear2")}
    assert expected <= names
    assert "encoder.layers.0.self_attn.mask" not in names  # only the decoder's is causal


def test_pre_norm_block_names():
    names = {name for name, _ in build(norm="pre", seq_len=4).named_modules()}
    assert {"encoder.layers.0.norm1", "encoder.layers.0.add1", "encoder.norm"} <= names
    assert {"decoder.layers.0.norm3", "decoder.layers.0.add3", "decoder.norm"} <= names
    assert not any("add_norm" in name for name in names)


# --- Options, inputs and errors -----------------------------------------------------------------


def test_defaults():
    built = registry.build("transformer")
    assert built.config == {
        "emb": 256,
        "heads": 8,
        "head_dim": 32,
        "ffn": 1024,
        "enc_layers": 1,
        "dec_layers": 1,
        "src_len": 128,
        "tgt_len": 128,
        "batch": 1,
        "vocab": None,
        "norm": "post",
        "dropout": 0.0,
        "dtype": "float16",
    }
    assert [(s.name, s.shape, s.dtype) for s in built.inputs] == [
        ("src", (1, 128, 256), torch.float16),
        ("tgt", (1, 128, 256), torch.float16),
    ]


def test_lengths_options_and_vocab_inputs():
    built = registry.build("transformer", seq_len=16, tgt_len=9, batch=3, vocab=100)
    assert [(s.shape, s.dtype, s.high) for s in built.inputs] == [
        ((3, 16), torch.int64, 100),
        ((3, 9), torch.int64, 100),
    ]
    assert built.module(*built.example_inputs("meta")).shape == (3, 9, 100)


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [("fp32", torch.float32), ("bf16", torch.bfloat16), (torch.float32, torch.float32)],
)
def test_dtype_option(dtype, expected):
    built = registry.build("transformer", seq_len=4, dtype=dtype)
    assert {p.dtype for p in built.module.parameters()} == {expected}
    assert {s.dtype for s in built.inputs} == {expected}


def test_input_shapes_set_batch_lengths_and_emb():
    built = registry.build("transformer", input_shapes=[(2, 10, 64), (2, 12, 64)])
    assert (built.config["batch"], built.config["src_len"], built.config["tgt_len"]) == (2, 10, 12)
    assert built.config["emb"] == 64 and built.config["ffn"] == 4 * 64
    consistent = registry.build("transformer", input_shapes=[(1, 8), (1, 8)], vocab=20, seq_len=8)
    assert [s.shape for s in consistent.inputs] == [(1, 8), (1, 8)]


@pytest.mark.parametrize(
    ("options", "shapes"),
    [
        ({"emb": 250}, None),  # not divisible by 8 heads
        ({"emb": 0}, None),
        ({"heads": -1}, None),
        ({"ffn": 0}, None),
        ({"enc_layers": 0}, None),
        ({"dec_layers": 0}, None),
        ({"seq_len": 0}, None),
        ({"src_len": -4}, None),
        ({"batch": 0}, None),
        ({"vocab": 0}, None),
        ({"emb": 2.5}, None),
        ({"heads": True}, None),
        ({"norm": "sandwich"}, None),
        ({"dtype": "int8"}, None),
        ({"dtype": torch.int32}, None),
        ({"depth": 3}, None),  # not a transformer option
        ({}, [(1, 8, 256)]),  # one shape for two inputs
        ({}, [(1, 8, 256), (2, 8, 256)]),  # batch differs
        ({}, [(1, 8, 256), (1, 8, 128)]),  # emb differs
        ({}, [(1, 8), (1, 8)]),  # token ids without vocab
        ({"vocab": 10}, [(1, 8, 256), (1, 8, 256)]),  # features with vocab
        ({"emb": 512}, [(1, 8, 256), (1, 8, 256)]),
        ({"seq_len": 16}, [(1, 8, 256), (1, 8, 256)]),
        ({"src_len": 8, "tgt_len": 9}, [(1, 8, 256), (1, 8, 256)]),
        ({"batch": 4}, [(1, 8, 256), (1, 8, 256)]),
    ],
)
def test_bad_configs_are_one_line_model_errors(options, shapes):
    with pytest.raises(ModelError) as info:
        registry.build("transformer", input_shapes=shapes, **options)
    assert "\n" not in str(info.value) and str(info.value)


def test_meta_build_allocates_nothing():
    module = registry.build("transformer", device="meta", vocab=32000, emb=1024, heads=16).module
    assert all(t.is_meta for t in [*module.parameters(), *module.buffers()])

"""Giant transformer configurations: flowprof traces them on meta, the peers must run them.

Every configuration is the reference encoder-decoder transformer (one encoder and one decoder
layer, fp16, batch 1) at ``seq_len`` 2048 tokens for source and target, d_ff = 4 x emb, and one
head per 128 features (at least 8; 96 heads at emb 12288, as GPT-3's largest model). Weights are
28 x emb^2 parameters: 8.5 GB in fp16 at emb 12288.

flowprof builds each model on the meta device (no weights) and traces it. Each peer needs the
model's real weights (built directly in fp16) and runs a real forward pass, in a child process
capped at ``mem_limit_bytes`` of address space above its import footprint and killed after
``time_limit_s`` of imports and build, or as long again of analysis; the result is "ok", "out of
memory", "timeout", "error" or "crashed". A peer that ran out of time or memory at one size is not
run at the larger ones (they need more of both); those cells say so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from bench import peers

SEQ_LEN = 2048
EMBS = (256, 512, 1024, 2048, 4096, 8192, 12288)
# The peers build real weights and run a real forward pass of about 28 emb^2 x 2048 MACs: about
# 4 s to build and 8 s to run at emb 4096 on two cores, at 12288 some 40 s and 70 s. Sizes 512
# and 2048 are left to flowprof by default to keep the whole benchmark near 20 minutes
# (``bench/run.py --peer-embs`` runs any of them).
PEER_EMBS = (256, 1024, 4096, 8192, 12288)
SCALE_TOOLS = ("flowprof", "fvcore", "thop", "ptflops", "torchinfo", "FlopCounterMode")
FAILURES = ("timeout", "out of memory")


def heads_for(emb: int) -> int:
    """One head per 128 features, at least 8 (the reference model's default)."""
    return max(8, emb // 128)


def spec(emb: int, seq_len: int = SEQ_LEN) -> peers.ModelSpec:
    return peers.transformer_spec(emb, seq_len, heads_for(emb))


def weight_bytes(emb: int, bytes_per_param: int = 2) -> int:
    """fp16 weights of one encoder and one decoder layer: 12 E^2 + 16 E^2 (+ biases, norms)."""
    ffn = 4 * emb
    encoder = 4 * (emb * emb + emb) + (emb * ffn + ffn) + (ffn * emb + emb) + 2 * 2 * emb
    decoder = 8 * (emb * emb + emb) + (emb * ffn + ffn) + (ffn * emb + emb) + 3 * 2 * emb
    return (encoder + decoder) * bytes_per_param


def run(
    embs: Sequence[int] = EMBS,
    peer_embs: Sequence[int] = PEER_EMBS,
    tools: Sequence[str] = SCALE_TOOLS,
    time_limit_s: float = 120.0,
    mem_limit_bytes: int = 12 << 30,
    flowprof_repeats: int = 3,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every tool on every size it is due to run at, smallest first; one result per cell.

    flowprof runs once to warm up then ``flowprof_repeats`` times; a peer runs once (its first
    call in a fresh process is the whole cost a user pays). Cells not run have status "not run"
    and a ``reason``.
    """
    results: list[dict[str, Any]] = []
    failed_at: dict[str, tuple[int, str]] = {}
    for emb in sorted(set(embs) | set(peer_embs)):
        model = spec(emb)
        for tool in tools:
            is_flowprof = peers.TOOLS[tool].meta
            due = emb in (embs if is_flowprof else peer_embs)
            if not due:
                result = {"status": "not run", "reason": "size not selected for this tool"}
            elif tool in failed_at:
                size, how = failed_at[tool]
                result = {"status": "not run", "reason": f"{how} at emb {size}"}
            else:
                result = peers.run_isolated(
                    tool,
                    model,
                    repeats=flowprof_repeats if is_flowprof else 1,
                    warmup=1 if is_flowprof else 0,
                    time_limit_s=time_limit_s,
                    mem_limit_bytes=mem_limit_bytes,
                )
                if result["status"] in FAILURES:
                    failed_at[tool] = (emb, result["status"])
            result.update(
                tool=tool,
                model=model.key,
                emb=emb,
                seq_len=SEQ_LEN,
                heads=heads_for(emb),
                exact_macs=model.exact_macs,
                weight_bytes=weight_bytes(emb),
            )
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results


def planned(
    embs: Sequence[int] = EMBS,
    peer_embs: Sequence[int] = PEER_EMBS,
    tools: Sequence[str] = SCALE_TOOLS,
) -> int:
    """How many cells :func:`run` will report (for a progress bar)."""
    return len(set(embs) | set(peer_embs)) * len(tools)

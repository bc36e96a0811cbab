"""GPU speed of the 7B: streaming prefill, decoding, the norm-refresh reading procedure, and a
Llama-2-7B-shaped transformers baseline, for the Triton kernels and the plain-PyTorch path.

    python -m benchmarks.speed                      # everything, default lengths
    python -m benchmarks.speed --parts prefill,decode --lengths 32k,128k --paths triton
    python -m benchmarks.speed --parts kernels       # the kernels alone vs their floors (decoding's too)
    python -m benchmarks.speed --parts decode_kernels,decode --paths triton   # decoding only
    python -m benchmarks.speed --parts ceilings,decode_int8 --decode-batches 1   # int8 weights vs bf16
    python -m benchmarks.speed --parts ceilings,decode_grouped   # wz, wr, wh1 in one launch vs three

Weights are random (bf16); speed does not depend on their values. Ceilings are measured in the same
run: an 8192^3 bf16 matmul (peak FLOP/s) and a 1 GiB device copy (bandwidth, bytes read + written).
The table goes to stdout; `--json` also writes every figure. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import copy
import functools
import gc
import json
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import torch

from megadoc.engine import MegalodonConfig
from megadoc.kernels import select_backend

PARTS = (
    "ceilings",
    "kernels",
    "decode_kernels",
    "prefill",
    "decode",
    "decode_int8",
    "decode_grouped",
    "refresh",
    "llama",
    "profile",
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_length(text: str) -> int:
    text = text.strip().lower()
    scale = {"k": 1024, "m": 1024 * 1024}.get(text[-1], 1)
    return int(text[:-1] if scale > 1 else text) * scale


def median_ms(fn: Callable[[], Any], warmup: int = 2, repeat: int = 10) -> float:
    """Median time of `fn` in ms, with CUDA events."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def graph_ms(calls: list[Callable[[], Any]], repeat: int = 20) -> float:
    """Median time per call, in ms, of `calls` captured in one CUDA graph: small kernels timed with
    the launch gaps they have inside the decoder's graph, not Python's."""
    for fn in calls:  # compile and warm up outside the graph
        fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for fn in calls:
            fn()
    return median_ms(graph.replay, warmup=2, repeat=repeat) / len(calls)


def free_memory() -> None:
    gc.collect()
    torch.cuda.empty_cache()


# -- ceilings ----------------------------------------------------------------------------------


def measure_ceilings() -> dict[str, float]:
    """bf16 matmul peak (TFLOP/s) on random data and device-copy bandwidth (GB/s, read + written)."""
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    ms = median_ms(lambda: a @ b, warmup=3, repeat=20)
    src = torch.randn(256 * 1024 * 1024, device="cuda")  # 1 GiB
    dst = torch.empty_like(src)
    copy_ms = median_ms(lambda: dst.copy_(src), warmup=3, repeat=20)
    return {"matmul_tflops": 2 * n**3 / ms / 1e9, "copy_gbps": 2 * src.numel() * 4 / copy_ms / 1e6}


# -- the model ---------------------------------------------------------------------------------


def flops_per_token(cfg: MegalodonConfig) -> float:
    """Prefill FLOPs per token without the output head (read() computes no logits): projections
    plus chunk attention at its mean context (C + 1) / 2, as in megalodon-spec.md."""
    d, z, h, f = cfg.model_dim, cfg.z_dim, cfg.value_dim, cfg.ffn_hidden_dim
    matmul = d * z + 2 * d * h + d * d + h * d + (3 if cfg.swiglu else 2) * d * f
    attention = (z + h) * (cfg.chunk_size + 1)  # 2 (z + h) x mean context (C + 1) / 2
    return cfg.num_layers * (2 * matmul + attention)


def build_megalodon(cfg: MegalodonConfig):
    """Random 7B weights in bf16, initialised on the GPU by the engine's own init."""
    from megadoc.engine import Megalodon

    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Megalodon(cfg)
    model = model.to(torch.bfloat16).eval()
    free_memory()
    return model


def set_path(path: str) -> None:
    """triton: the Triton kernels (the "auto" backend on CUDA); reference: the plain-PyTorch references."""
    select_backend("auto" if path == "triton" else "reference")


def time_read(model, length: int, batch: int = 1) -> dict[str, float]:
    ids = torch.randint(0, model.config.vocab_size, (batch, length), device="cuda")
    state = model.new_state(batch)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    model.read(ids, state)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "tokens_per_s": batch * length / seconds,
        "peak_gb": torch.cuda.max_memory_allocated() / 1e9,
    }


def bench_prefill(model, lengths: list[int], paths: list[str], ceil: dict, results: dict) -> None:
    fpt = flops_per_token(model.config)
    for path in paths:
        set_path(path)
        time_read(model, model.config.chunk_size * 2)  # compile the kernels, warm the allocator
        for length in lengths:
            log(f"prefill {path} {length}")
            try:
                row = time_read(model, length)
            except torch.cuda.OutOfMemoryError:
                row = {"error": "out of memory"}
                free_memory()
            if "tokens_per_s" in row:
                row["tflops"] = row["tokens_per_s"] * fpt / 1e12
                row["fraction_of_peak"] = row["tflops"] / ceil["matmul_tflops"]
            results.setdefault("prefill", {}).setdefault(path, {})[length] = row
            log(f"  {row}")


def bench_refresh(model, length: int, ceil: dict, results: dict) -> None:
    set_path("triton")
    plain = model.config
    try:
        model.config = plain.replace(norm_refresh_after=8)
        log(f"refresh {length}")
        row = time_read(model, length)
    finally:
        model.config = plain
    results["refresh"] = {length: row}
    log(f"  {row}")


def step_weight_bytes(model) -> int:
    """Bytes of the weights one decoding step reads: every parameter and int8 weight's scales
    (engine/quantize.py), less the embedding (only B rows are read)."""
    scales = [buffer for name, buffer in model.named_buffers() if name.endswith("weight_scale")]
    return sum(t.nbytes for t in [*model.parameters(), *scales]) - model.embed.weight.nbytes


def bench_decode(model, paths: list[str], batches: list[int], steps: int, ceil: dict, results: dict) -> None:
    cfg = model.config
    weight_bytes = step_weight_bytes(model)
    floor_ms = weight_bytes / (ceil["copy_gbps"] * 1e9) * 1e3
    results["decode_floor"] = {
        "weight_gb": weight_bytes / 1e9,
        "floor_ms": floor_ms,
        "floor_tokens_per_s": 1e3 / floor_ms,
    }
    for path in paths:
        set_path(path)
        for batch in batches:
            log(f"decode {path} batch {batch}")
            state = model.new_state(batch)
            ids = torch.randint(0, cfg.vocab_size, (batch, cfg.chunk_size), device="cuda")
            with torch.inference_mode():
                model.read(ids, state)
                token = torch.randint(0, cfg.vocab_size, (batch, 1), device="cuda")
                for _ in range(3):
                    model(token, state)
                torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(steps):
                    logits = model(token, state)
                    token = logits[:, -1].argmax(-1, keepdim=True)
                torch.cuda.synchronize()
            step_ms = (time.perf_counter() - start) / steps * 1e3
            row = {"step_ms": step_ms, "tokens_per_s": batch * 1e3 / step_ms, "fraction_of_floor": floor_ms / step_ms}
            results.setdefault("decode", {}).setdefault(path, {})[batch] = row
            log(f"  {row}")
    for compiled, name in ((False, "triton, CUDA graph"), (True, "triton, CUDA graph + torch.compile")):
        for batch in batches:
            log(f"decode {name} batch {batch}")
            row = time_graph_decode(model, batch, 4 * steps, floor_ms, compiled)
            results.setdefault("decode", {}).setdefault(name, {})[batch] = row
            log(f"  {row}")
        results.setdefault("decode_step_kernels", {})[name] = profile_decode_step(model, compiled)


def bf16_and_int8(model, ceil: dict) -> Iterator[tuple[str, Any, float, float]]:
    """(name, model, weight bytes a step reads, their floor in ms over the copy bandwidth) for the
    bf16 model and a copy of it stored as int8 (engine/quantize.py), the copy freed at the end."""
    from megadoc.engine import quantize_weights

    quantized = quantize_weights(copy.deepcopy(model))
    free_memory()
    try:
        for name, weights in (("bf16", model), ("int8", quantized)):
            weight_bytes = step_weight_bytes(weights)
            yield name, weights, weight_bytes, weight_bytes / (ceil["copy_gbps"] * 1e9) * 1e3
    finally:
        del quantized
        free_memory()


def bench_decode_int8(model, batches: list[int], steps: int, ceil: dict, results: dict) -> None:
    """Decoding through StaticDecoder's graph with bf16 weights and with a copy stored as int8
    (engine/quantize.py: per-row scales, the fused linear kernel dequantizing), per batch: each one's
    floor (the weight bytes a step reads over the copy bandwidth), and the int8 step's kernels."""
    rows: dict[str, Any] = results.setdefault("decode_int8", {})  # filled as measured: a failure keeps the rest
    for name, weights, weight_bytes, floor_ms in bf16_and_int8(model, ceil):
        for batch in batches:
            log(f"decode, {name} weights, batch {batch}")
            row = time_graph_decode(weights, batch, 4 * steps, floor_ms, compiled=False)
            rows.setdefault(name, {})[batch] = row | {"weight_gb": weight_bytes / 1e9, "floor_ms": floor_ms}
            log(f"  {row}")
        if name == "int8":
            rows["int8_step_kernels"] = profile_decode_step(weights, compiled=False)


def bench_decode_grouped(model, batches: list[int], steps: int, ceil: dict, results: dict) -> None:
    """Decoding through StaticDecoder's graph with wz, wr and wh1 read in one launch (`grouped=True`,
    opt-in until measured here) beside three (`grouped=False`), with bf16 weights and a copy stored as int8:
    per batch the step time, its share of the floor and the step's launches (kernels of one eager
    step, the fused linear's among them); then the read of m alone per call (`bench_reads_of_m`)."""
    rows: dict[str, Any] = results.setdefault("decode_grouped", {})  # filled as measured: a failure keeps the rest
    for name, weights, weight_bytes, floor_ms in bf16_and_int8(model, ceil):
        for mode, grouped in (("ungrouped", False), ("grouped", True)):
            for batch in batches:
                log(f"decode, {name} weights, {mode}, batch {batch}")
                kernels = profile_decode_step(weights, compiled=False, grouped=grouped, batch=batch)
                row = time_graph_decode(weights, batch, 4 * steps, floor_ms, compiled=False, grouped=grouped)
                row |= {
                    "weight_gb": weight_bytes / 1e9,
                    "floor_ms": floor_ms,
                    "launches": kernels["kernels"],
                    "linear_launches": kernels["linear_kernels"],
                    "kernel_ms": kernels["kernel_ms"],
                }
                rows.setdefault(name, {}).setdefault(mode, {})[batch] = row
                log(f"  {row}")
    rows["reads_of_m"] = bench_reads_of_m(model.config, ceil["copy_gbps"] * 1e9)


def bench_reads_of_m(cfg: MegalodonConfig, bw: float) -> dict[str, dict[str, float]]:
    """A layer's reads of m at the 7B's shapes (wz + bias, wr + bias + SiLU, wh1 + bias + residual):
    three `fused_linear_triton` launches against one `fused_linear_grouped_triton`, per layer inside
    a CUDA graph cycling over enough weight sets to miss L2; bf16 and int8 weights, batch 1 and 8."""
    from megadoc.kernels.linear import LinearGroup
    from megadoc.kernels.linear.triton import fused_linear_grouped_triton, fused_linear_triton

    d = cfg.model_dim
    shapes = {name: (n, fusion) for name, n, _, fusion, _ in linear_shapes(cfg)}
    reads = [shapes["wz_bias"], shapes["wv_wr_bias_silu"], shapes["wh1_bias_residual"]]
    features = sum(n for n, _ in reads)
    rows: dict[str, dict[str, float]] = {}
    for batch in (1, 8):
        for name in ("bf16", "int8"):
            weight_bytes = features * d * 2 if name == "bf16" else features * (d + 4)
            arg_sets = []
            for _ in range(max(2, -(-256 * 2**20 // weight_bytes))):
                three = [_linear_args(n, d, fusion, batch) for n, fusion in reads]
                three = [a | {"x": three[0]["x"]} for a in three]  # one m for the three
                arg_sets.append([_quantized(a) for a in three] if name == "int8" else three)
            groups = [
                LinearGroup.of(
                    [a["weight"] for a in three],
                    [a["bias"] for a in three],
                    silu=[a["silu"] for a in three],
                    weight_scales=[a.get("weight_scale") for a in three],
                )
                for three in arg_sets
            ]

            def three_launches(three: list[dict[str, Any]]) -> Callable[[], Any]:
                return lambda: [fused_linear_triton(**a) for a in three]

            def one_launch(three: list[dict[str, Any]], group: LinearGroup) -> Callable[[], Any]:
                return lambda: fused_linear_grouped_triton(three[0]["x"], group, (None, None, three[2]["residual"]))

            three_us = 1e3 * graph_ms([three_launches(three) for three in arg_sets] * 2)
            grouped_us = 1e3 * graph_ms([one_launch(t, g) for t, g in zip(arg_sets, groups, strict=True)] * 2)
            rows[f"{name}_b{batch}"] = {
                "floor_us": weight_bytes / bw * 1e6,
                "three_launches_graph_us": three_us,
                "grouped_graph_us": grouped_us,
                "saved_per_step_us": cfg.num_layers * (three_us - grouped_us),
            }
            log(f"  reads of m, {name}, batch {batch}: {rows[f'{name}_b{batch}']}")
            del arg_sets, groups
            free_memory()
    return rows


def time_graph_decode(
    model, batch: int, steps: int, floor_ms: float, compiled: bool, grouped: bool = False
) -> dict[str, float]:
    """Greedy decoding through engine/decode.py's StaticDecoder (one graph replay + argmax a token);
    `capture_s` includes the warm-up steps (and the compilation when `compiled`); `grouped` as the
    decoder takes it."""
    from megadoc.engine import StaticDecoder

    set_path("triton")
    cfg = model.config
    state = model.new_state(batch)
    with torch.inference_mode():
        model.read(torch.randint(0, cfg.vocab_size, (batch, cfg.chunk_size), device="cuda"), state)
        token = torch.randint(0, cfg.vocab_size, (batch,), device="cuda")
        torch.cuda.synchronize()
        start = time.perf_counter()
        decoder = StaticDecoder(model, state, compiled=compiled, grouped=grouped)
        torch.cuda.synchronize()
        capture_s = time.perf_counter() - start
        for _ in range(3):
            token = decoder.step(token).argmax(-1)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            token = decoder.step(token).argmax(-1)
        torch.cuda.synchronize()
    step_ms = (time.perf_counter() - start) / steps * 1e3
    cache_gb = decoder.cache_nbytes / 1e9
    del decoder
    free_memory()
    return {
        "step_ms": step_ms,
        "tokens_per_s": batch * 1e3 / step_ms,
        "fraction_of_floor": floor_ms / step_ms,
        "capture_s": capture_s,
        "cache_buffers_gb": cache_gb,
    }


def profile_decode_step(model, compiled: bool, grouped: bool = False, batch: int = 1) -> dict[str, Any]:
    """Kernels of one StaticDecoder step run without the graph (which replays the same ones): their
    count (the graph's launches per step), time, and the fused linear kernel's launches among them."""
    from torch.profiler import ProfilerActivity, profile

    from megadoc.engine import StaticDecoder

    set_path("triton")
    token = torch.randint(0, model.config.vocab_size, (batch,), device="cuda")
    with torch.inference_mode():
        decoder = StaticDecoder(model, model.new_state(batch), graph=False, compiled=compiled, grouped=grouped)
        decoder.step(token)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            decoder.step(token)
            torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=15, max_name_column_width=50)
    log(table)
    return {
        "kernels": len(kernels),
        "linear_kernels": sum("fused_linear" in e.name for e in kernels),
        "kernel_ms": sum(e.time_range.elapsed_us() for e in kernels) / 1e3,
        "table": table,
    }


def profile_chunk(model, results: dict) -> None:
    """Top CUDA kernels of reading two chunks on the Triton path."""
    from torch.profiler import ProfilerActivity, profile

    set_path("triton")
    ids = torch.randint(0, model.config.vocab_size, (1, 2 * model.config.chunk_size), device="cuda")
    model.read(ids, model.new_state(1))
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        model.read(ids, model.new_state(1))
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=60)
    results["profile"] = table
    log(table)


# -- kernels alone ---------------------------------------------------------------------------


def bench_kernels(ceil: dict, results: dict) -> None:
    """Each kernel vs its reference at the 7B's shapes (one 4096-token chunk, batch 1), and its floor."""
    from megadoc.kernels import attention, attention_triton, cema, timestep_norm
    from megadoc.kernels.cema.triton import cema_triton
    from megadoc.kernels.timestep_norm.triton import timestep_norm_triton

    cfg = MegalodonConfig.preset("7b")
    length, d, n, g = cfg.chunk_size, cfg.model_dim, cfg.cema_ndim, cfg.norm_num_groups
    bw, peak = ceil["copy_gbps"] * 1e9, ceil["matmul_tflops"] * 1e12
    rows = {}
    set_path("reference")
    x = torch.randn(1, length, d, device="cuda", dtype=torch.bfloat16)
    params = (
        torch.randn(d, n, 1, device="cuda") * 0.2,
        torch.randn(d, n, 1, device="cuda") * 0.2,
        torch.randn(d, 1, 1, device="cuda"),
        torch.randn(d, n, 2, device="cuda"),
        torch.randn(d, 1, device="cuda") * 0.25,
    )
    coeffs = cema.cema_coefficients(*params)
    h = torch.randn(1, d, n, dtype=torch.complex64, device="cuda")
    io_floor = 2 * x.numel() * 2 / bw * 1e3
    rows["cema"] = {"reference_ms": median_ms(lambda: cema.cema_chunked(x, coeffs, h)), "floor_ms": io_floor}
    for segments in (1, 2, 4, 8, 16):
        rows["cema"][f"triton_s{segments}_ms"] = median_ms(lambda s=segments: cema_triton(x, coeffs, h, segments=s))
    rows["cema"]["triton_ms"] = median_ms(lambda: cema_triton(x, coeffs, h))
    rows["cema"]["fp32_flop_floor_ms"] = length * d * n * 10 / 60e12 * 1e3  # ~10 flops per lane, ~60 TFLOP/s fp32

    stats = timestep_norm.NormStats(
        torch.zeros(1, dtype=torch.int64, device="cuda"),
        torch.zeros(1, g, device="cuda"),
        torch.ones(1, g, device="cuda"),
    )
    w, b = torch.zeros(d, device="cuda"), torch.zeros(d, device="cuda")
    rows["timestep_norm"] = {
        "reference_ms": median_ms(lambda: timestep_norm.timestep_norm(x, stats, w, b)),
        "triton_ms": median_ms(lambda: timestep_norm_triton(x, stats, w, b)),
        "floor_ms": io_floor,
    }

    heads, zh, vh = cfg.num_heads, cfg.head_z_dim, cfg.head_value_dim
    q = torch.randn(1, length, heads, zh, device="cuda", dtype=torch.bfloat16) * 0.1
    k = torch.randn(1, length, heads, zh, device="cuda", dtype=torch.bfloat16) * 0.1
    v = torch.randn(1, length, heads, vh, device="cuda", dtype=torch.bfloat16)
    flops = heads * 2 * (zh + vh) * length * (length + 1) / 2
    attn = {
        "flops_g": flops / 1e9,
        "floor_ms": flops / peak * 1e3,
        "reference_ms": median_ms(lambda: attention.chunk_attention(q, k, v)),
    }
    try:
        attn["sdpa_ms"] = median_ms(lambda: attention_triton.chunk_attention_sdpa(q, k, v))
    except RuntimeError as error:
        attn["sdpa_ms"] = f"failed: {str(error)[:80]}"
    for bm, bn, bdv, warps, stages in [
        (128, 64, 128, 8, 2),
        (128, 64, 256, 8, 2),
        (128, 64, 256, 8, 3),
        (128, 32, 256, 8, 3),
        (64, 64, 512, 8, 2),
        (64, 32, 512, 8, 2),
    ]:
        name = f"triton_m{bm}_n{bn}_dv{bdv}_w{warps}_s{stages}_ms"
        try:
            attn[name] = median_ms(
                lambda a=(bm, bn, bdv, warps, stages): attention_triton.chunk_attention_triton(
                    q, k, v, block_m=a[0], block_n=a[1], block_dv=a[2], num_warps=a[3], num_stages=a[4]
                )
            )
        except Exception as error:  # a tile that does not fit the shared memory: report and go on
            attn[name] = f"failed: {str(error)[:80]}"
    # decoding: one query against a full chunk of keys, batch 8
    qd = torch.randn(8, 1, heads, zh, device="cuda", dtype=torch.bfloat16)
    kd = torch.randn(8, length, heads, zh, device="cuda", dtype=torch.bfloat16)
    vd = torch.randn(8, length, heads, vh, device="cuda", dtype=torch.bfloat16)
    attn["decode_b8_floor_ms"] = (kd.numel() + vd.numel()) * 2 / bw * 1e3
    attn["decode_b8_reference_ms"] = median_ms(lambda: attention.chunk_attention(qd, kd, vd))
    attn["decode_b8_triton_ms"] = median_ms(lambda: attention_triton.chunk_attention_triton(qd, kd, vd))
    try:
        attn["decode_b8_sdpa_ms"] = median_ms(lambda: attention_triton.chunk_attention_sdpa(qd, kd, vd))
    except RuntimeError as error:
        attn["decode_b8_sdpa_ms"] = f"failed: {str(error)[:80]}"
    rows["chunk_attention"] = attn
    results["kernels"] = rows
    log(json.dumps(rows, indent=1))


def bench_decode_kernels(ceil: dict, results: dict) -> None:
    """The decoding step's kernels (7B shapes, batch 1 and 8) vs their references and floors."""
    cfg = MegalodonConfig.preset("7b")
    bw = ceil["copy_gbps"] * 1e9
    rows = bench_norm_step(cfg, bw) | bench_decode_attention(cfg, bw) | bench_fused_linear(cfg, bw)
    results.setdefault("kernels", {}).update(rows)
    log(json.dumps(rows, indent=1))


DECODE_TILES = [  # block_n, block_dv, num_warps, programs wanted at a full chunk (the first is the default)
    (32, 512, 8, 1024),
    (16, 256, 4, 1024),
    (32, 256, 4, 2048),
    (64, 512, 8, 512),
    (32, 1024, 8, 1024),
    (16, 2048, 8, 512),
]


def bench_norm_step(cfg: MegalodonConfig, bw: float) -> dict[str, dict[str, float]]:
    """The decoder's one-token timestep norm (in place, as StaticDecoder calls it), 33 calls per
    CUDA graph as in one 7B step: the reference's float64 kernels vs the Triton kernel (us per call)."""
    from megadoc.kernels.timestep_norm import NormStats, timestep_norm_step
    from megadoc.kernels.timestep_norm.triton import timestep_norm_step_triton

    d, g, calls = cfg.model_dim, cfg.norm_num_groups, cfg.num_layers + 1  # each layer's and the final norm
    w, b = torch.randn(d, device="cuda") * 0.1, torch.randn(d, device="cuda") * 0.1
    set_path("reference")
    rows = {}
    for batch in (1, 8):
        x = torch.randn(batch, d, device="cuda", dtype=torch.bfloat16) * 3 + 5
        stats = NormStats(
            torch.full((batch,), 1000, device="cuda"),
            torch.randn(batch, g, device="cuda"),
            torch.rand(batch, g, device="cuda") + 1,
        )
        row = {"floor_us": (2 * x.nbytes + w.nbytes + b.nbytes) / bw * 1e6}
        for name, fn in (("reference", timestep_norm_step), ("triton", timestep_norm_step_triton)):
            row[f"{name}_graph_us"] = 1e3 * graph_ms([functools.partial(fn, x, stats, w, b, out=stats)] * calls)
        rows[f"norm_step_b{batch}"] = row
    return rows


def _cycled(
    fn: Callable[..., torch.Tensor], buffers: list[tuple[torch.Tensor, ...]], last: torch.Tensor, **tile: int
) -> list[Callable[[], torch.Tensor]]:
    """Calls of fn over each buffer set in turn, twice round."""
    return [functools.partial(fn, *buf, last, **tile) for buf in buffers] * 2


def bench_decode_attention(cfg: MegalodonConfig, bw: float, sets: int = 4) -> dict[str, dict[str, Any]]:
    """One query per row over the slots 0..last of the chunk's key/value buffers (StaticDecoder's
    attention) at 1, C/2 and C valid slots: the masked reference (reads all C slots) vs the Triton
    split-K kernel and its tiles. Times per call inside a CUDA graph that cycles over `sets` buffer
    sets, so that repeated calls do not read L2."""
    from megadoc.kernels.attention import decode_attention
    from megadoc.kernels.attention.triton import decode_attention_triton

    heads, zh, vh, slots = cfg.num_heads, cfg.head_z_dim, cfg.head_value_dim, cfg.chunk_size
    set_path("reference")
    rows = {}
    for batch in (1, 8):
        buffers = [
            (
                torch.randn(batch, 1, heads, zh, device="cuda", dtype=torch.bfloat16) * zh**-0.5,
                torch.randn(batch, heads, slots, zh, device="cuda", dtype=torch.bfloat16),
                torch.randn(batch, heads, slots, vh, device="cuda", dtype=torch.bfloat16),
            )
            for _ in range(sets)
        ]
        for valid in (1, slots // 2, slots):
            last = torch.tensor([valid - 1], device="cuda")
            row: dict[str, Any] = {
                "floor_us": batch * heads * valid * (zh + vh) * 2 / bw * 1e6,
                "reference_graph_us": 1e3 * graph_ms(_cycled(decode_attention, buffers, last)),
            }
            for bn, bdv, warps, programs in DECODE_TILES:
                name = f"triton_n{bn}_dv{bdv}_w{warps}_p{programs}_graph_us"
                tile = {"block_n": bn, "block_dv": bdv, "num_warps": warps, "programs": programs}
                try:
                    row[name] = 1e3 * graph_ms(_cycled(decode_attention_triton, buffers, last, **tile))
                except Exception as error:  # a tile that does not fit: report and go on
                    row[name] = f"failed: {str(error)[:80]}"
            rows[f"decode_attention_b{batch}_valid{valid}"] = row
        del buffers
        free_memory()
    return rows


LINEAR_TILES = [  # block_n, block_k, num_warps, num_stages (the kernel's defaults are timed as `triton`)
    (16, 256, 4, 4),
    (32, 256, 4, 4),
    (64, 128, 4, 4),
    (32, 128, 4, 6),
    (16, 512, 4, 3),
    (32, 512, 8, 3),
    (64, 256, 8, 4),
    (16, 128, 4, 6),
]


def linear_shapes(cfg: MegalodonConfig) -> list[tuple[str, int, int, dict[str, bool], int]]:
    """(name, N, K, fusion, calls per step) of every weight read in one decoding step."""
    d, z, v, f = cfg.model_dim, cfg.z_dim, cfg.value_dim, cfg.ffn_hidden_dim
    layers = cfg.num_layers
    return [
        ("wz_bias", z, d, {"bias": True}, layers),
        ("wv_wr_bias_silu", v, d, {"bias": True, "silu": True}, 2 * layers),
        ("wh1_bias_residual", d, d, {"bias": True, "residual": True}, layers),
        ("wh2_gate_residual", d, v, {"scale": True, "residual": True}, layers),
        ("fc1_fc3_swiglu", f, d, {"silu": True, "up": True}, layers),
        ("fc2_residual", d, f, {"residual": True}, layers),
        ("output_head", cfg.logits_dim, d, {}, 1),
    ]


def _linear_args(n: int, k: int, fusion: dict[str, bool], batch: int) -> dict[str, Any]:
    """Random bf16 arguments of `fused_linear` for a [batch, k] input, an [n, k] weight and `fusion`."""

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device="cuda", dtype=torch.bfloat16) * 0.05

    return {
        "x": rand(batch, k),
        "weight": rand(n, k),
        "bias": rand(n) if fusion.get("bias") else None,
        "silu": fusion.get("silu", False),
        "up": rand(n, k) if fusion.get("up") else None,
        "scale": rand(batch, k) if fusion.get("scale") else None,
        "residual": rand(batch, n) if fusion.get("residual") else None,
    }


def _quantized(args: dict[str, Any]) -> dict[str, Any]:
    """`args` with the weight (and up) stored as int8 with their per-row scales."""
    from megadoc.kernels.linear import quantize_per_channel

    out = dict(args)
    out["weight"], out["weight_scale"] = quantize_per_channel(args["weight"])
    if args["up"] is not None:
        out["up"], out["up_scale"] = quantize_per_channel(args["up"])
    return out


def _linear_calls(
    fn: Callable[..., torch.Tensor], arg_sets: list[dict[str, Any]], **tile: int
) -> list[Callable[[], torch.Tensor]]:
    """Calls of fn over each argument set in turn, twice round."""
    return [functools.partial(fn, **args, **tile) for args in arg_sets] * 2


def _sweep_tiles(
    arg_sets: list[dict[str, Any]], tiles: list[tuple[int, int, int, int]], prefix: str
) -> tuple[dict[str, Any], float]:
    """The Triton kernel per call (us, in a graph) with its default tiles (`{prefix}_graph_us`) and
    each of `tiles`; returns the row and the best time."""
    from megadoc.kernels.linear.triton import fused_linear_triton

    row: dict[str, Any] = {f"{prefix}_graph_us": 1e3 * graph_ms(_linear_calls(fused_linear_triton, arg_sets))}
    best = row[f"{prefix}_graph_us"]
    for bn, bk, warps, stages in tiles:
        key = f"{prefix}_n{bn}_k{bk}_w{warps}_s{stages}_graph_us"
        tile = {"block_n": bn, "block_k": bk, "num_warps": warps, "num_stages": stages}
        try:
            row[key] = 1e3 * graph_ms(_linear_calls(fused_linear_triton, arg_sets, **tile))
            best = min(best, row[key])
        except Exception as error:  # a tile that does not fit: report and go on
            row[key] = f"failed: {str(error)[:80]}"
    return row, best


INT8_LINEAR_TILES = [  # as LINEAR_TILES, for int8 weights: more buffers or longer K steps (same bytes in flight)
    (32, 256, 4, 4),
    (32, 512, 4, 4),
    (32, 512, 8, 4),
    (16, 512, 4, 3),
    (16, 1024, 4, 3),
    (16, 512, 4, 6),
    (64, 256, 4, 4),
    (64, 256, 8, 8),
]


def bench_fused_linear(cfg: MegalodonConfig, bw: float) -> dict[str, dict[str, Any]]:
    """The decoding step's weight reads (7B shapes, batch 1 and 8): the reference (cuBLAS and one
    kernel per elementwise step, what the model ran before) vs kernels/linear/triton.py and its tiles,
    with bf16 weights and with the same weights as int8 (`int8_*`), per call inside a CUDA graph that
    cycles over enough weight sets to miss L2. Ends with the sum over one step (each shape times its
    calls) for the reference, the default and the best tiles."""
    from megadoc.kernels.linear.reference import fused_linear as fused_linear_reference

    rows: dict[str, dict[str, Any]] = {}
    for batch in (1, 8):
        totals = dict.fromkeys(
            (
                "floor_us",
                "reference_graph_us",
                "triton_graph_us",
                "best_tiles_us",
                "int8_floor_us",
                "int8_graph_us",
                "int8_best_tiles_us",
            ),
            0.0,
        )
        for name, n, k, fusion, calls in linear_shapes(cfg):
            matrices = 2 if fusion.get("up") else 1
            weight_bytes, int8_bytes = n * k * 2 * matrices, (n * k + 4 * n) * matrices
            sets = max(2, -(-256 * 2**20 // weight_bytes))
            args = [_linear_args(n, k, fusion, batch) for _ in range(sets)]
            row: dict[str, Any] = {"floor_us": weight_bytes / bw * 1e6, "int8_floor_us": int8_bytes / bw * 1e6}
            row["reference_graph_us"] = 1e3 * graph_ms(_linear_calls(fused_linear_reference, args))
            bf16_row, best = _sweep_tiles(args, LINEAR_TILES, "triton")
            int8_row, int8_best = _sweep_tiles([_quantized(a) for a in args], INT8_LINEAR_TILES, "int8")
            row |= bf16_row | int8_row
            row["triton_gbps"] = weight_bytes / row["triton_graph_us"] / 1e3
            row["int8_gbps"] = int8_bytes / row["int8_graph_us"] / 1e3
            row["reference_gbps"] = weight_bytes / row["reference_graph_us"] / 1e3
            for total, value in (
                ("floor_us", row["floor_us"]),
                ("reference_graph_us", row["reference_graph_us"]),
                ("triton_graph_us", row["triton_graph_us"]),
                ("best_tiles_us", best),
                ("int8_floor_us", row["int8_floor_us"]),
                ("int8_graph_us", row["int8_graph_us"]),
                ("int8_best_tiles_us", int8_best),
            ):
                totals[total] += calls * value
            rows[f"linear_{name}_b{batch}"] = row
            del args
            free_memory()
        rows[f"linear_step_total_b{batch}"] = totals
    return rows


# -- the transformers baseline -----------------------------------------------------------------


def bench_llama(lengths: list[int], ceil: dict, results: dict) -> None:
    """A Llama-2-7B-shaped model (random weights, SDPA attention) prefilling with its KV cache."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
        max_position_embeddings=max(lengths),
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg)
    model = model.to(torch.bfloat16).eval()
    free_memory()
    params = sum(p.numel() for p in model.model.parameters()) - 32000 * 4096
    rows = {}
    for length in lengths:
        log(f"llama {length}")
        ids = torch.randint(0, 32000, (1, length), device="cuda")
        free_memory()
        torch.cuda.reset_peak_memory_stats()
        try:
            with torch.inference_mode():
                model.model(ids[:, :512], use_cache=True)  # warm up
                torch.cuda.synchronize()
                start = time.perf_counter()
                out = model.model(ids, use_cache=True)
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            del out
            flops = 2 * params * length + 32 * 4 * 4096 * length * (length + 1) / 2
            rows[length] = {
                "seconds": seconds,
                "tokens_per_s": length / seconds,
                "tflops": flops / seconds / 1e12,
                "fraction_of_peak": flops / seconds / 1e12 / ceil["matmul_tflops"],
                "peak_gb": torch.cuda.max_memory_allocated() / 1e9,
            }
        except torch.cuda.OutOfMemoryError:
            rows[length] = {"error": "out of memory"}
            log("  out of memory")
            free_memory()
            break
        log(f"  {rows[length]}")
    del model
    free_memory()
    results["llama"] = rows


# -- report --------------------------------------------------------------------------------------


def fmt_length(n: int) -> str:
    return f"{n // (1024 * 1024)}M" if n % (1024 * 1024) == 0 else f"{n // 1024}K"


def render(results: dict) -> str:
    lines = [f"# megadoc speed, {results['device']} (torch {results['torch']}, triton {results['triton']})", ""]
    ceil = results.get("ceilings")
    if ceil:
        lines += [
            f"Measured ceilings: bf16 matmul 8192^3 {ceil['matmul_tflops']:.0f} TFLOP/s; "
            f"device copy {ceil['copy_gbps']:.0f} GB/s (read + written).",
            "",
        ]
    if "prefill" in results or "llama" in results:
        lines += [
            "| prefill (batch 1) | length | tokens/s | TFLOP/s | of matmul peak | peak memory GB |",
            "|---|---|---|---|---|---|",
        ]
        named = [(f"megalodon 7B, {p}", rows) for p, rows in results.get("prefill", {}).items()]
        if "refresh" in results:
            named.append(("megalodon 7B, triton, norm refresh (k=8)", results["refresh"]))
        if "llama" in results:
            named.append(("llama-2-7B shape, HF + SDPA", results["llama"]))
        for name, rows in named:
            for length, row in rows.items():
                if "error" in row:
                    lines.append(f"| {name} | {fmt_length(int(length))} | {row['error']} | | | |")
                    continue
                tflops = row.get("tflops")
                lines.append(
                    f"| {name} | {fmt_length(int(length))} | {row['tokens_per_s']:,.0f} | "
                    + (f"{tflops:.0f} | {row['fraction_of_peak']:.1%}" if tflops else " | ")
                    + f" | {row['peak_gb']:.1f} |"
                )
        lines.append("")
    if "decode" in results:
        floor = results["decode_floor"]
        lines += [
            f"Decoding floor: {floor['weight_gb']:.1f} GB of weights per step / copy bandwidth = "
            f"{floor['floor_ms']:.2f} ms ({floor['floor_tokens_per_s']:.0f} steps/s).",
            "",
            "| decoding (cache empty, chunk start) | batch | ms/step | tokens/s | of bandwidth floor |",
            "|---|---|---|---|---|",
        ]
        for path, rows in results["decode"].items():
            for batch, row in rows.items():
                lines.append(
                    f"| megalodon 7B, {path} | {batch} | {row['step_ms']:.1f} | "
                    f"{row['tokens_per_s']:.0f} | {row['fraction_of_floor']:.1%} |"
                )
        lines.append("")
        for name, kernels in results.get("decode_step_kernels", {}).items():
            lines += [
                f"One decoding step ({name}, batch 1): {kernels['kernels']} kernels, "
                f"{kernels['kernel_ms']:.2f} ms of kernel time.",
                "",
            ]
    if "decode_int8" in results:
        rows = results["decode_int8"]
        lines += [
            "| decoding, CUDA graph (cache at a chunk start) | weights | batch | GB read per step | floor ms | "
            "ms/step | tokens/s | of floor | speed vs bf16 |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name in ("bf16", "int8"):
            for batch, row in rows.get(name, {}).items():
                ratio = rows["bf16"][batch]["step_ms"] / row["step_ms"]
                lines.append(
                    f"| megalodon 7B | {name} | {batch} | {row['weight_gb']:.2f} | {row['floor_ms']:.2f} | "
                    f"{row['step_ms']:.2f} | {row['tokens_per_s']:.0f} | {row['fraction_of_floor']:.1%} | "
                    f"{ratio:.2f}x |"
                )
        lines.append("")
        if "int8_step_kernels" in rows:
            kernels = rows["int8_step_kernels"]
            lines += [
                f"One decoding step with int8 weights (batch 1): {kernels['kernels']} kernels, "
                f"{kernels['kernel_ms']:.2f} ms of kernel time.",
                "",
            ]
    if "decode_grouped" in results:
        lines += render_decode_grouped(results["decode_grouped"])
    if "kernels" in results:
        lines += ["| kernel (7B, one 4096-token chunk) | figures (ms unless named) |", "|---|---|"]
        for name, row in results["kernels"].items():
            cells = ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
            lines.append(f"| {name} | {cells} |")
        lines.append("")
    return "\n".join(lines)


def render_decode_grouped(rows: dict[str, Any]) -> list[str]:
    """The grouped and ungrouped decoding steps beside each other, then the reads of m per layer."""
    lines = [
        "| decoding, CUDA graph (cache at a chunk start) | weights | reads of m | batch | launches per step | "
        "fused linear launches | floor ms | ms/step | tokens/s | of floor | speed vs ungrouped |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ("bf16", "int8"):
        for mode, label in (("ungrouped", "3 launches"), ("grouped", "1 launch")):
            for batch, row in rows.get(name, {}).get(mode, {}).items():
                base = rows[name].get("ungrouped", {}).get(batch)
                ratio = f"{base['step_ms'] / row['step_ms']:.3f}x" if base else ""
                lines.append(
                    f"| megalodon 7B | {name} | {label} | {batch} | {row['launches']} | {row['linear_launches']} | "
                    f"{row['floor_ms']:.2f} | {row['step_ms']:.2f} | {row['tokens_per_s']:.0f} | "
                    f"{row['fraction_of_floor']:.1%} | {ratio} |"
                )
    lines.append("")
    if "reads_of_m" in rows:
        lines += [
            "| reads of m per layer (7B: wz, wr, wh1), in a graph | floor us | 3 launches us | 1 launch us | "
            "saved per step us |",
            "|---|---|---|---|---|",
        ]
        for name, row in rows["reads_of_m"].items():
            lines.append(
                f"| {name} | {row['floor_us']:.1f} | {row['three_launches_graph_us']:.1f} | "
                f"{row['grouped_graph_us']:.1f} | {row['saved_per_step_us']:.0f} |"
            )
        lines.append("")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--parts",
        default="ceilings,kernels,prefill,decode,decode_int8,decode_grouped,refresh,llama",
        help=f"comma-separated, from {','.join(PARTS)}",
    )
    parser.add_argument("--lengths", default="32k,128k,1m", help="prefill lengths (Triton path)")
    parser.add_argument("--reference-lengths", default="32k,128k", help="prefill lengths of the reference path")
    parser.add_argument("--llama-lengths", default="32k,64k,128k,1m")
    parser.add_argument("--refresh-length", default="128k")
    parser.add_argument("--paths", default="triton,reference", help="kernel paths: triton, reference")
    parser.add_argument("--decode-batches", default="1,8")
    parser.add_argument("--decode-steps", type=int, default=32)
    parser.add_argument("--json", help="also write every figure to this file")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("needs a CUDA device")
    parts = set(args.parts.split(","))
    paths = args.paths.split(",")
    import triton

    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "command": " ".join(sys.argv),
    }

    def save() -> None:
        if args.json:
            with open(args.json, "w") as handle:
                json.dump(results, handle, indent=1, default=str)

    def step(name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:  # report and go on with the other parts
            results.setdefault("errors", {})[name] = traceback.format_exc(limit=4)
            log(traceback.format_exc())
        save()

    step("ceilings", lambda: results.__setitem__("ceilings", measure_ceilings()))
    free_memory()
    ceil = results.get("ceilings", {"matmul_tflops": 795.0, "copy_gbps": 3000.0})
    if "kernels" in parts:
        step("kernels", lambda: bench_kernels(ceil, results))
        free_memory()
    if parts & {"kernels", "decode_kernels"}:
        step("decode_kernels", lambda: bench_decode_kernels(ceil, results))
        free_memory()
    if parts & {"prefill", "decode", "decode_int8", "decode_grouped", "refresh", "profile"}:
        model = build_megalodon(MegalodonConfig.preset("7b"))
        if "profile" in parts:
            step("profile", lambda: profile_chunk(model, results))
        if "prefill" in parts:
            for path in paths:
                lengths = args.lengths if path == "triton" else args.reference_lengths
                step(
                    f"prefill-{path}",
                    lambda p=path, ls=lengths: bench_prefill(
                        model, [parse_length(x) for x in ls.split(",") if x], [p], ceil, results
                    ),
                )
        if "decode" in parts:
            step(
                "decode",
                lambda: bench_decode(
                    model, paths, [int(b) for b in args.decode_batches.split(",")], args.decode_steps, ceil, results
                ),
            )
        if "decode_int8" in parts:
            step(
                "decode_int8",
                lambda: bench_decode_int8(
                    model, [int(b) for b in args.decode_batches.split(",")], args.decode_steps, ceil, results
                ),
            )
        if "decode_grouped" in parts:
            step(
                "decode_grouped",
                lambda: bench_decode_grouped(
                    model, [int(b) for b in args.decode_batches.split(",")], args.decode_steps, ceil, results
                ),
            )
        if "refresh" in parts:
            step("refresh", lambda: bench_refresh(model, parse_length(args.refresh_length), ceil, results))
        del model
        free_memory()
    if "llama" in parts:
        step("llama", lambda: bench_llama([parse_length(x) for x in args.llama_lengths.split(",")], ceil, results))
    print(render(results))
    if "profile" in results:
        print(results["profile"])
    for name, error in results.get("errors", {}).items():
        print(f"ERROR in {name}: {error.splitlines()[-1]}")


if __name__ == "__main__":
    main()

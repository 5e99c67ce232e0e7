#!/usr/bin/env python3
"""Decode attention on TurboQuant codes (tqai, CUDA) against PyTorch SDPA.

Runs build/bench/bench_cuda_attn (our kernels, JSON lines on stdout), then
times torch.nn.functional.scaled_dot_product_attention with the flash backend
on fp16 and bf16 K/V of the same shapes, and a large device-to-device copy
for the peak bandwidth. Prints a table of speed ratios measured in this one
run and writes everything to OUT/bench_cuda.json.

Shapes: one new query per sequence, 32 query heads, 8 KV heads, head size
128 (grouped-query attention), batch 1, 8, 32, context 4k, 32k, 128k.
Every timing is the median of many calls timed with CUDA events after a
warm-up; inputs rotate among several buffers when one set would fit in L2.

Sustained timing: the GPU lowers its SM clock within tens of milliseconds
once its power draw reaches the board's limit (on an H200 both our kernel
and SDPA reach it at batch 8 and up), so a short timing after an idle moment
measures a clock that depends on what ran before. Both sides are therefore
also timed as CUDA-graph replays back to back for --warm-ms, then over a
window of --window-ms (median replay), while nvidia-smi samples the SM clock
and the power draw; the third table gives those medians per window.
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

L2_ROTATE_BYTES = 240 << 20  # rotate buffers until this much is touched


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", default="build/bench/bench_cuda_attn")
    ap.add_argument("--out", default=os.environ.get("OUT", "build/cuda-out"))
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--contexts", default="4096,32768,131072")
    ap.add_argument("--bits", default="4/2,3/2")
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--warm-ms", type=int, default=1000,
                    help="back-to-back replays before a sustained window")
    ap.add_argument("--window-ms", type=int, default=1000,
                    help="length of a sustained window; 0 leaves sustained timing out")
    a = ap.parse_args()
    if not 1 <= a.iters <= 100000:
        ap.error("--iters must be within 1..100000")
    for name in ("warm_ms", "window_ms"):
        if not 0 <= getattr(a, name) <= 600000:
            ap.error(f"--{name.replace('_', '-')} must be within 0..600000")
    return a


class GpuSampler:
    """nvidia-smi sampling the SM clock and power draw every 50 ms into a
    file; after stop(), window(t0, t1) gives the medians of the samples
    between two time.time() values (None when nvidia-smi is missing or says
    N/A)."""

    def __init__(self, path):
        self.path, self.proc, self.samples = path, None, []
        power = "power.draw.instant"
        try:
            probe = subprocess.run(["nvidia-smi", f"--query-gpu={power}", "--format=csv,noheader"],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            if probe.returncode != 0 or "N/A" in probe.stdout or "not" in probe.stdout.lower():
                power = "power.draw"
            self.file = open(path, "w")
            self.proc = subprocess.Popen(
                ["nvidia-smi", f"--query-gpu=timestamp,clocks.sm,{power}",
                 "--format=csv,noheader,nounits", "-lms", "50"],
                stdout=self.file, stderr=subprocess.DEVNULL)
        except OSError:
            self.proc = None

    def stop(self):
        if not self.proc:
            return
        self.proc.terminate()
        self.proc.wait()
        self.file.close()
        with open(self.path) as f:
            for line in f:
                parts = [x.strip() for x in line.split(",")]
                if len(parts) != 3:
                    continue
                try:
                    t = datetime.datetime.strptime(parts[0], "%Y/%m/%d %H:%M:%S.%f").timestamp()
                    self.samples.append((t, float(parts[1]), float(parts[2])))
                except ValueError:
                    continue

    def window(self, t0, t1):
        inside = [(c, w) for t, c, w in self.samples if t1 and t0 <= t <= t1]
        if not inside:
            return None, None
        return statistics.median(c for c, _ in inside), statistics.median(w for _, w in inside)


def run_ours(a):
    cmd = [a.bench, "--batches", a.batches, "--contexts", a.contexts, "--bits", a.bits,
           "--heads", str(a.heads), "--kv-heads", str(a.kv_heads), "--dim", str(a.dim),
           "--iters", str(a.iters), "--warm-ms", str(a.warm_ms), "--window-ms", str(a.window_ms)]
    print("running:", " ".join(cmd), flush=True)
    res = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
    return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]


def time_calls(torch, fn, n_bufs, iters):
    """Median milliseconds of fn(i) over iters calls, i rotating over n_bufs."""
    for i in range(5):
        fn(i % n_bufs)
    torch.cuda.synchronize()
    start = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    end = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for i in range(iters):
        start[i].record()
        fn(i % n_bufs)
        end[i].record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(start, end))


def time_graph(torch, fn, n_bufs, iters, warm_ms=0, window_ms=0):
    """Median milliseconds of one call, from CUDA-graph replays of a graph of
    R calls (buffers in turn), and the sustained timing (None, or the median
    over R of the replays in a window of window_ms after warm_ms of replays
    back to back, with the window's time.time() start and end); (None, None)
    when capture fails."""
    R = max(n_bufs, 8)
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for i in range(3):
                fn(i % n_bufs)
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for i in range(R):
                fn(i % n_bufs)
        ms = time_calls(torch, lambda i: g.replay(), 1, iters) / R
        sus = None
        if window_ms > 0:
            replay = ms * R
            for i in range(min(200000, int(warm_ms / replay) + 1)):
                g.replay()
            torch.cuda.synchronize()
            t0 = time.time()
            n = max(5, min(20000, int(window_ms / replay) + 1))
            sus = (time_calls(torch, lambda i: g.replay(), 1, n) / R, t0, time.time())
        del g
        return ms, sus
    except RuntimeError:
        torch.cuda.synchronize()
        return None, None


def peak_copy(torch, iters, warm_ms=0, window_ms=0):
    """Device-to-device copy of 4 GiB; bandwidth counts read + write bytes.
    Returns (GB/s, ms, sustained) with sustained None or (GB/s, t0, t1):
    copies back to back for warm_ms, then the median over window_ms."""
    n = 4 << 30
    src = torch.empty(n, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    src.fill_(1)
    ms = time_calls(torch, lambda i: dst.copy_(src), 1, max(10, iters // 2))
    sus = None
    if window_ms > 0:
        for i in range(int(warm_ms / ms) + 1):
            dst.copy_(src)
        torch.cuda.synchronize()
        t0 = time.time()
        sms = time_calls(torch, lambda i: dst.copy_(src), 1, max(10, int(window_ms / ms) + 1))
        sus = (2 * n / (sms * 1e-3) / 1e9, t0, time.time())
    del src, dst
    torch.cuda.empty_cache()
    return 2 * n / (ms * 1e-3) / 1e9, ms, sus


def torch_sdpa(torch, a, batch, ctx, dtype, sustained):
    """Flash SDPA for one decode step; returns (median ms queued, median ms
    from graph replays, sustained timing (time_graph's; None unless
    sustained), bytes, gqa mode)."""
    windows = (a.warm_ms, a.window_ms) if sustained else (0, 0)
    from torch.nn.attention import SDPBackend, sdpa_kernel
    F = torch.nn.functional
    Hq, H, d = a.heads, a.kv_heads, a.dim
    kv_bytes = 2 * batch * H * ctx * d * 2
    n_bufs = max(1, min(16, -(-L2_ROTATE_BYTES // kv_bytes)))
    free = torch.cuda.mem_get_info()[0]
    n_bufs = max(1, min(n_bufs, int(0.8 * free // kv_bytes)))
    qs = [torch.randn(batch, Hq, 1, d, device="cuda", dtype=dtype) for _ in range(n_bufs)]
    ks = [torch.randn(batch, H, ctx, d, device="cuda", dtype=dtype) for _ in range(n_bufs)]
    vs = [torch.randn(batch, H, ctx, d, device="cuda", dtype=dtype) for _ in range(n_bufs)]
    mode = "enable_gqa"
    try:
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            def call(i):
                return F.scaled_dot_product_attention(qs[i], ks[i], vs[i], enable_gqa=True)
            ms = time_calls(torch, call, n_bufs, a.iters)
            gms, sus = time_graph(torch, call, n_bufs, max(10, a.iters // 2), *windows)
    except RuntimeError:
        # Flash without native GQA: the query heads of a group become extra
        # query rows of their KV head (batch, H, G, d), the same math and
        # the same K/V bytes read once.
        mode = "query-rows"
        G = Hq // H
        qs = [q.view(batch, H, G, d) for q in qs]
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            def call(i):
                return F.scaled_dot_product_attention(qs[i], ks[i], vs[i])
            ms = time_calls(torch, call, n_bufs, a.iters)
            gms, sus = time_graph(torch, call, n_bufs, max(10, a.iters // 2), *windows)
    bytes_ = kv_bytes + 2 * batch * Hq * d * 2
    del qs, ks, vs
    torch.cuda.empty_cache()
    return ms, gms, sus, bytes_, mode


def main():
    a = parse_args()
    os.makedirs(a.out, exist_ok=True)
    sampler = GpuSampler(os.path.join(a.out, "gpu_samples.csv")) if a.window_ms > 0 else None
    try:
        ours = run_ours(a)
        import torch
        dev = torch.cuda.get_device_name(0)
        peak_gbps, _, peak_sus = peak_copy(torch, a.iters, a.warm_ms, a.window_ms)
        print(f"device: {dev}; device-to-device copy: {peak_gbps:.0f} GB/s (read + write)"
              + (f", sustained {peak_sus[0]:.0f} GB/s" if peak_sus else ""), flush=True)
        base = {}
        for batch in [int(x) for x in a.batches.split(",")]:
            for ctx in [int(x) for x in a.contexts.split(",")]:
                for name, dt in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
                    try:
                        ms, gms, sus, b, mode = torch_sdpa(torch, a, batch, ctx, dt,
                                                           a.window_ms > 0 and name == "fp16")
                        base[(batch, ctx, name)] = {"ms": ms, "graph_ms": gms, "bytes": b,
                                                    "gqa": mode}
                        if sus:
                            base[(batch, ctx, name)].update(
                                {"sustained_ms": sus[0], "sustained_t0": sus[1],
                                 "sustained_t1": sus[2]})
                    except (RuntimeError, torch.cuda.OutOfMemoryError) as e:
                        base[(batch, ctx, name)] = {"ms": None, "error": str(e).splitlines()[0]}
                        torch.cuda.empty_cache()
    finally:
        if sampler:
            sampler.stop()
    peak_sus_gbps = peak_sus[0] if peak_sus else None
    for v in base.values():
        if v.get("sustained_ms"):
            v["sustained_mhz"], v["sustained_w"] = sampler.window(v["sustained_t0"],
                                                                   v["sustained_t1"])
    rows = []
    for r in ours:
        key = (r["batch"], r["context"])
        f16 = base.get(key + ("fp16",), {})
        b16 = base.get(key + ("bf16",), {})
        us = r.get("stream_us") or r["median_us"]  # queued, as SDPA is timed
        ms = us / 1e3
        rows.append({
            "bits": f"K{r['kbits']}/V{r['vbits']}", "batch": r["batch"], "context": r["context"],
            "tqai_us": us, "tqai_sync_us": r["median_us"], "fp16_us": f16["ms"] * 1e3 if f16.get("ms") else None,
            "bf16_us": b16["ms"] * 1e3 if b16.get("ms") else None,
            "speedup_fp16": f16["ms"] / ms if f16.get("ms") else None,
            "speedup_bf16": b16["ms"] / ms if b16.get("ms") else None,
            "tqai_gbps": r["bytes"] / (ms * 1e-3) / 1e9,
            "tqai_peak_frac": r["bytes"] / (ms * 1e-3) / 1e9 / peak_gbps,
            "fp16_gbps": f16["bytes"] / (f16["ms"] * 1e-3) / 1e9 if f16.get("ms") else None,
            "finite": r["finite"], "sdpa_gqa": f16.get("gqa"),
            "tqai_stream_us": r.get("stream_us"), "tqai_graph_us": r.get("graph_us"),
            "fp16_graph_us": f16["graph_ms"] * 1e3 if f16.get("graph_ms") else None,
        })
        row = rows[-1]
        g_us, f_us = row["tqai_graph_us"], row["fp16_graph_us"]
        ok = g_us is not None and g_us > 0 and f_us is not None
        row["graph_speedup_fp16"] = f_us / g_us if ok else None
        row["graph_gbps"] = r["bytes"] / (g_us * 1e-6) / 1e9 if ok else None
        row["graph_peak_frac"] = row["graph_gbps"] / peak_gbps if ok else None
        s_us = r.get("sustained_us")
        s_us = s_us if s_us is not None and s_us > 0 else None
        fs_ms = f16.get("sustained_ms")
        clk, watts = sampler.window(r.get("sustained_t0", 0), r.get("sustained_t1", 0)) \
            if sampler and s_us else (None, None)
        row.update({
            "tqai_sustained_us": s_us, "tqai_sustained_mhz": clk, "tqai_sustained_w": watts,
            "fp16_sustained_us": fs_ms * 1e3 if fs_ms else None,
            "fp16_sustained_mhz": f16.get("sustained_mhz"), "fp16_sustained_w": f16.get("sustained_w"),
            "sustained_speedup_fp16": fs_ms * 1e3 / s_us if s_us and fs_ms else None,
            "sustained_gbps": r["bytes"] / (s_us * 1e-6) / 1e9 if s_us else None,
        })
        row["sustained_peak_frac"] = (row["sustained_gbps"] / peak_sus_gbps
                                      if row["sustained_gbps"] and peak_sus_gbps else None)
    with open(os.path.join(a.out, "bench_cuda.json"), "w") as f:
        json.dump({"device": dev, "peak_copy_gbps": peak_gbps, "peak_copy_sustained_gbps": peak_sus_gbps,
                   "warm_ms": a.warm_ms, "window_ms": a.window_ms, "tqai": ours,
                   "torch": {f"{k[0]}x{k[1]}/{k[2]}": v for k, v in base.items()},
                   "rows": rows}, f, indent=1)

    def fmt(x, spec):
        return format(x, spec) if x is not None else "n/a"
    print()
    print("Per call, CUDA events, calls queued back to back (both):")
    print(f"decode attention, {a.heads} query heads / {a.kv_heads} KV heads, d={a.dim}; "
          f"peak copy {peak_gbps:.0f} GB/s; SDPA flash GQA via {rows[0]['sdpa_gqa'] if rows else '?'}")
    print(f"{'codes':7} {'batch':>5} {'context':>7} {'tqai us':>9} {'fp16 us':>9} {'bf16 us':>9} "
          f"{'x fp16':>7} {'x bf16':>7} {'tqai GB/s':>9} {'% peak':>6} {'fp16 GB/s':>9}")
    for r in rows:
        print(f"{r['bits']:7} {r['batch']:5d} {r['context']:7d} {r['tqai_us']:9.1f} "
              f"{fmt(r['fp16_us'], '9.1f')} {fmt(r['bf16_us'], '9.1f')} "
              f"{fmt(r['speedup_fp16'], '7.2f')} {fmt(r['speedup_bf16'], '7.2f')} "
              f"{r['tqai_gbps']:9.0f} {100 * r['tqai_peak_frac']:6.1f} {fmt(r['fp16_gbps'], '9.0f')}")
    print()
    print("CUDA-graph replays (no launch gaps; the same for both):")
    print(f"{'codes':7} {'batch':>5} {'context':>7} {'tqai us':>9} {'fp16 us':>9} {'x fp16':>7} "
          f"{'tqai GB/s':>9} {'% peak':>6}")
    for r in rows:
        print(f"{r['bits']:7} {r['batch']:5d} {r['context']:7d} {fmt(r['tqai_graph_us'], '9.1f')} "
              f"{fmt(r['fp16_graph_us'], '9.1f')} {fmt(r['graph_speedup_fp16'], '7.2f')} "
              f"{fmt(r['graph_gbps'], '9.0f')} "
              f"{fmt(100 * r['graph_peak_frac'] if r['graph_peak_frac'] else None, '6.1f')}")
    if a.window_ms > 0:
        print()
        print(f"Sustained: CUDA-graph replays back to back for {a.warm_ms} ms, then the median "
              f"replay of the next {a.window_ms} ms (both; SDPA fp16); SM clock (MHz) and power (W): "
              f"medians of nvidia-smi samples in the window; % of the sustained copy peak "
              f"({fmt(peak_sus_gbps, '.0f')} GB/s):")
        print(f"{'codes':7} {'batch':>5} {'context':>7} {'tqai us':>9} {'MHz':>5} {'W':>4} "
              f"{'fp16 us':>9} {'MHz':>5} {'W':>4} {'x fp16':>7} {'tqai GB/s':>9} {'% peak':>6}")
        for r in rows:
            print(f"{r['bits']:7} {r['batch']:5d} {r['context']:7d} {fmt(r['tqai_sustained_us'], '9.1f')} "
                  f"{fmt(r['tqai_sustained_mhz'], '5.0f')} {fmt(r['tqai_sustained_w'], '4.0f')} "
                  f"{fmt(r['fp16_sustained_us'], '9.1f')} {fmt(r['fp16_sustained_mhz'], '5.0f')} "
                  f"{fmt(r['fp16_sustained_w'], '4.0f')} {fmt(r['sustained_speedup_fp16'], '7.2f')} "
                  f"{fmt(r['sustained_gbps'], '9.0f')} "
                  f"{fmt(100 * r['sustained_peak_frac'] if r['sustained_peak_frac'] else None, '6.1f')}")
    if not all(r["finite"] for r in rows):
        print("WARNING: some tqai outputs were not finite", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Where the CUDA decode kernel's error against the CPU reference comes from.

A model of the kernel's arithmetic in numpy (no GPU needed): random keys and
values shaped like test_cuda's decode cases (keys with a per-token scale,
queries times 1.5, head size 128, 4 query heads), coded K4/V2 with
Lloyd-Max centroids of the standard normal scaled by 1/sqrt(d) (close to the
codec's codebooks at d = 128), attention computed in float64 with the
roundings of the kernel switched on one at a time:

- key centroids in fp16 (the kernel's pair tables hold fp16 centroids; the
  query side is split into two fp16 halves, so it adds almost nothing);
- value centroids in fp16;
- the weights p * value norm in fp16 (the B operand of the value MMA).

It prints test_cuda's measure (largest absolute error over the largest
reference value) for each, and for the kernel as built: all three, with the
centroid tables scaled as the device codec scales them (table_scale: of the
scales 1 + i 2^-16, the one whose largest relative fp16 rounding over the
codebook is smallest; the kernel divides it back out in float).

    python3 bench/cuda/precision_model.py [--seeds 3] [--tokens 40000]
"""
import argparse

import numpy as np

D, G = 128, 4
# Lloyd-Max reconstruction levels of N(0, 1), 16 and 4 levels.
LM4 = [-2.7326, -2.0690, -1.6180, -1.2562, -0.9423, -0.6568, -0.3880, -0.1284,
       0.1284, 0.3880, 0.6568, 0.9423, 1.2562, 1.6180, 2.0690, 2.7326]
LM2 = [-1.5104, -0.4528, 0.4528, 1.5104]


def f16(x):
    return np.asarray(x).astype(np.float16).astype(np.float64)


def f32(x):
    return np.asarray(x).astype(np.float32).astype(np.float64)


def table_scale(c):
    """The device codec's choice of scale for a codebook's fp16 table."""
    pos = np.asarray(c, dtype=np.float32)
    pos = pos[pos > 0]
    s = (1.0 + np.arange(1 << 16, dtype=np.float64) / 65536.0).astype(np.float32)
    x = s[:, None] * pos[None, :]
    r = np.abs(x.astype(np.float16).astype(np.float64) - x) / x
    return float(s[np.argmin(r.max(axis=1))])


def scaled16(c):
    s = table_scale(c)
    return f16(np.float32(s) * f32(c)) / s


def run(seed, tokens):
    rng = np.random.default_rng(seed)
    c4 = np.array(LM4) / np.sqrt(D)
    c2 = np.array(LM2) / np.sqrt(D)

    def quant(x, c):
        return np.searchsorted((c[1:] + c[:-1]) / 2, x)

    k = rng.standard_normal((tokens, D)) * (0.5 + rng.random((tokens, 1)))
    v = rng.standard_normal((tokens, D))
    kn, vn = np.linalg.norm(k, axis=1), np.linalg.norm(v, axis=1)
    ki, vi = quant(k / kn[:, None], c4), quant(v / vn[:, None], c2)
    kn, vn = f16(kn), f16(vn)  # the records store fp16 norms
    q = rng.standard_normal((G, D)) * 1.5
    scale = 1 / np.sqrt(D)

    def attention(kc, vc, weights):
        s = (q * scale) @ (kc[ki] * kn[:, None]).T
        p = np.exp(s - s.max(axis=1, keepdims=True))
        return (weights(p * vn[None, :]) @ vc[vi]) / p.sum(axis=1, keepdims=True)

    def err(a, b):
        return np.abs(a - b).max() / np.abs(b).max()

    exact = lambda w: w
    ref = attention(f32(c4), f32(c2), exact)
    return {
        "all three": err(attention(f16(c4), f16(c2), f16), ref),
        "key centroids": err(attention(f16(c4), f32(c2), exact), ref),
        "value centroids": err(attention(f32(c4), f16(c2), exact), ref),
        "weights": err(attention(f32(c4), f32(c2), f16), ref),
        "all three, scaled tables": err(attention(scaled16(c4), scaled16(c2), f16), ref),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=40000)
    a = ap.parse_args()
    print("tokens %d, K4/V2, d %d, %d query heads: error of each fp16 rounding alone" % (a.tokens, D, G))
    for seed in range(1, a.seeds + 1):
        r = run(seed, a.tokens)
        print("seed %d: " % seed + ", ".join("%s %.2e" % (k, x) for k, x in r.items()))


if __name__ == "__main__":
    main()

"""Benchmark: pooled pixel AUROC of vae_xai.metrics vs sklearn.metrics.roc_auc_score.

Builds one synthetic "MVTec category" of float32 score maps (default 10^8 pixels, i.e.
1526 x 256 x 256), with rectangular anomalies in half of the images and scores that
are float32 normal noise shifted up inside the anomalies (continuous float32 values
have many exact ties at 10^8 samples; ``--levels`` quantizes further, like 8-bit maps).
Times ``pixel_auroc`` (exact) and ``roc_auc_score`` on the same arrays in the same run,
checks that they agree, and prints one JSON object.

Usage::

    python benchmarks/localization_metrics.py                 # 10^8 pixels
    python benchmarks/localization_metrics.py --n_pixels 1e7 --extras
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
import tracemalloc

import jax
import numpy as np
import sklearn
from sklearn.metrics import roc_auc_score

from vae_xai.metrics import aupro, auroc_histogram_error_bound, best_iou, pixel_auroc


def make_data(
    n_pixels: int, side: int, levels: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(N, side, side) float32 scores and bool masks, N = max(1, round(n_pixels / side^2)).

    Generated image by image in float32 so peak memory is the two output arrays.
    """
    n_img = max(1, round(n_pixels / (side * side)))
    rng = np.random.default_rng(seed)
    scores = np.empty((n_img, side, side), np.float32)
    masks = np.zeros((n_img, side, side), bool)
    block = 64
    for a in range(0, n_img, block):
        b = min(n_img, a + block)
        rng.standard_normal(out=scores[a:b], dtype=np.float32)
        for i in range(a, b):
            if i % 2:  # half of the images are anomalous, 1-3 rectangles each
                for _ in range(rng.integers(1, 4)):
                    r, c = rng.integers(0, side - side // 4, 2)
                    h, w = rng.integers(side // 16, side // 4, 2)
                    masks[i, r : r + h, c : c + w] = True
        scores[a:b] += np.float32(1.5) * masks[a:b]
    if levels is not None:
        lo, hi = float(scores.min()), float(scores.max())
        for a in range(0, n_img, block):
            b = min(n_img, a + block)
            part = scores[a:b]
            np.subtract(part, lo, out=part)
            np.multiply(part, (levels - 1) / (hi - lo), out=part)
            np.round(part, out=part)
    return scores, masks


def timed(fn, trace: bool) -> tuple[float, float, float | None]:
    """(result, seconds, traced peak GB of new allocations or None)."""
    if trace:
        tracemalloc.start()
    t0 = time.perf_counter()
    out = fn()
    sec = time.perf_counter() - t0
    peak = None
    if trace:
        peak = tracemalloc.get_traced_memory()[1] / 2**30
        tracemalloc.stop()
    return float(out), sec, peak


def max_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n_pixels", type=float, default=1e8)
    p.add_argument("--side", type=int, default=256)
    p.add_argument("--levels", type=int, default=None, help="quantize scores to N levels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip_sklearn", action="store_true")
    p.add_argument("--extras", action="store_true", help="also time best_iou/aupro/histogram")
    p.add_argument(
        "--trace_memory", action="store_true", help="tracemalloc peaks (slows the timings)"
    )
    args = p.parse_args()

    t0 = time.perf_counter()
    scores, masks = make_data(int(args.n_pixels), args.side, args.levels, args.seed)
    gen_s = time.perf_counter() - t0
    result: dict[str, object] = {
        "n_pixels": int(scores.size),
        "shape": list(scores.shape),
        "anomalous_fraction": float(masks.mean()),
        "score_dtype": str(scores.dtype),
        "levels": args.levels,
        "data_gen_s": round(gen_s, 2),
        "device": str(jax.devices()[0]),
        "jax_platform": jax.default_backend(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "versions": {
            "jax": jax.__version__,
            "sklearn": sklearn.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "rss_gb_after_data": round(max_rss_gb(), 2),
    }

    ours, ours_s, ours_mem = timed(lambda: pixel_auroc(scores, masks), args.trace_memory)
    result["ours"] = {"pixel_auroc": ours, "seconds": round(ours_s, 3)}
    if ours_mem is not None:
        result["ours"]["traced_peak_gb"] = round(ours_mem, 3)
    result["max_rss_gb_after_ours"] = round(max_rss_gb(), 2)

    if not args.skip_sklearn:
        sk, sk_s, sk_mem = timed(
            lambda: roc_auc_score(masks.reshape(-1), scores.reshape(-1)), args.trace_memory
        )
        result["sklearn"] = {"roc_auc_score": sk, "seconds": round(sk_s, 3)}
        if sk_mem is not None:
            result["sklearn"]["traced_peak_gb"] = round(sk_mem, 3)
        result["max_rss_gb_after_sklearn"] = round(max_rss_gb(), 2)
        result["abs_diff"] = abs(ours - sk)
        result["agree_1e-6"] = abs(ours - sk) <= 1e-6
        result["speedup_sklearn_over_ours"] = round(sk_s / ours_s, 2)

    if args.extras:
        extras: dict[str, object] = {}
        for name, fn in [
            ("best_iou", lambda: best_iou(scores, masks)),
            ("aupro_0.3", lambda: aupro(scores, masks)),
            ("pixel_auroc_histogram_2^20", lambda: pixel_auroc(scores, masks, method="histogram")),
            ("histogram_error_bound", lambda: auroc_histogram_error_bound(scores, masks)),
        ]:
            value, sec, _ = timed(fn, False)
            extras[name] = {"value": value, "seconds": round(sec, 3)}
        result["extras"] = extras
        result["max_rss_gb_after_extras"] = round(max_rss_gb(), 2)

    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Per-layer cost of every strided and transposed convolution in our models: XLA vs fast_conv.

For each such layer (shapes from the launchers' configs), times the forward pass, the input
gradient and the kernel gradient of ``lax.conv_general_dilated`` / ``lax.conv_transpose`` and
their autodiff (``xla``) against :func:`vae_xai.fast_conv.fast_strided_conv` /
:func:`vae_xai.fast_conv.fast_conv_transpose` (``fast``); for transposed layers also the two
forward formulations that ``SUBPIXEL_MIN_PIXELS`` chooses between (XLA's input-dilated conv and
the sub-pixel form). Each pass is jitted alone, warmed up and timed ``--repeats`` times,
interleaved over variants; the minimum is reported (milliseconds). Prints one JSON object.

    python benchmarks/conv_layers.py [--models dsprites,mnist,resnet_small,ucsd]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from vae_xai import fast_conv as fc

DN = ("NHWC", "HWIO", "NHWC")
P1, P3 = ((1, 1), (1, 1)), ((3, 3), (3, 3))
# (kind, batch, input size, C_in, C_out, kernel, stride, padding); C = strided conv,
# T = transposed conv. Batches are the launchers' (quickstart/dSprites 64, MNIST 128,
# MVTec small 16, UCSD small 32).
LAYERS = {
    "dsprites": [
        ("C", 64, 64, 1, 32, 4, 2, "SAME"),
        ("C", 64, 32, 32, 32, 4, 2, "SAME"),
        ("C", 64, 16, 32, 64, 4, 2, "SAME"),
        ("C", 64, 8, 64, 64, 4, 2, "SAME"),
        ("T", 64, 4, 64, 64, 4, 2, "SAME"),
        ("T", 64, 8, 64, 32, 4, 2, "SAME"),
        ("T", 64, 16, 32, 32, 4, 2, "SAME"),
        ("T", 64, 32, 32, 1, 4, 2, "SAME"),
    ],
    "mnist": [
        ("C", 128, 28, 1, 64, 4, 2, "SAME"),
        ("C", 128, 14, 64, 128, 4, 2, "SAME"),
        ("T", 128, 7, 128, 64, 4, 2, "SAME"),
        ("T", 128, 14, 64, 1, 4, 2, "SAME"),
    ],
    "resnet_small": [
        ("C", 16, 134, 3, 16, 7, 2, "VALID"),  # stem on the reflect-padded 128 px input
        ("C", 16, 34, 16, 32, 3, 2, "VALID"),  # stride-2 3x3 on reflect-padded maps
        ("C", 16, 32, 16, 32, 1, 2, "VALID"),  # 1x1 projection
        ("C", 16, 18, 32, 64, 3, 2, "VALID"),
        ("C", 16, 10, 64, 128, 3, 2, "VALID"),
        ("T", 16, 4, 128, 64, 4, 2, "SAME"),
        ("T", 16, 8, 64, 32, 4, 2, "SAME"),
        ("T", 16, 16, 32, 16, 4, 2, "SAME"),
        ("T", 16, 32, 16, 8, 4, 2, "SAME"),
        ("T", 16, 64, 8, 8, 4, 2, "SAME"),
    ],
    "ucsd": [
        ("C", 32, 100, 1, 32, 4, 2, P1),
        ("C", 32, 50, 32, 64, 4, 2, P1),
        ("C", 32, 25, 64, 128, 3, 2, "VALID"),
        ("T", 32, 12, 128, 64, 3, 2, "VALID"),
        ("T", 32, 25, 64, 32, 4, 2, "SAME"),
        ("T", 32, 50, 32, 1, 4, 2, "SAME"),
    ],
}


def _ops(kind: str, s: int, pad) -> dict:
    if kind == "C":
        return {
            "xla": lambda x, w: lax.conv_general_dilated(x, w, (s, s), pad, dimension_numbers=DN),
            "fast": lambda x, w: fc.fast_strided_conv(x, w, (s, s), pad),
        }
    return {
        "xla": lambda x, w: lax.conv_transpose(x, w, (s, s), pad),
        "fast": lambda x, w: fc.fast_conv_transpose(x, w, (s, s), pad),
        "subpixel_forward": lambda x, w: fc.conv_transpose(x, w, (s, s), pad),
    }


def layer_passes(kind: str, b: int, n: int, cin: int, cout: int, k: int, s: int, pad) -> dict:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(b, n, n, cin)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(k, k, cin, cout)), jnp.float32)
    ops = _ops(kind, s, pad)
    dy = jnp.asarray(rng.normal(size=ops["xla"](x, w).shape), jnp.float32)
    fns = {}
    for name, f in ops.items():
        fns[f"forward/{name}"] = jax.jit(f)
        if name == "subpixel_forward":
            continue
        fns[f"input_grad/{name}"] = jax.jit(
            lambda x, w, dy, f=f: jax.vjp(lambda x: f(x, w), x)[1](dy)[0]
        )
        fns[f"kernel_grad/{name}"] = jax.jit(
            lambda x, w, dy, f=f: jax.vjp(lambda w: f(x, w), w)[1](dy)[0]
        )
    args = {k_: ((x, w) if k_.startswith("forward") else (x, w, dy)) for k_ in fns}
    for k_, f in fns.items():
        jax.block_until_ready(f(*args[k_]))
    return fns, args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(LAYERS), help=f"comma list of {list(LAYERS)}")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if bad := set(models) - set(LAYERS):
        parser.error(f"unknown models {sorted(bad)}; choose from {list(LAYERS)}")
    out: dict = {}
    for model in models:
        out[model] = []
        for layer in LAYERS[model]:
            fns, fargs = layer_passes(*layer)
            times: dict[str, list[float]] = {k: [] for k in fns}
            for _ in range(args.repeats):
                for k, f in fns.items():
                    t0 = time.perf_counter()
                    jax.block_until_ready(f(*fargs[k]))
                    times[k].append(time.perf_counter() - t0)
            ms = {k: round(1e3 * min(v), 3) for k, v in times.items()}
            passes = ("forward", "input_grad", "kernel_grad")
            total = {
                impl: round(sum(ms[f"{p}/{impl}"] for p in passes), 3) for impl in ("xla", "fast")
            }
            kind, b, n, cin, cout, k, s, pad = layer
            out[model].append(
                {
                    "layer": f"{'conv' if kind == 'C' else 'conv_transpose'} {k}x{k}/{s} "
                    f"{n}px {cin}->{cout} batch {b} pad {pad}",
                    "ms": ms,
                    "all_three_passes_ms": total,
                    "xla_over_fast": round(total["xla"] / total["fast"], 2),
                }
            )
    print(
        json.dumps(
            {
                "benchmark": "conv_layers",
                "device": str(jax.devices()[0].device_kind),
                "platform": jax.default_backend(),
                "cpu": platform.processor() or platform.machine(),
                "jax": jax.__version__,
                "subpixel_min_pixels": fc.SUBPIXEL_MIN_PIXELS,
                "repeats": args.repeats,
                "models": out,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()

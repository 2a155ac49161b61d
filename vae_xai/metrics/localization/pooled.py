"""The pooled-pixel engine behind every localization metric: validated inputs, one sort (or a
histogram) of the scores, and the per-distinct-score counts the metrics are computed from.

* :func:`auroc_histogram_error_bound` -- the guaranteed error of ``method="histogram"``.

Algorithm (``method="exact"``, the default). Every metric is a function of the pooled
counts per *distinct score value*: for each distinct value v, how many anomalous and how
many normal pixels score exactly v (plus, for AUPRO, the summed per-region weights). We get
them from one sort:

* float32 scores are mapped to order-preserving uint32 keys (IEEE bit trick, -0.0 folded
  onto +0.0 so it ties with 0.0 as in sklearn) and packed with the pixel's code (0 =
  normal, 1 = anomalous, or the AUPRO region id) into one uint64 ``key << 32 | code``;
  one in-place ``np.sort`` of that array orders pixels by score (numpy's vectorized
  uint64 sort; a key-only sort is faster than ``argsort`` plus gathers);
* the sorted array is walked from the top score down in chunks of ``chunk_size``; each
  chunk is reduced to per-distinct-value counts (``np.add.reduceat`` over runs of equal
  keys), a run that crosses a chunk edge is merged with the next chunk's first run;
* the metrics are accumulated from those counts with int64 cumulative counts (exact for
  any realistic n: the AUROC numerator ``2U`` is summed as an exact integer and divided
  once, so the AUROC is the correctly rounded value of the exact rational), and the
  AUPRO integral in float64.

Scores in float64 that are not exactly representable in float32 fall back to an
``argsort`` of the float64 values (exact as well, more memory). ``backend="jax"`` (the
default for JAX arrays that live on a GPU/TPU) does the sort on the device with
``jax.lax.sort`` (uint32 key, code as payload), then walks the result on the host; on
CPU numpy's sort is faster than XLA's, so numpy is the default there.

Memory (n pixels, exact method): the packed keys, 8 bytes/pixel, plus O(chunk_size)
temporaries (measured ~160 bytes x chunk_size, ~80 MB at the default 2**19), plus the inputs
(float32 scores are used in place; non-bool masks are converted to a 1 byte/pixel bool
copy; JAX arrays are copied to the host, 4 bytes/pixel). One MVTec category at 256x256
(~10^8 pixels) thus needs ~0.9 GB beyond its inputs (sklearn's roc_auc_score: ~6.5 GB).
:func:`aupro` adds the int32 connected-component labels and ndimage's work space (~13
bytes/pixel in all, measured); :func:`roc_curve` and :func:`pro_curve`
return O(#distinct scores) arrays (up to 24 bytes/pixel for continuous scores), the
scalar metrics never materialize them. The float64 fallback uses ~20 bytes/pixel.

``method="histogram"`` avoids the sort: scores are binned into ``n_bins`` equal-width bins
between their min and max (O(chunk_size + n_bins) memory beyond the inputs, two linear
passes). Equal scores always share a bin and bins are ordered, so the histogram is the
exact ROC evaluated at a subset of thresholds; the only error comes from anomalous/normal
pairs inside one bin, which the exact AUROC counts by their order and the histogram
counts as ties. Hence ``|AUROC_hist - AUROC_exact| <= 0.5 * sum_b pos_b * neg_b /
(P * N)`` (:func:`auroc_histogram_error_bound`, computable from the histogram itself).
The histogram ``best_iou`` is a lower bound of the exact one (max over fewer thresholds);
the histogram ``aupro`` error is at most ``sum_b dFPR_b * dPRO_b / max_fpr`` over the bins
with FPR below ``max_fpr`` (a monotone curve inside each bin's box).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

Method = Literal["exact", "histogram"]
Backend = Literal["auto", "numpy", "jax"]

DEFAULT_CHUNK_SIZE = 1 << 19
DEFAULT_N_BINS = 1 << 20

_SIGN = np.uint32(0x80000000)
_LOW32 = np.uint64(0xFFFFFFFF)
_SHIFT = np.uint64(32)


# ----------------------------------------------------------------------------- inputs


class _Pixels(NamedTuple):
    """Validated, flattened inputs.

    scores: (n,) float32 (float64 if not exactly representable in float32), host numpy or,
        for the JAX backend, a device array. codes: (n,) bool (0 normal / 1 anomalous) or
        int32 region ids (AUPRO; 0 normal). weights: (R+1,) float64 per-code PRO weight
        (AUPRO only). n_pos / n_neg: numbers of anomalous / normal entries.
    """

    scores: np.ndarray | jax.Array
    codes: np.ndarray
    n_pos: int
    n_neg: int
    weights: np.ndarray | None


def _chunks(n: int, chunk: int) -> Iterator[tuple[int, int]]:
    for a in range(0, n, chunk):
        yield a, min(n, a + chunk)


def _check_chunk_size(chunk_size: int) -> int:
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return int(chunk_size)


def _on_accelerator(x: object) -> bool:
    if not isinstance(x, jax.Array):
        return False
    return any(d.platform != "cpu" for d in x.devices())


def _host_scores(scores: ArrayLike, name: str, chunk: int) -> np.ndarray:
    """Flatten scores to a contiguous (n,) float32 array (float64 if float32 would merge
    distinct values), rejecting NaN/inf and non-real dtypes."""
    arr = np.asarray(scores)
    dtype = arr.dtype
    if dtype == np.float32:
        flat = np.ascontiguousarray(arr).reshape(-1)
    elif jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize <= 4:
        flat = arr.reshape(-1).astype(np.float32)  # float16 / bfloat16: exact in float32
    elif dtype == np.bool_ or (
        np.issubdtype(dtype, np.number) and not np.issubdtype(dtype, np.complexfloating)
    ):
        flat = _narrow_to_float32(arr.reshape(-1), chunk)
    else:
        raise ValueError(f"{name} must be real numbers, got dtype {dtype}")
    for a, b in _chunks(flat.size, chunk):
        part = flat[a:b]
        if not np.isfinite(part).all():
            n_nan = int(np.isnan(flat).sum())
            n_inf = int(np.isinf(flat).sum())
            raise ValueError(f"{name} must be finite: found {n_nan} NaN and {n_inf} inf value(s)")
    return flat


def _narrow_to_float32(flat: np.ndarray, chunk: int) -> np.ndarray:
    """float32 copy if every value is exactly representable, else a float64 copy."""
    out32 = np.empty(flat.size, np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        for a, b in _chunks(flat.size, chunk):
            part = flat[a:b].astype(np.float64)
            out32[a:b] = part
            if not np.array_equal(out32[a:b], part, equal_nan=True):
                return flat.astype(np.float64)
    return out32


def _flat_mask(masks: ArrayLike, name: str, chunk: int) -> np.ndarray:
    """(n,) bool view/copy of a binary mask; values other than 0/1 raise."""
    arr = np.asarray(masks)
    if arr.dtype == np.bool_:
        return arr.reshape(-1)
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        if not jnp.issubdtype(arr.dtype, jnp.floating):
            raise ValueError(f"{name} must be bool or numeric 0/1, got dtype {arr.dtype}")
        arr = arr.astype(np.float32)
    flat = arr.reshape(-1)
    for a, b in _chunks(flat.size, chunk):
        part = flat[a:b]
        ok = (part == 0) | (part == 1)
        if not ok.all():
            bad = np.unique(part[~ok])[:5].tolist()
            raise ValueError(
                f"{name} must be binary with values in {{0, 1}}, found {bad}"
                " (binarize e.g. 0/255 masks with `masks > 0`)"
            )
    return flat != 0


def _prepare(
    scores: ArrayLike,
    masks: ArrayLike,
    *,
    names: tuple[str, str],
    keep_on_device: bool,
    chunk: int,
) -> tuple[_Pixels, tuple[int, ...]]:
    """Validate shapes/dtypes/values and flatten; returns the pixels and the input shape."""
    s_shape, m_shape = tuple(np.shape(scores)), tuple(np.shape(masks))
    if s_shape != m_shape:
        raise ValueError(f"shape mismatch: {names[0]} {s_shape} vs {names[1]} {m_shape}")
    if int(np.prod(s_shape)) == 0:
        raise ValueError(f"{names[0]} is empty (shape {s_shape})")
    codes = _flat_mask(masks, names[1], chunk)
    if keep_on_device and isinstance(scores, jax.Array) and scores.dtype != jnp.float64:
        if not jnp.issubdtype(scores.dtype, jnp.floating):
            flat = jnp.asarray(_host_scores(scores, names[0], chunk))
        else:
            flat = scores.reshape(-1).astype(jnp.float32)
            if not bool(jnp.isfinite(flat).all()):
                raise ValueError(f"{names[0]} must be finite: found NaN or inf value(s)")
    else:
        flat = _host_scores(scores, names[0], chunk)
    n_pos = int(np.count_nonzero(codes))
    return _Pixels(flat, codes, n_pos, codes.size - n_pos, None), s_shape


def _require_both(px: _Pixels, metric: str, names: tuple[str, str], unit: str) -> None:
    if px.n_pos == 0:
        raise ValueError(f"{metric} undefined: {names[1]} contain no anomalous {unit}")
    if px.n_neg == 0:
        raise ValueError(f"{metric} undefined: {names[1]} contain no normal {unit}")


def _check_method(method: str, n_bins: int, backend: str) -> None:
    if method not in ("exact", "histogram"):
        raise ValueError(f"method must be 'exact' or 'histogram', got {method!r}")
    if method == "histogram" and int(n_bins) < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if backend not in ("auto", "numpy", "jax"):
        raise ValueError(f"backend must be 'auto', 'numpy' or 'jax', got {backend!r}")


# -------------------------------------------------------------------- sorted sources


def _sortable_u32(bits: np.ndarray) -> np.ndarray:
    """Map float32 bit patterns (uint32) to uint32 keys with the same order as the floats.

    Non-negative floats get the sign bit set, negative ones are bit-inverted; -0.0 is
    first folded onto +0.0 so that the two compare equal, as floats do.
    """
    bits = np.where(bits == _SIGN, np.uint32(0), bits)
    return np.where(bits & _SIGN, ~bits, bits | _SIGN)


def _float_from_sortable(keys: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_sortable_u32`, returned as float64 (exact)."""
    k = keys.astype(np.uint32)
    bits = np.where(k & _SIGN, k & ~_SIGN, ~k)
    return bits.view(np.float32).astype(np.float64)


@jax.jit
def _device_sort(scores: jax.Array, codes: jax.Array) -> tuple[jax.Array, jax.Array]:
    """On-device key/payload sort: scores (n,) float32 -> sortable uint32 keys, ascending,
    with codes (n,) carried along (their order inside a tie does not matter)."""
    x = jnp.where(scores == 0, jnp.zeros_like(scores), scores)
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    sign = jnp.uint32(0x80000000)
    keys = jnp.where((bits & sign) != 0, ~bits, bits | sign)
    return tuple(jax.lax.sort((keys, codes), num_keys=1))


class _Sorted(NamedTuple):
    """Pixels sorted by score, ascending.

    kind "packed": keys is (n,) uint64 ``sortable_u32(score) << 32 | code``, codes None.
    kind "u32": keys is (n,) uint32 sortable score keys, codes (n,) aligned.
    kind "f64": keys is (n,) float64 scores, codes (n,) aligned.
    """

    keys: np.ndarray
    codes: np.ndarray | None
    kind: str

    def chunk(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """(score keys, codes) of sorted positions [a, b)."""
        if self.kind == "packed":
            k = self.keys[a:b]
            return k >> _SHIFT, k & _LOW32
        return self.keys[a:b], self.codes[a:b]

    def thresholds(self, keys: np.ndarray) -> np.ndarray:
        if self.kind == "f64":
            return keys.astype(np.float64)
        return _float_from_sortable(keys)


def _sort_pixels(px: _Pixels, backend: str, chunk: int) -> _Sorted:
    codes = px.codes
    use_jax = backend == "jax" or (backend == "auto" and _on_accelerator(px.scores))
    if use_jax and px.scores.dtype == np.float32:
        dev_codes = jnp.asarray(codes.astype(np.uint8 if codes.dtype == np.bool_ else np.uint32))
        keys, sorted_codes = _device_sort(jnp.asarray(px.scores), dev_codes)
        return _Sorted(np.asarray(keys), np.asarray(sorted_codes), "u32")
    scores = np.asarray(px.scores)
    if scores.dtype == np.float64:
        order = np.argsort(scores)
        return _Sorted(scores[order], codes[order], "f64")
    n = scores.size
    packed = np.empty(n, np.uint64)
    for a, b in _chunks(n, chunk):
        k = _sortable_u32(scores[a:b].view(np.uint32)).astype(np.uint64)
        k <<= _SHIFT
        k |= codes[a:b].astype(np.uint64)
        packed[a:b] = k
    packed.sort()
    return _Sorted(packed, None, "packed")


# ---------------------------------------------------------------------- group streams


class _Groups(NamedTuple):
    """Per-distinct-score counts, in *descending* score order (one batch of the stream).

    thresholds: (g,) float64 distinct score values (bin lower edges for the histogram).
    n_pos / n_neg: (g,) int64 anomalous / normal pixels scoring exactly that value.
    w_pos: (g,) float64 summed AUPRO weights of those anomalous pixels, or None.
    """

    thresholds: np.ndarray
    n_pos: np.ndarray
    n_neg: np.ndarray
    w_pos: np.ndarray | None


def _exact_groups(px: _Pixels, backend: str, chunk: int) -> Iterator[_Groups]:
    """Stream the per-distinct-score counts from the top score down, O(chunk) memory."""
    src = _sort_pixels(px, backend, chunk)
    n = src.keys.size
    weights = px.weights
    carry: tuple[np.ndarray, ...] | None = None  # last run; may continue in the next chunk
    for a_rev, b_rev in _chunks(n, chunk):
        a, b = n - b_rev, n - a_rev  # walk the ascending array from its end
        vk, codes = src.chunk(a, b)
        m = vk.size
        new_run = np.empty(m, np.bool_)
        new_run[0] = True
        np.not_equal(vk[1:], vk[:-1], out=new_run[1:])
        starts = np.flatnonzero(new_run)
        keys = vk[starts][::-1]
        size = np.diff(starts, append=m)[::-1]
        pos = np.add.reduceat(codes != 0, starts, dtype=np.int64)[::-1]
        neg = size - pos
        parts = [keys, pos, neg]
        if weights is not None:
            parts.append(np.add.reduceat(weights[codes], starts)[::-1])
        if carry is not None:
            if carry[0][0] == keys[0]:
                for p, c in zip(parts[1:], carry[1:], strict=True):
                    p[0] += c[0]
            else:
                parts = [np.concatenate([c, p]) for c, p in zip(carry, parts, strict=True)]
        carry = tuple(p[-1:] for p in parts)
        if parts[0].size > 1:
            yield _make_groups(src, [p[:-1] for p in parts])
    if carry is not None:
        yield _make_groups(src, list(carry))


def _make_groups(src: _Sorted, parts: list[np.ndarray]) -> _Groups:
    w = parts[3] if len(parts) > 3 else None
    return _Groups(src.thresholds(parts[0]), parts[1].astype(np.int64), parts[2], w)


def _histogram_groups(px: _Pixels, n_bins: int, chunk: int) -> Iterator[_Groups]:
    """Equal-width histogram of the scores between min and max, as one descending batch
    (only non-empty bins). Equal scores share a bin and the binning is monotone."""
    scores = np.asarray(px.scores)
    n = scores.size
    lo, hi = np.inf, -np.inf
    for a, b in _chunks(n, chunk):
        lo = min(lo, float(scores[a:b].min()))
        hi = max(hi, float(scores[a:b].max()))
    scale = n_bins / (hi - lo) if hi > lo else 0.0
    all_cnt = np.zeros(n_bins, np.int64)
    pos_cnt = np.zeros(n_bins, np.int64)
    w_pos = np.zeros(n_bins, np.float64) if px.weights is not None else None
    for a, b in _chunks(n, chunk):
        idx = np.floor((scores[a:b].astype(np.float64) - lo) * scale).astype(np.int64)
        np.clip(idx, 0, n_bins - 1, out=idx)
        codes = px.codes[a:b]
        is_pos = codes != 0
        all_cnt += np.bincount(idx, minlength=n_bins)
        pos_idx = idx[is_pos]
        pos_cnt += np.bincount(pos_idx, minlength=n_bins)
        if w_pos is not None:
            w_pos += np.bincount(pos_idx, weights=px.weights[codes[is_pos]], minlength=n_bins)
    keep = np.flatnonzero(all_cnt)[::-1]
    thresholds = lo + keep * ((hi - lo) / n_bins)
    yield _Groups(
        thresholds,
        pos_cnt[keep],
        all_cnt[keep] - pos_cnt[keep],
        None if w_pos is None else w_pos[keep],
    )


def _groups(px: _Pixels, method: str, n_bins: int, backend: str, chunk: int) -> Iterator[_Groups]:
    if method == "histogram":
        return _histogram_groups(px, int(n_bins), chunk)
    return _exact_groups(px, backend, chunk)


def _sweep(groups: Iterator[_Groups]) -> Iterator[tuple[_Groups, np.ndarray, np.ndarray]]:
    """Add the inclusive cumulative counts: TP and FP of ``scores >= threshold``."""
    tp0 = fp0 = 0
    for g in groups:
        tp = tp0 + np.cumsum(g.n_pos)
        fp = fp0 + np.cumsum(g.n_neg)
        yield g, tp, fp
        tp0, fp0 = int(tp[-1]), int(fp[-1])


def _auroc_from_groups(groups: Iterator[_Groups], n_pos: int, n_neg: int) -> float:
    """Mann-Whitney: AUC = sum over normal pixels of (#anomalous above + 0.5 #tied) / (P N),
    accumulated as the exact integer 2U and divided once (correctly rounded)."""
    two_u = 0
    for g, tp, _ in _sweep(groups):
        above = tp - g.n_pos  # anomalous pixels strictly above this score
        two_u += int(np.dot(g.n_neg, 2 * above + g.n_pos))
    return two_u / (2 * n_pos * n_neg)

"""The one epoch-batching helper (data_pipelines.batching) and its thin wrappers."""

from __future__ import annotations

import numpy as np
import pytest

from data_pipelines import batching, mnist
from data_pipelines import mvtec_ad as mv
from vae_xai.experiments.one_class import epoch_batch_fn


def reference_batch(n, batch_size, step, seed, *, sort=False):
    """Written out independently: epoch permutation from default_rng([seed, epoch])."""
    per_epoch = n // batch_size
    epoch, i = divmod(step, per_epoch)
    idx = np.random.default_rng([seed, epoch]).permutation(n)[i * batch_size : (i + 1) * batch_size]
    return np.sort(idx) if sort else idx


@pytest.mark.parametrize("sort", [False, True])
def test_epoch_batch_fn_matches_the_written_out_permutation(sort):
    data = {"x": np.arange(10) * 10, "y": np.arange(10)}
    fn = batching.epoch_batch_fn(data, 3, seed=7, sort_within_batch=sort)
    for step in (0, 1, 2, 3, 5, 11, 4):  # any order: a function of the step only
        want = reference_batch(10, 3, step, 7, sort=sort)
        got = fn(step)
        np.testing.assert_array_equal(got["y"], want)
        np.testing.assert_array_equal(got["x"], want * 10)  # keys stay aligned
    epoch0 = np.concatenate([fn(s)["y"] for s in range(3)])
    assert len(set(epoch0.tolist())) == 9  # disjoint batches, the remainder dropped


def test_array_input_and_no_shuffle_and_keep_remainder():
    images = np.arange(7, dtype=np.float32)[:, None]
    fn = batching.epoch_batch_fn(images, 3, shuffle=False, drop_remainder=False)
    assert [fn(s)[:, 0].tolist() for s in range(4)] == [[0, 1, 2], [3, 4, 5], [6], [0, 1, 2]]
    assert batching.steps_per_epoch(7, 3) == 2
    assert batching.steps_per_epoch(7, 3, drop_remainder=False) == 3


def test_errors_name_the_number_of_examples():
    msg = r"batch_size must be in 1\.\.10 \(the number of examples\)"
    with pytest.raises(ValueError, match=msg):
        batching.epoch_batch_fn(np.zeros((10, 2)), 11)
    with pytest.raises(ValueError, match="positive integer"):
        batching.epoch_batch_fn(np.zeros((10, 2)), 0)
    with pytest.raises(ValueError, match=r"no examples to batch \(N=0\)"):
        batching.epoch_batch_fn(np.zeros((0, 2)), 4)
    with pytest.raises(ValueError, match="different leading"):
        batching.epoch_batch_fn({"a": np.zeros(3), "b": np.zeros(4)}, 2)
    with pytest.raises(ValueError, match="step must be >= 0"):
        batching.epoch_batch_fn(np.zeros(3), 1)(-1)


def test_wrappers_keep_their_batches():
    images = np.random.default_rng(0).random((23, 2, 2, 1)).astype(np.float32)
    for step in (0, 3, 7, 12):
        # data_pipelines.mnist.batch_at: permutation order (as before the helper)
        np.testing.assert_array_equal(
            mnist.batch_at(images, 5, step, seed=2), images[reference_batch(23, 5, step, 2)]
        )
        # vae_xai.experiments.one_class.epoch_batch_fn: the same examples in index order (as before)
        np.testing.assert_array_equal(
            epoch_batch_fn(images, 5, seed=2)(step)["image"],
            images[reference_batch(23, 5, step, 2, sort=True)],
        )
    with pytest.raises(ValueError, match="the number of examples"):
        epoch_batch_fn(images, 24)


def test_iterate_batches_is_the_step_function_in_order():
    data = {"label": np.arange(10)}
    got = [b["label"] for b in mv.iterate_batches(data, 4, seed=1, epochs=2)]
    want = [reference_batch(10, 4, s, 1) for s in range(4)]
    assert len(got) == 4
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


def test_rows_read_one_process_share_of_the_same_batch():
    """``batch_fn(step, rows=...)``: what one process of several reads (vae_xai.train.fit asks
    a batch_fn with ``global_batch_size`` for its rows); the rows of the full batch."""
    data = {"x": np.arange(20) * 10, "y": np.arange(20)}
    fn = batching.epoch_batch_fn(data, 8, seed=3, sort_within_batch=True)
    assert fn.global_batch_size == 8
    for step in (0, 1, 4):
        full = fn(step)
        halves = [fn(step, rows=slice(0, 4)), fn(step, rows=slice(4, 8))]
        want = reference_batch(20, 8, step, 3, sort=True)
        np.testing.assert_array_equal(np.concatenate([h["y"] for h in halves]), want)
        np.testing.assert_array_equal(halves[1]["x"], full["x"][4:])

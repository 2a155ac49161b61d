"""fit(steps_per_dispatch=k): k steps per jitted call (lax.scan) == k single steps."""

from __future__ import annotations

import json

import jax
import numpy as np
import optax
import pytest

from vae_xai import train
from vae_xai.models.conv_vae import ConvVAE

MODEL = ConvVAE(input_shape=(8, 8, 1), channels=(4,), hidden=8, latent_dim=2)
DATA = (np.random.default_rng(0).random((40, 8, 8, 1)) > 0.5).astype(np.float32)


def _batch(step: int) -> dict[str, np.ndarray]:
    i = (step * 4) % 40
    return {"image": DATA[i : i + 4]}


def _fit(workdir, num_steps, k, checkpoint_every=3):
    optimizer = optax.adam(1e-2)
    state = train.init_state(MODEL, optimizer, (8, 8, 1), key=jax.random.key(0))
    return train.fit(
        state,
        train.vae_update_fn(MODEL, optimizer),
        _batch,
        workdir=workdir,
        num_steps=num_steps,
        checkpoint_every=checkpoint_every,
        log_every=1,
        progress=False,
        steps_per_dispatch=k,
    )


def _log(workdir):
    return [json.loads(ln) for ln in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_blocks_equal_single_steps_and_resume_off_the_grid(tmp_path):
    single = _fit(tmp_path / "k1", 7, 1)
    block = _fit(tmp_path / "k3", 7, 3)  # blocks 0-2, 3-5, then one single step 6
    assert int(block.step) == 7
    for a, b in zip(jax.tree.leaves(single.params), jax.tree.leaves(block.params), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
    log1, log3 = _log(tmp_path / "k1"), _log(tmp_path / "k3")
    assert [r["step"] for r in log3] == list(range(1, 8))  # every step logged
    for r1, r3 in zip(log1, log3, strict=True):
        for key in r1:
            np.testing.assert_allclose(r3[key], r1[key], rtol=1e-5, err_msg=key)
    # continue the k=3 run to 11 (checkpoint at 7, off the 3-grid): single steps 7, 8, then a
    # block 9-11; equal to a single-step run of 11
    cont = _fit(tmp_path / "k3", 11, 3)
    ref = _fit(tmp_path / "k1_11", 11, 1)
    for a, b in zip(jax.tree.leaves(ref.params), jax.tree.leaves(cont.params), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_blocks_never_straddle_a_checkpoint(tmp_path):
    """checkpoint_every=4 with blocks of 3: steps 0-2 a block, 3 alone (a save at 4), 4-6 a
    block, 7 alone (a save at 8); the same parameters as single steps, saved at 4 and 8."""
    single = _fit(tmp_path / "k1", 8, 1, checkpoint_every=4)
    block = _fit(tmp_path / "k3", 8, 3, checkpoint_every=4)
    for a, b in zip(jax.tree.leaves(single.params), jax.tree.leaves(block.params), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
    with train.checkpoint_manager(tmp_path / "k3") as manager:
        assert sorted(manager.all_steps()) == [4, 8]


def test_default_steps_per_dispatch_and_bad_values(tmp_path, monkeypatch):
    """``None`` means the default a launcher's --steps_per_dispatch sets."""
    calls = []
    real = train.jit_steps
    # (fit finds jit_steps in train.loop, and the default lives in train.schedule)
    spy = lambda *a, **k: calls.append(a[3]) or real(*a, **k)  # noqa: E731
    monkeypatch.setattr(train.loop, "jit_steps", spy)
    monkeypatch.setattr(train.schedule, "_DEFAULT_STEPS_PER_DISPATCH", 1)
    train.set_default_steps_per_dispatch(2)
    _fit(tmp_path / "default", 2, None)
    assert calls == [2]
    with pytest.raises(ValueError, match="steps_per_dispatch must be a positive"):
        train.set_default_steps_per_dispatch(0)
    with pytest.raises(ValueError, match="steps_per_dispatch must be a positive"):
        _fit(tmp_path / "bad", 8, 0)

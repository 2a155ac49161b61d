"""Seed ensembles (vae_xai.ensemble): each member equals the separate run of its seed."""

from __future__ import annotations

import json

import jax
import numpy as np
import optax
import pytest

from vae_xai import ensemble, train
from vae_xai.models.conv_vae import ConvVAE

MODEL = ConvVAE(input_shape=(8, 8, 1), channels=(4,), hidden=8, latent_dim=2)
SEEDS = (0, 1, 5)


def _batch_fn(seed: int):
    data = (np.random.default_rng(seed).random((32, 8, 8, 1)) > 0.5).astype(np.float32)
    return lambda step: {"image": data[(step * 4) % 32 : (step * 4) % 32 + 4]}


def _state(seed: int, optimizer):
    return train.init_state(MODEL, optimizer, (8, 8, 1), key=jax.random.key(seed))


def _separate(tmp_path, seed: int, num_steps: int):
    optimizer = optax.adam(1e-2)
    return train.fit(
        _state(seed, optimizer),
        train.vae_update_fn(MODEL, optimizer),
        _batch_fn(seed),
        workdir=tmp_path / f"separate_{seed}",
        num_steps=num_steps,
        seed=seed,
        checkpoint_every=2,
        log_every=1,
        progress=False,
    )


def _ensemble(tmp_path, num_steps: int):
    optimizer = optax.adam(1e-2)
    return ensemble.fit_ensemble(
        [_state(s, optimizer) for s in SEEDS],
        train.vae_update_fn(MODEL, optimizer),
        [_batch_fn(s) for s in SEEDS],
        seeds=SEEDS,
        workdir=tmp_path / "ensemble",
        member_workdirs=[tmp_path / f"seed_{s}" for s in SEEDS],
        num_steps=num_steps,
        checkpoint_every=2,
        log_every=1,
        progress=False,
    )


def _close(a, b, atol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=atol)


@pytest.mark.slow
def test_members_equal_separate_runs_resume_and_export(tmp_path):
    members = _ensemble(tmp_path, 4)
    refs = {s: _separate(tmp_path, s, 6) for s in SEEDS}  # 6 steps, checkpoints at 2, 4, 6
    # resume the ensemble from its step-4 checkpoint to 6
    members = _ensemble(tmp_path, 6)
    for s, m in zip(SEEDS, members, strict=True):
        assert int(m.step) == 6
        _close(m.params, refs[s].params)
        _close(m.opt_state, refs[s].opt_state)
        # the member's exported checkpoint restores like a separate run's
        restored = train.restore_params(tmp_path / f"seed_{s}", _state(s, optax.adam(1e-2)))
        _close(restored.params, refs[s].params)
    # metrics: one line per step, per member; the members' losses are the separate runs'
    log = [
        json.loads(ln) for ln in (tmp_path / "ensemble" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    ref_log = [
        json.loads(ln)
        for ln in (tmp_path / "separate_5" / "metrics.jsonl").read_text().splitlines()
    ]
    per = [ensemble.per_member(r, SEEDS)[5] for r in log]
    for mine, theirs in zip(per, ref_log, strict=True):
        assert mine.keys() == theirs.keys() - {"step"}
        for k in mine:
            np.testing.assert_allclose(mine[k], theirs[k], rtol=1e-5)


def test_bad_members_are_named():
    optimizer = optax.adam(1e-2)
    with pytest.raises(ValueError, match="distinct"):
        ensemble.ensemble_update_fn(train.vae_update_fn(MODEL, optimizer), [1, 1])
    with pytest.raises(ValueError, match="at least one"):
        ensemble.stack([])
    with pytest.raises(ValueError, match="one state, batch_fn and seed per member"):
        ensemble.fit_ensemble(
            [_state(0, optimizer)], None, [], seeds=[0], workdir="unused", num_steps=1
        )


@pytest.mark.e2e
@pytest.mark.slow
def test_dsprites_launcher_ensemble_equals_separate_seeds(tmp_path):
    """--ensemble in the Table 3 launcher (AD-FactorVAE: L_AD's second-order gradient under
    vmap): each seed's checkpoint equals the separately trained seed's."""
    from experiments.configs.dsprites_disentanglement import get_config
    from vae_xai import workdir as workdir_lib
    from vae_xai.experiments import dsprites_disentanglement as dd

    config = get_config("ad_factorvae,smoke")
    config.train.checkpoint_every = 1
    dd.train_and_evaluate(config, tmp_path / "ens", seeds=[0, 1], skip_eval=True, ensemble=True)
    dd.train_and_evaluate(config, tmp_path / "sep", seeds=[0, 1], skip_eval=True)
    for seed in (0, 1):
        _, template, _, _ = dd.build(config, seed)
        a = train.restore_params(tmp_path / "ens" / f"seed_{seed}", template)
        b = train.restore_params(tmp_path / "sep" / f"seed_{seed}", template)
        assert int(a.step) == int(b.step) == config.train.num_steps
        # vmapped convs round differently; Adam turns that into differences of ~1e-5 in a
        # handful of weights whose gradient is near zero (2 of 131,072 seen)
        _close(a.params, b.params, atol=5e-5)
    # separately trained seeds are not taken over by an ensemble
    with pytest.raises(workdir_lib.WorkdirError, match="trained separately"):
        dd.train_and_evaluate(config, tmp_path / "sep", seeds=[0, 1], skip_eval=True, ensemble=True)


def test_ensemble_batch_fn_passes_rows_when_every_member_reads_rows():
    from data_pipelines import batching

    datas = [np.arange(24, dtype=np.float32).reshape(12, 2) + 100 * s for s in range(3)]
    fns = [batching.epoch_batch_fn({"x": d}, 4, seed=s) for s, d in enumerate(datas)]
    both = ensemble.ensemble_batch_fn(fns)
    assert both.global_batch_size == 4
    full = both(2)["x"]
    assert full.shape == (4, 3, 2)  # (B, S, ...): the batch axis is what the mesh shards
    np.testing.assert_array_equal(both(2, rows=slice(1, 3))["x"], full[1:3])
    for s, fn in enumerate(fns):
        np.testing.assert_array_equal(full[:, s], fn(2)["x"])
    # a member that cannot read rows: the ensemble reads whole batches (fit slices them)
    assert not hasattr(ensemble.ensemble_batch_fn([fns[0], _batch_fn(0)]), "global_batch_size")

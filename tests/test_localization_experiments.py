"""Anomaly-localization library and launchers: evaluation helpers on hand-made cases, and the
MVTec-AD / UCSD Ped1 experiments end to end on tiny generated fixtures (train, resume,
results.json, figures, errors)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from experiments.configs import mvtec_localization as mvtec_cfg
from experiments.configs import ucsd_localization as ucsd_cfg
from tests.fixtures_anomaly import make_mvtec_category, make_ucsd_ped1
from tests.snapshots import snapshot
from vae_xai import localization as loc
from vae_xai import workdir as wd
from vae_xai.experiments import mvtec_localization, ucsd_localization
from vae_xai.experiments.one_class import epoch_batch_fn
from vae_xai.localization import vae_maps
from vae_xai.validation import ConfigError
from vae_xai.workdir import WorkdirError, config_dict

ROOT = pathlib.Path(__file__).resolve().parents[1]
METRIC_KEYS = {"pixel_auroc", "best_iou", "aupro", "image_auroc", "n_images", "n_anomalous"}


# ----------------------------------------------------------------------------- library


def test_localization_metrics_and_per_defect_subsets():
    rng = np.random.default_rng(0)
    masks = np.zeros((5, 6, 6), np.uint8)
    masks[2, 1:3, 1:3] = 1
    masks[3, 3:, 3:] = 1
    masks[4, 0, :] = 1
    labels = np.array([0, 0, 1, 1, 1])
    groups = np.array(["good", "good", "crack", "crack", "hole"])
    maps = rng.random(masks.shape).astype(np.float32)
    maps[masks == 1] += 0.5
    res = loc.evaluate_maps({"m": maps}, masks, labels, groups)["m"]
    overall = res["overall"]
    assert set(overall) == METRIC_KEYS
    assert overall["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()))
    assert overall["image_auroc"] == pytest.approx(
        roc_auc_score(labels, maps.reshape(5, -1).max(1))
    )
    # a defect type's subset: its own images plus all normal images
    assert set(res["per_defect"]) == {"crack", "hole"}
    sel = np.array([True, True, False, False, True])
    hole = res["per_defect"]["hole"]
    assert hole["n_images"] == 3 and hole["n_anomalous"] == 1
    assert hole["pixel_auroc"] == pytest.approx(
        roc_auc_score(masks[sel].ravel(), maps[sel].ravel())
    )
    # undefined metrics are None: no anomalous pixels / a single image class
    none = loc.localization_metrics(maps[:2], masks[:2], labels[:2])
    assert none["pixel_auroc"] is None and none["best_iou"] is None and none["image_auroc"] is None
    with pytest.raises(ValueError, match="NaN"):
        loc.localization_metrics(np.full_like(maps, np.nan), masks, labels)


def test_epoch_batch_fn_is_deterministic_and_covers_epochs():
    images = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    fn = epoch_batch_fn(images, 3, seed=1)
    again = epoch_batch_fn(images, 3, seed=1)
    for step in (0, 4, 2, 7):
        np.testing.assert_array_equal(fn(step)["image"], again(step)["image"])
    epoch0 = np.concatenate([fn(s)["image"].ravel() for s in range(3)])
    assert len(set(epoch0.tolist())) == 9  # one epoch = 3 disjoint batches (1 dropped)
    with pytest.raises(ValueError, match="batch_size"):
        epoch_batch_fn(images, 11)


def test_configs():
    full = mvtec_cfg.get_config(None)
    assert (full.image_size, full.model.width, tuple(full.model.stage_sizes)) == (
        256,
        64,
        (2, 2, 2, 2),
    )
    assert full.model.latent_dim == 32
    assert mvtec_cfg.get_config("cpu").image_size == 128
    ucsd = ucsd_cfg.get_config("full")
    assert ucsd.image_size == 100 and tuple(ucsd.eval.layers) == ("conv1", "conv2", "conv3")
    for get in (mvtec_cfg.get_config, ucsd_cfg.get_config):
        with pytest.raises(ValueError, match="unknown variant"):
            get("huge")


def test_configs_build_their_producers_and_evaluators():
    for get in (mvtec_cfg.get_config, ucsd_cfg.get_config):
        e = get("cpu").eval
        producers, evaluators = loc.from_config(e)
        names = [p.name for p in producers]
        assert names[0] == "recon" and len(names) == len(set(names))
        want = [
            loc.attention_map_name(c, r, layer)
            for c in e.criteria
            for r in e.references
            for layer in e.layers
        ]
        extra = [p.name for p in vae_maps.producers_from_config(e.to_dict())]
        assert names[len(names) - len(extra) - len(want) :] == want + extra
        assert tuple(e.criteria) == ("difference", "kl")
        assert [type(v).kind for v in evaluators] == list(loc.DEFAULT_EVALUATORS)
    # MVTec computes every VAE map: residuals, gradients, combinations, projection,
    # attention x recon
    e = mvtec_cfg.get_config("cpu").eval
    extra = [p.name for p in vae_maps.producers_from_config(e.to_dict())]
    assert extra[:3] == ["recon_smooth", "ssim", "ssim_smooth"]
    extra = extra[3:]
    assert extra[:6] == ["grad_elbo", "grad_kl", "grad_rec", "combi", "combi_add", "projection"]
    want = [
        f"recon_x_{loc.attention_map_name(c, r, layer)}"
        for c in ("difference", "kl")
        for r in ("prior", "empirical")
        for layer in e.layers
    ] + [f"recon_x_attention_released_{layer}" for layer in e.layers]
    assert extra[6:] == want
    assert mvtec_cfg.get_config("cpu").eval.projection.steps == 50
    assert mvtec_cfg.get_config("full").eval.projection.steps == 100
    e = mvtec_cfg.get_config("cpu").eval
    e.overlay_layer = "stage1"  # not an evaluated layer: an error (it used to be dropped)
    with pytest.raises(ConfigError, match=r"eval.overlay_layer: 'stage1' is not one of eval"):
        loc.from_config(e)
    with pytest.raises(ValueError, match="unknown eval config keys.*layer_typo"):
        loc.from_config({**e.to_dict(), "layer_typo": 1})


# ----------------------------------------------------------------------------- MVTec-AD


@pytest.mark.e2e
@pytest.mark.slow
def test_mvtec_end_to_end_and_resume(tmp_path, monkeypatch):
    make_mvtec_category(tmp_path / "data", "toy", size=40)
    workdir = tmp_path / "run"
    config = mvtec_cfg.get_config("smoke")
    doc = mvtec_localization.train_and_evaluate(
        config, category="toy", data_dir=tmp_path / "data", workdir=workdir, progress=False
    )
    written = json.loads((workdir / "results.json").read_text())
    assert written == doc and doc["seeds"] == [0] and doc["experiment"] == "mvtec_localization"
    assert doc["paper"] is None  # no paper row for the toy category
    results, on_disk = doc["per_seed"]["0"], written["per_seed"]["0"]
    assert on_disk["metrics"] == results["metrics"]
    names = {"recon", "center_prior"} | {
        f"attention{c}_{r}_stage3" for c in ("", "_kl") for r in ("prior", "empirical")
    }
    names |= set(vae_maps.producer_names(config.eval.to_dict()))
    assert "projection" in names and "recon_x_attention_released_stage3" in names
    assert set(on_disk["metrics"]) == names
    assert set(on_disk["map_cost"]) == names
    assert all(c["wall_s"] > 0 for c in on_disk["map_cost"].values())
    for entry in on_disk["metrics"].values():
        assert set(entry["overall"]) == METRIC_KEYS
        assert set(entry["per_defect"]) == {"crack", "hole"}
        for m in [entry["overall"], *entry["per_defect"].values()]:
            for k in ("pixel_auroc", "best_iou", "aupro", "image_auroc"):
                assert 0.0 <= m[k] <= 1.0
    assert on_disk["train"]["steps"] == 2 and on_disk["train"]["steps_run"] == 2
    assert on_disk["num_train_images"] == 4 and on_disk["num_test_images"] == 5
    # figures and results live in the evaluation's own folder; the workdir links to it
    evaluation = pathlib.Path(written["evaluation"]["dir"])
    assert evaluation.parent == workdir / "evaluations" and evaluation.name.startswith("step2_")
    figures = workdir / "figures"
    assert figures.resolve() == (evaluation / "figures").resolve()
    for name in ("roc.png", "overlay_good.png", "overlay_crack.png", "overlay_hole.png"):
        assert (figures / name).stat().st_size > 0, name
    assert sorted(on_disk["figures"]) == sorted(
        str(p) for p in (evaluation / "figures").glob("*.png")
    )
    record = json.loads((workdir / "run.json").read_text())
    assert record["data"]["category"] == "toy" and record["config"] == config_dict(config)

    # a second invocation resumes from the final checkpoint instead of retraining; another
    # evaluation config gets its own folder and leaves the first evaluation as it was
    first = snapshot(evaluation)
    log = (workdir / "metrics.jsonl").read_text()
    config.eval.criteria = ("difference",)
    config.eval.maps = ()  # each VAE map costs a compile; they were checked above
    again_doc = mvtec_localization.train_and_evaluate(
        config, category="toy", data_dir=tmp_path / "data", workdir=workdir, progress=False
    )
    again = again_doc["per_seed"]["0"]
    assert again["train"]["steps"] == 2 and again["train"]["steps_run"] == 0
    assert (workdir / "metrics.jsonl").read_text() == log
    assert again["metrics"]["recon"] == results["metrics"]["recon"]
    assert snapshot(evaluation) == first
    second = pathlib.Path(again_doc["evaluation"]["dir"])
    assert second != evaluation and second.parent == evaluation.parent
    assert json.loads((workdir / "results.json").read_text())["evaluation"]["dir"] == str(second)
    assert "attention_kl_prior_stage3" not in again["metrics"]
    assert again_doc["evaluation"]["config"]["eval.criteria"] == ["difference"]
    record = json.loads((workdir / "run.json").read_text())
    assert [e["dir"] for e in record["evaluations"]] == [evaluation.name, second.name]
    assert len(record["starts"]) == 2
    assert set(on_disk["latent_detection"]) == {"kl_prior", "kl_empirical"}
    assert set(on_disk["latent_detection"]["kl_prior"]["per_defect"]) == {"crack", "hole"}

    # the first config again: its evaluation is read back (nothing is evaluated) and linked
    first_config = mvtec_cfg.get_config("smoke")

    def no_evaluation(*args, **kwargs):
        raise AssertionError("a finished evaluation was computed again")

    monkeypatch.setattr(loc, "evaluate_test_set", no_evaluation)
    third = mvtec_localization.train_and_evaluate(
        first_config, category="toy", data_dir=tmp_path / "data", workdir=workdir, progress=False
    )
    assert third == doc
    assert snapshot(evaluation) == first
    assert json.loads((workdir / "results.json").read_text())["evaluation"]["dir"] == str(
        evaluation
    )
    assert (workdir / "figures").resolve() == (evaluation / "figures").resolve()
    record = json.loads((workdir / "run.json").read_text())
    assert [e["dir"] for e in record["evaluations"]] == [evaluation.name, second.name]
    # a results file that does not read is evaluated again, not trusted
    (evaluation / "results.json").write_text("{")
    with pytest.raises(AssertionError, match="computed again"):
        mvtec_localization.train_and_evaluate(
            first_config,
            category="toy",
            data_dir=tmp_path / "data",
            workdir=workdir,
            progress=False,
        )


def test_center_prior_maps():
    maps = loc.center_prior_maps((2, 3, 5))
    assert maps.shape == (2, 3, 5) and maps.dtype == np.float32
    assert maps[0, 1, 2] == 0.0  # the centre pixel
    np.testing.assert_allclose(maps[1, 0, 0], -np.sqrt(1.0 + 4.0))
    np.testing.assert_array_equal(maps[0], maps[1])


def test_intensity_maps_and_baseline_names():
    images = np.zeros((2, 3, 4, 3), np.float32)
    images[1, 2, 3] = [0.3, 0.6, 0.9]
    maps = loc.intensity_maps(images)
    assert maps.shape == (2, 3, 4) and maps.dtype == np.float32
    np.testing.assert_allclose(maps[1, 2, 3], 0.6, rtol=1e-6)
    assert maps.sum() == pytest.approx(0.6)
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        loc.intensity_maps(np.zeros((3, 4)))
    with pytest.raises(ConfigError, match=r"^eval.baselines: unknown entries \['ink'\]"):
        loc.evaluate_one_class(
            None, {}, train_images=images, test_images=images, masks=np.zeros((2, 3, 4)),
            labels=np.zeros(2), layers=(), baselines=("ink",),
        )  # fmt: skip


def test_latent_detection_matches_sklearn():
    import jax

    from vae_xai.models import ConvVAE

    model = ConvVAE(input_shape=(16, 16, 1), channels=(4, 6), hidden=12, latent_dim=5)
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(12, 16, 16, 1)).astype(np.float32)
    images[6:] *= 0.3  # the "anomalous" half looks different
    labels = np.array([0] * 6 + [1] * 6)
    groups = np.array(["good"] * 6 + ["a", "b"] * 3)
    variables = model.init(jax.random.key(0), images[:2])
    out = model.apply(variables, images, method="encode")
    mu, logvar = np.asarray(out["mu"], np.float64), np.asarray(out["logvar"], np.float64)
    ref_mu, ref_var = mu[:6].mean(0), np.exp(logvar[:6]).mean(0) + mu[:6].var(0)
    got = loc.latent_detection(
        model,
        variables,
        images,
        labels,
        {"prior": (0.0, 1.0), "empirical": (ref_mu, ref_var)},
        groups,
        batch_size=5,
    )
    for name, (m, v) in {"prior": (0.0, 1.0), "empirical": (ref_mu, ref_var)}.items():
        kl = 0.5 * (np.log(v) - logvar + (np.exp(logvar) + (mu - m) ** 2) / v - 1).sum(1)
        entry = got[f"kl_{name}"]
        assert entry["overall"] == pytest.approx(roc_auc_score(labels, kl), abs=1e-9)
        for g in ("a", "b"):
            sel = (groups == g) | (labels == 0)
            assert entry["per_defect"][g] == pytest.approx(
                roc_auc_score(labels[sel], kl[sel]), abs=1e-9
            )


def test_mvtec_missing_category_and_data_dir(tmp_path):
    make_mvtec_category(tmp_path / "data", "toy", size=40)
    with pytest.raises(FileNotFoundError, match="unknown MVTec-AD category 'bottle'"):
        mvtec_localization.train_and_evaluate(
            mvtec_cfg.get_config("smoke"),
            category="bottle",
            data_dir=tmp_path / "data",
            workdir=tmp_path / "run",
        )
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", "experiments.mvtec_localization", f"--workdir={tmp_path / 'w'}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "--data_dir is required" in proc.stderr
    proc = subprocess.run(
        [*cmd, f"--data_dir={tmp_path / 'data'}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "--category is required" in proc.stderr


# ----------------------------------------------------------------------------- UCSD Ped1


@pytest.mark.e2e
def test_ucsd_end_to_end(tmp_path):
    make_ucsd_ped1(tmp_path / "data")
    workdir = tmp_path / "run"
    doc = ucsd_localization.train_and_evaluate(
        ucsd_cfg.get_config("smoke"), data_dir=tmp_path / "data", workdir=workdir, progress=False
    )
    written = json.loads((workdir / "results.json").read_text())
    results, on_disk = doc["per_seed"]["0"], written["per_seed"]["0"]
    names = {"recon", "center_prior"} | {
        f"attention{c}_{r}_conv{i}"
        for c in ("", "_kl")
        for r in ("prior", "empirical")
        for i in (1, 2, 3)
    }
    assert set(on_disk["metrics"]) == names == set(results["metrics"])
    for entry in on_disk["metrics"].values():
        overall = entry["overall"]
        assert set(overall) == METRIC_KEYS
        assert 0.0 <= overall["pixel_auroc"] <= 1.0 and 0.0 <= overall["image_auroc"] <= 1.0
        assert overall["n_images"] == 5 and overall["n_anomalous"] == 3  # Test001, frames 2-4
    assert on_disk["test_clips"] == ["Test001"] and on_disk["num_train_frames"] == 10
    assert written["paper"]["pixel_auroc"]["attention_conv2"] == 0.92
    for name in ("roc.png", "overlay_normal.png", "overlay_anomalous.png"):
        assert (workdir / "figures" / name).stat().st_size > 0, name


# ----------------------------------------------------------------------------- run identity


def _refused(fn, exc, match: str, *, before: dict[str, str], workdir: pathlib.Path):
    t0 = time.perf_counter()
    with pytest.raises(exc, match=match) as err:
        fn()
    elapsed = time.perf_counter() - t0
    assert elapsed < 15, f"refused only after {elapsed:.0f} s"
    assert snapshot(workdir) == before, "a refused start changed the workdir"
    return str(err.value)


@pytest.mark.e2e
@pytest.mark.slow
def test_mvtec_trained_workdir_refuses_another_run(tmp_path):
    """The failure cases of issue 10 on a trained workdir: another category, another learning
    rate / batch size, a smaller num_steps. Each is refused in seconds, before data loading,
    and leaves every file of the workdir as it was."""
    data = tmp_path / "data"
    make_mvtec_category(data, "toy", size=40)
    make_mvtec_category(data, "cable", size=40, seed=1)
    workdir = tmp_path / "run"
    config = mvtec_cfg.get_config("smoke")
    config.eval.criteria = ("difference",)
    config.eval.references = ("prior",)
    mvtec_localization.train_and_evaluate(
        config, category="toy", data_dir=data, workdir=workdir, progress=False
    )
    before = snapshot(workdir)
    assert "checkpoints/2/_CHECKPOINT_METADATA" in before and "results.json" in before

    def rerun(cfg, category="toy"):
        return lambda: mvtec_localization.train_and_evaluate(
            cfg, category=category, data_dir=data, workdir=workdir, progress=False
        )

    msg = _refused(rerun(config, "cable"), WorkdirError, "holds another run", before=before,
                   workdir=workdir)  # fmt: skip
    assert str(workdir) in msg
    assert 'data.category: "toy" -> "cable"' in msg and "data.files.sha256" in msg

    other = mvtec_cfg.get_config("smoke")
    other.eval.criteria, other.eval.references = ("difference",), ("prior",)
    other.train.learning_rate, other.train.batch_size = 1e-2, 3
    msg = _refused(rerun(other), WorkdirError, "holds another run", before=before,
                   workdir=workdir)  # fmt: skip
    assert "train.batch_size: 2 -> 3" in msg and "train.learning_rate: 0.0003 -> 0.01" in msg
    assert "category" not in msg  # only the fields that differ

    shorter = mvtec_cfg.get_config("smoke")
    shorter.eval.criteria, shorter.eval.references = ("difference",), ("prior",)
    shorter.train.num_steps = 1
    msg = _refused(rerun(shorter), WorkdirError, "trained to step 2", before=before,
                   workdir=workdir)  # fmt: skip
    assert "train.num_steps=1 is smaller" in msg

    # the position check reads the trained run only if its config and data match the record
    # (another process: this one holds the workdir's lock until it exits or releases it)
    wd.release(workdir)
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", MPLBACKEND="Agg")
    cmd = [
        sys.executable, "-m", "experiments.mvtec_position_check", "--category=toy",
        f"--data_dir={data}", f"--workdir={workdir}", "--layers=stage3",
        f"--config={ROOT}/experiments/configs/mvtec_localization.py:smoke",
    ]  # fmt: skip
    proc = subprocess.run(
        [*cmd, "--config.train.learning_rate=0.01"], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0 and "train.learning_rate: 0.0003 -> 0.01" in proc.stderr
    assert snapshot(workdir) == before
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (check,) = (workdir / "evaluations").glob("position_check_step2_*/results.json")
    out = json.loads(check.read_text())["per_seed"]["0"]
    assert set(out["position_check"]) == {"stage3"}
    assert 0.0 <= out["position_check"]["stage3"]["pixel_auroc"] <= 1.0
    assert json.loads((workdir / "results.json").read_text())["evaluation"]["dir"] != str(
        check.parent
    )  # the run's own results stay linked


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("train.checkpoint_every", 0, "train.checkpoint_every: must be an integer >= 1; got 0"),
        ("train.log_every", 0, "train.log_every: must be an integer >= 1; got 0"),
        ("train.num_steps", -5, "train.num_steps: must be an integer >= 1; got -5"),
        ("eval.layers", ("stage9",), "eval.layers: ResNetVAE.encode has no layer 'stage9'"),
        ("eval.overlay_layer", "stage2", "eval.overlay_layer: 'stage2' is not one of"),
        ("eval.criteria", ("diff",), r"eval.criteria: unknown entries \['diff'\]"),
        ("train.learning_rate", 0.0, "train.learning_rate: must be > 0"),
    ],
)
def test_mvtec_bad_config_fails_before_any_work(tmp_path, field, value, match):
    """Each bad value is a ConfigError naming the field, raised before the data folder is
    even looked at (it does not exist here) and before the workdir is created."""
    config = mvtec_cfg.get_config("smoke")
    section, key = field.split(".")
    config[section][key] = value
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=match):
        mvtec_localization.train_and_evaluate(
            config, category="toy", data_dir=tmp_path / "nope", workdir=tmp_path / "run"
        )
    assert time.perf_counter() - t0 < 15
    assert not (tmp_path / "run").exists()


def test_mvtec_batch_larger_than_training_set_fails_before_any_work(tmp_path):
    make_mvtec_category(tmp_path / "data", "toy", size=40)
    config = mvtec_cfg.get_config("smoke")
    config.train.batch_size = 5
    with pytest.raises(ConfigError, match="train.batch_size: 5 exceeds the 4 training images"):
        mvtec_localization.train_and_evaluate(
            config, category="toy", data_dir=tmp_path / "data", workdir=tmp_path / "run"
        )
    assert not (tmp_path / "run").exists()

"""Synthetic-anomaly MNIST control: ``paste_squares`` on hand-computed cases and its errors, the
config, and ``experiments.mnist_localization`` end to end on a tiny fake MNIST (train, resume,
results.json, figures, errors)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from data_pipelines.synthetic_anomaly import paste_squares
from experiments.configs import mnist_localization as mnist_loc_cfg
from tests.test_mnist import write_idx
from vae_xai import localization as loc
from vae_xai.experiments import mnist_localization
from vae_xai.localization import vae_maps

ROOT = pathlib.Path(__file__).resolve().parents[1]
METRICS = ("pixel_auroc", "best_iou", "aupro", "image_auroc")


# ----------------------------------------------------------------------------- paste_squares


def test_single_position_by_hand():
    # 5x5 image, 3x3 square, margin 1: the only top-left corner is (1, 1)
    out = paste_squares(np.zeros((1, 5, 5, 1), np.float32), fraction=1.0, size=3, margin=1)
    want = np.array(
        [
            [0, 0, 0, 0, 0],
            [0, 1, 1, 1, 0],
            [0, 1, 1, 1, 0],
            [0, 1, 1, 1, 0],
            [0, 0, 0, 0, 0],
        ],
        np.uint8,
    )
    np.testing.assert_array_equal(out["mask"][0], want)
    np.testing.assert_array_equal(out["image"][0, ..., 0], want.astype(np.float32))
    assert out["label"].tolist() == [1] and out["defect"].tolist() == ["square"]


def test_square_mask_is_where_the_image_changed():
    images = np.zeros((10, 12, 9, 2), np.float64)
    out = paste_squares(images, fraction=0.4, size=4, value=0.75, margin=1, seed=3)
    assert out["image"].dtype == np.float32 and out["mask"].dtype == np.uint8
    assert out["label"].dtype == np.int32 and out["image"].shape == images.shape
    assert out["mask"].shape == (10, 12, 9) and out["label"].shape == (10,)
    assert int(out["label"].sum()) == 4
    for c in range(2):
        np.testing.assert_array_equal(out["image"][..., c] != 0, out["mask"] == 1)
    np.testing.assert_array_equal(out["image"][out["mask"] == 1], 0.75)
    anomalous = out["label"] == 1
    assert (out["mask"][anomalous].sum((1, 2)) == 16).all()
    assert (out["mask"][~anomalous] == 0).all()
    assert out["defect"].tolist() == ["square" if a else "good" for a in anomalous]
    assert not images.any()  # the input is not modified


def test_unchanged_images_and_erase():
    rng = np.random.default_rng(0)
    images = rng.uniform(0.5, 1.0, (8, 10, 10, 1)).astype(np.float32)
    out = paste_squares(images, fraction=0.5, size=3, margin=2, kind="erase", seed=1)
    normal = out["label"] == 0
    np.testing.assert_array_equal(out["image"][normal], images[normal])
    np.testing.assert_array_equal(out["image"][..., 0] == 0, out["mask"] == 1)
    outside = out["mask"] == 0
    np.testing.assert_array_equal(out["image"][..., 0][outside], images[..., 0][outside])
    assert sorted(set(out["defect"].tolist())) == ["erase", "good"]
    assert int(out["label"].sum()) == 4


def test_mask_counts_only_changed_pixels():
    # left half of the image is ink: a square there changes nothing, only its right part counts
    img = np.zeros((1, 5, 5, 1), np.float32)
    img[0, :, :2] = 1.0
    out = paste_squares(img, fraction=1.0, size=3, margin=1, placement="uniform")
    want = np.zeros((5, 5), np.uint8)
    want[1:4, 2:4] = 1  # the square covers columns 1..3; column 1 was already ink
    np.testing.assert_array_equal(out["mask"][0], want)
    # a faint change (0.2 <= min_change) is not in the mask, a larger one is
    faint = np.full((1, 5, 5, 1), 0.8, np.float32)
    assert paste_squares(faint, fraction=1.0, size=3, margin=1)["mask"].sum() == 0
    out = paste_squares(faint, fraction=1.0, size=3, margin=1, min_change=0.1)
    assert out["mask"].sum() == 9


def test_ink_placement_centres_the_square_on_ink():
    # a single ink pixel at (6, 7) of a 12x12 image: the 3x3 erase square must cover it
    img = np.zeros((6, 12, 12, 1), np.float32)
    img[:, 6, 7] = 1.0
    out = paste_squares(img, fraction=1.0, size=3, margin=1, kind="erase", seed=4)
    for i in range(6):
        np.testing.assert_array_equal(out["image"][i], 0.0)
        want = np.zeros((12, 12), np.uint8)
        want[6, 7] = 1
        np.testing.assert_array_equal(out["mask"][i], want)  # only the erased ink
    # near the border the square is clipped to stay inside the margin, still covering the ink
    img = np.zeros((1, 12, 12, 1), np.float32)
    img[0, 1, 10] = 1.0
    out = paste_squares(img, fraction=1.0, size=3, margin=1, kind="erase", seed=0)
    assert out["mask"][0, 1, 10] == 1 and out["image"].sum() == 0
    # uniform placement of an erase usually misses a single pixel: the mask is then empty
    out = paste_squares(
        np.repeat(img, 20, 0), fraction=1.0, size=3, margin=1, kind="erase", placement="uniform"
    )
    assert out["mask"].sum() < 20
    with pytest.raises(ValueError, match="placement"):
        paste_squares(img, placement="edge")
    with pytest.raises(ValueError, match="min_change"):
        paste_squares(img, min_change=0.0)


@pytest.mark.parametrize(
    ("n", "fraction", "want"),
    [(5, 0.5, 3), (7, 0.5, 4), (4, 0.0, 0), (4, 1.0, 4), (10, 0.33, 3), (0, 0.5, 0)],
)
def test_number_of_anomalous_images(n, fraction, want):
    out = paste_squares(np.zeros((n, 8, 8, 1), np.float32), fraction=fraction, size=2)
    assert int(out["label"].sum()) == want == int((out["mask"].sum((1, 2)) > 0).sum())


def test_deterministic_for_a_seed():
    images = np.zeros((20, 16, 16, 1), np.float32)
    a = paste_squares(images, seed=7)
    b = paste_squares(images, seed=7)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    c = paste_squares(images, seed=8)
    assert not np.array_equal(a["mask"], c["mask"])


def test_margins_respected_and_all_positions_reachable():
    h, w, size, margin = 12, 11, 3, 2
    out = paste_squares(
        np.zeros((400, h, w, 1), np.float32), fraction=1.0, size=size, margin=margin, seed=0
    )
    ys, xs = [], []
    for m in out["mask"]:
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        assert len(rows) == len(cols) == size
        ys.append(rows[0])
        xs.append(cols[0])
    # top-left corners cover exactly [margin, H - margin - size] (and likewise for x)
    assert set(ys) == set(range(margin, h - margin - size + 1))
    assert set(xs) == set(range(margin, w - margin - size + 1))


def test_validation_errors():
    ok = np.zeros((2, 16, 16, 1), np.float32)
    with pytest.raises(ValueError, match=r"\(N, H, W, C\).*ndim 4.*\(2, 16, 16\)"):
        paste_squares(ok[..., 0])
    with pytest.raises(ValueError, match="floating dtype.*uint8"):
        paste_squares(ok.astype(np.uint8))
    nan = ok.copy()
    nan[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        paste_squares(nan)
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        paste_squares(ok + 1.5)
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        paste_squares(ok - 0.1)
    with pytest.raises(ValueError, match=r"size \+ 2 \* margin = 13 \+ 2 \* 2 = 17.*16 x 16"):
        paste_squares(ok, size=13, margin=2)
    paste_squares(ok, size=12, margin=2)  # exactly fits
    for fraction in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"fraction must be in \[0, 1\]"):
            paste_squares(ok, fraction=fraction)
    with pytest.raises(ValueError, match="kind must be one of"):
        paste_squares(ok, kind="circle")
    with pytest.raises(ValueError, match=r"value must be in \[0, 1\]"):
        paste_squares(ok, value=2.0)
    with pytest.raises(ValueError, match="size must be a positive integer"):
        paste_squares(ok, size=0)
    with pytest.raises(ValueError, match="margin must be a non-negative integer"):
        paste_squares(ok, margin=-1)


# ----------------------------------------------------------------------------- config


def test_config_variants_match_library_signatures():
    cpu = mnist_loc_cfg.get_config(None)
    assert cpu.variant == "cpu" and cpu.normal_digit == 3 and cpu.model.latent_dim == 32
    assert (cpu.train.num_steps, cpu.train.batch_size, cpu.train.learning_rate) == (1000, 64, 1e-3)
    full = mnist_loc_cfg.get_config("full")
    assert (full.train.num_steps, full.train.batch_size) == (6000, 128)
    train_kw = set(loc.TRAIN_KEYS)
    for variant in mnist_loc_cfg.VARIANTS:
        c = mnist_loc_cfg.get_config(variant)
        assert set(c.train.keys()) == train_kw
        producers, evaluators = loc.from_config(c.eval)
        names = [p.name for p in producers]
        assert names[:3] == ["recon", "center_prior", "intensity"]
        extra = [p.name for p in vae_maps.producers_from_config(c.eval.to_dict())]
        assert "attention_kl_empirical_conv2" in names
        assert len(names) == 3 + 2 * 2 * 2 + len(extra) and names[3 + 8 :] == extra
        assert set(extra) >= {"grad_elbo", "grad_kl", "grad_rec", "combi", "combi_add"}
        assert {"projection", "recon_x_attention_released_conv2"} <= set(extra)
        overlays = next(e for e in evaluators if isinstance(e, loc.Overlays))
        assert overlays.shown == (
            "recon",
            "attention_prior_conv2",
            "attention_empirical_conv2",
            "attention_kl_prior_conv2",
            "attention_kl_empirical_conv2",
            # every other VAE map on the same images: the attention-weighted recon at conv2 only
            *[n for n in extra if not n.startswith("recon_x_") or n.endswith("_conv2")],
        )
        assert "recon_x_attention_released_conv2" in overlays.shown
    with pytest.raises(ValueError, match="unknown variant"):
        mnist_loc_cfg.get_config("huge")


def test_synthetic_test_set_uses_disjoint_chunks():
    clean = np.linspace(0.1, 0.9, 9, dtype=np.float32)[:, None, None, None] * np.ones(
        (9, 8, 8, 1), np.float32
    )
    anomaly = mnist_loc_cfg.get_config("smoke").anomaly
    anomaly.size, anomaly.margin = 3, 1
    test, stats = mnist_localization.synthetic_test_set(clean, anomaly, seed=0)
    # chunks 0..4 -> square, 5..8 -> erase; every clean image appears exactly once, in order
    assert len(test["image"]) == 9
    outside = test["mask"] == 0
    # outside the mask nothing moved by more than min_change (0.25)
    assert np.abs(test["image"][..., 0] - clean[..., 0])[outside].max() <= 0.25
    kinds = test["defect"][test["label"] == 1].tolist()
    assert set(kinds[:3]) == {"square"} and set(kinds[3:]) == {"erase"}
    assert stats["square"]["num_images"] == 5 and stats["erase"]["num_images"] == 4
    assert stats["square"]["num_anomalous"] == 3 and stats["erase"]["num_anomalous"] == 2
    for kind in ("square", "erase"):
        masks = test["mask"][(test["label"] == 1) & (test["defect"] == kind)]
        assert stats[kind]["mean_mask_pixels"] == pytest.approx(masks.sum((1, 2)).mean())
        assert stats[kind]["num_anomalous_with_empty_mask"] == int((masks.sum((1, 2)) == 0).sum())
    with pytest.raises(ValueError, match="cannot be split"):
        mnist_localization.synthetic_test_set(clean[:1], anomaly, seed=0)


# ----------------------------------------------------------------------------- end to end


def write_fake_mnist(root: pathlib.Path) -> pathlib.Path:
    """Four IDX files: blobs of ink on black, 20 training and 18 test images of digit 3."""
    rng = np.random.default_rng(0)

    def images(n: int) -> np.ndarray:
        out = np.zeros((n, 28, 28), np.uint8)
        for i in range(n):
            y, x = rng.integers(6, 14, 2)
            out[i, y : y + 10, x : x + 8] = rng.integers(128, 256, (10, 8))
        return out

    train_labels = np.array([3] * 20 + [1, 7, 0, 5], np.uint8)
    test_labels = np.array([3] * 18 + [2, 8], np.uint8)
    root.mkdir(parents=True, exist_ok=True)
    write_idx(root / "train-images-idx3-ubyte", images(len(train_labels)), compress=True)
    write_idx(root / "train-labels-idx1-ubyte", train_labels, compress=True)
    write_idx(root / "t10k-images-idx3-ubyte", images(len(test_labels)), compress=False)
    write_idx(root / "t10k-labels-idx1-ubyte", test_labels, compress=False)
    return root


@pytest.mark.e2e
@pytest.mark.slow
def test_end_to_end_and_resume(tmp_path):
    data = write_fake_mnist(tmp_path / "mnist")
    workdir = tmp_path / "run"
    config = mnist_loc_cfg.get_config("smoke")
    doc = mnist_localization.train_and_evaluate(config, workdir, data_dir=data, progress=False)
    written = json.loads((workdir / "results.json").read_text())
    assert written == doc and doc["seeds"] == [0]
    results, on_disk = doc["per_seed"]["0"], written["per_seed"]["0"]
    assert on_disk["metrics"] == results["metrics"]
    names = {"recon", "center_prior", "intensity"} | {
        f"attention{c}_{r}_{layer}"
        for c in ("", "_kl")
        for r in ("prior", "empirical")
        for layer in ("conv1", "conv2")
    }
    names |= set(vae_maps.producer_names(config.eval.to_dict()))
    assert "combi" in names and "projection" in names
    assert set(on_disk["metrics"]) == names and set(on_disk["map_cost"]) == names
    for entry in on_disk["metrics"].values():
        assert set(entry["per_defect"]) == {"square", "erase"}
        for m in [entry["overall"], *entry["per_defect"].values()]:
            for k in METRICS:
                assert 0.0 <= m[k] <= 1.0, (k, m)
        assert entry["overall"]["n_images"] == 16 and entry["overall"]["n_anomalous"] == 8
    assert on_disk["train"]["steps"] == 3 and on_disk["train"]["steps_run"] == 3
    assert on_disk["num_train_images"] == 20 and on_disk["num_test_images"] == 16
    assert set(on_disk["anomalies"]) == {"square", "erase"}
    assert set(on_disk["latent_detection"]) == {"kl_prior", "kl_empirical"}
    assert written["notes"].startswith(loc.RESULT_NAMES_NOTE)
    figures = workdir / "figures"  # a link into the evaluation's own folder
    for name in ("roc.png", "overlay_good.png", "overlay_square.png", "overlay_erase.png"):
        assert (figures / name).stat().st_size > 0, name
    own = pathlib.Path(written["evaluation"]["dir"]) / "figures"
    assert figures.resolve() == own.resolve()
    assert sorted(on_disk["figures"]) == sorted(str(p) for p in own.glob("*.png"))
    assert written["data"]["dataset"] == "MNIST" and written["data"]["files"]["num_files"] == 4

    # a second invocation resumes from the final checkpoint instead of retraining (with one
    # attention map only: the evaluation is not under test here, and each map costs a compile)
    config.eval.update(layers=("conv2",), references=("prior",), criteria=("difference",), maps=())
    again = mnist_localization.train_and_evaluate(config, workdir, data_dir=data, progress=False)
    again = again["per_seed"]["0"]
    assert again["train"]["steps"] == 3 and again["train"]["steps_run"] == 0
    assert again["metrics"]["recon"] == results["metrics"]["recon"]


def test_missing_data_dir_fails_fast(tmp_path):
    config = mnist_loc_cfg.get_config("smoke")
    with pytest.raises(FileNotFoundError, match="nope"):
        mnist_localization.train_and_evaluate(
            config, data_dir=tmp_path / "nope", workdir=tmp_path / "run"
        )
    assert not (tmp_path / "run").exists()  # nothing trained or written
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", "experiments.mnist_localization", f"--workdir={tmp_path / 'w'}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "--data_dir is required" in proc.stderr

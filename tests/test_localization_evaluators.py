"""Map producers and evaluators (vae_xai.localization): the registries, config errors before
any work, and the evaluation against independent references (scikit-learn, brute force, hand
cases), never against an earlier version's output."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from experiments.configs import mnist_localization as mnist_loc_cfg
from vae_xai import localization as loc
from vae_xai.models import ConvVAE, mnist_vae
from vae_xai.validation import ConfigError


def brute_force_best_iou(scores: np.ndarray, masks: np.ndarray) -> float:
    """max over thresholds t of |{s >= t} & M| / |{s >= t} | M|, pooled over all pixels."""
    s, m = scores.ravel(), masks.ravel().astype(bool)
    best = 0.0
    for t in np.unique(s):
        pred = s >= t
        best = max(best, (pred & m).sum() / (pred | m).sum())
    return float(best)


def toy_set():
    rng = np.random.default_rng(1)
    images = rng.uniform(size=(8, 6, 7, 3)).astype(np.float32)
    masks = np.zeros((8, 6, 7), np.uint8)
    masks[4, 1:3, 2:5] = 1
    masks[5, 3:, :2] = 1
    masks[6, 2:4, 3:6] = 1
    masks[7, 0, :] = 1
    images[masks > 0] += 0.4  # anomalies are brighter: the intensity map finds them, partly
    labels = (masks.reshape(8, -1).max(1) > 0).astype(int)
    groups = np.array(["good"] * 4 + ["crack", "hole", "crack", "hole"])
    return images, masks, labels, groups


def test_registries_name_every_producer_and_evaluator():
    assert set(loc.PRODUCERS) == {
        "recon", "attention", "center_prior", "intensity",  # the paper's and the baselines
        "grad", "combination", "projection", "attention_x_recon", "released_attention",
        "residual",
    }  # fmt: skip
    assert set(loc.EVALUATORS) == {"localization", "latent_detection", "roc_figure", "overlays"}
    assert loc.PRODUCERS["intensity"] is loc.Intensity and loc.Intensity.kind == "intensity"
    with pytest.raises(ValueError, match="already registered"):
        loc.register_producer("recon")(type("Again", (), {}))
    with pytest.raises(ValueError, match="already registered"):
        loc.register_evaluator("overlays")(type("Again", (), {}))


@pytest.mark.parametrize(
    "entry, field",
    [
        ({"baselines": ("ink",)}, "eval.baselines"),
        ({"criteria": ("diference",)}, "eval.criteria"),
        ({"references": ("posterior",)}, "eval.references"),
        ({"evaluators": ("localization", "psnr")}, "eval.evaluators"),
        ({"overlay_layer": "conv3"}, "eval.overlay_layer"),
        ({"max_fpr": 0.0}, "eval.max_fpr"),
    ],
)
def test_a_bad_eval_entry_names_its_field(entry, field):
    e = {"layers": ("conv1", "conv2"), **entry}
    with pytest.raises(ConfigError) as err:
        loc.from_config(e)
    assert err.value.field.startswith(field)


def test_overlays_show_every_vae_map_at_no_layer_or_the_overlay_layer():
    produced = [
        "recon", "center_prior", "intensity", "attention_prior_conv1", "attention_prior_conv2",
        "grad_kl", "combi", "projection", "recon_x_attention_prior_conv1",
        "recon_x_attention_prior_conv2", "recon_x_attention_released_conv2",
    ]  # fmt: skip
    e = {"layers": ("conv1", "conv2"), "overlay_layer": "conv2", "references": ("prior",)}
    overlays = next(
        ev for ev in loc.evaluators_from_config(e, produced) if isinstance(ev, loc.Overlays)
    )
    assert overlays.shown == (
        "recon", "attention_prior_conv2", "grad_kl", "combi", "projection",
        "recon_x_attention_prior_conv2", "recon_x_attention_released_conv2",
    )  # fmt: skip
    plain = loc.evaluators_from_config({**e, "overlay_vae_maps": False}, produced)
    assert next(ev for ev in plain if isinstance(ev, loc.Overlays)).shown == (
        "recon", "attention_prior_conv2"
    )  # fmt: skip


def test_check_config_refuses_bad_producers_and_evaluators_before_training(tmp_path):
    from vae_xai.experiments import mnist_localization

    model = mnist_vae(4)
    for field, value in (
        ("evaluators", ("localization", "psnr")),
        ("overlay_layer", "conv3"),
        ("baselines", ("ink",)),
    ):
        config = mnist_loc_cfg.get_config("smoke")
        config.model.latent_dim = 4
        setattr(config.eval, field, value)
        with pytest.raises(ConfigError, match=f"eval.{field}"):
            loc.check_config(model, config, (28, 28, 1))
        # the launcher refuses it before it reads data or writes anything
        workdir = tmp_path / field
        with pytest.raises(ConfigError, match=f"eval.{field}"):
            mnist_localization.train_and_evaluate(
                config, workdir, data_dir=tmp_path / "missing", progress=False
            )
        assert not (workdir / "checkpoints").exists() and not (workdir / "run.json").exists()


def test_localization_metrics_evaluator_matches_sklearn_and_brute_force(tmp_path):
    images, masks, labels, groups = toy_set()
    ctx = loc.Context(
        model=None,
        variables={},
        train_images=images,
        test_images=images,
        masks=masks,
        labels=labels,
        groups=groups,
    )
    producers = [loc.CenterPrior(), loc.Intensity()]
    results, maps = loc.evaluate(ctx, producers, [loc.LocalizationMetrics(max_fpr=0.3)])
    assert list(results["metrics"]) == ["center_prior", "intensity"]
    assert results["figures"] == [] and results["eval_wall_s"] >= 0
    # the maps themselves, by hand
    np.testing.assert_allclose(maps["intensity"], images.mean(-1), rtol=1e-6)
    yy, xx = np.mgrid[0:6, 0:7]
    np.testing.assert_allclose(maps["center_prior"][3], -np.hypot(yy - 2.5, xx - 3.0), rtol=1e-6)
    for name, m in maps.items():
        got = results["metrics"][name]
        overall = got["overall"]
        assert overall["pixel_auroc"] == pytest.approx(
            roc_auc_score(masks.ravel(), m.ravel()), abs=1e-6
        )
        assert overall["best_iou"] == pytest.approx(brute_force_best_iou(m, masks), abs=1e-6)
        assert overall["image_auroc"] == pytest.approx(
            roc_auc_score(labels, m.reshape(8, -1).max(1)), abs=1e-9
        )
        assert (overall["n_images"], overall["n_anomalous"]) == (8, 4)
        # per defect type: its images plus every normal one
        for g in ("crack", "hole"):
            sel = (groups == g) | (labels == 0)
            entry = got["per_defect"][g]
            assert entry["pixel_auroc"] == pytest.approx(
                roc_auc_score(masks[sel].ravel(), m[sel].ravel()), abs=1e-6
            )
            assert entry["n_images"] == int(sel.sum())


@dataclasses.dataclass(frozen=True)
class Oracle:
    """A user's own producer: the mask itself (perfect localization, by construction)."""

    name: ClassVar[str] = "oracle"

    def produce(self, ctx):
        return np.asarray(ctx.masks, np.float32)


def test_a_custom_producer_and_the_figure_evaluators(tmp_path):
    images, masks, labels, groups = toy_set()
    ctx = loc.Context(
        model=None,
        variables={},
        train_images=images,
        test_images=images,
        masks=masks,
        labels=labels,
        groups=groups,
        figure_dir=tmp_path,
        title="toy",
    )
    evaluators = [
        loc.LocalizationMetrics(),
        loc.RocFigure(),
        loc.Overlays(shown=("oracle", "intensity"), per_group=2),
    ]
    results, _ = loc.evaluate(ctx, [Oracle(), loc.Intensity()], evaluators)
    oracle = results["metrics"]["oracle"]["overall"]
    assert (oracle["pixel_auroc"], oracle["best_iou"], oracle["aupro"]) == (1.0, 1.0, 1.0)
    names = [p.split("/")[-1] for p in results["figures"]]
    assert names == ["roc.png", "overlay_crack.png", "overlay_good.png", "overlay_hole.png"]
    for p in results["figures"]:
        assert open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no map \\['recon'\\] was produced"):
        loc.evaluate(ctx, [Oracle()], [loc.Overlays(shown=("recon",))])
    with pytest.raises(ValueError, match="two map producers are named 'oracle'"):
        loc.evaluate(ctx, [Oracle(), Oracle()], [])


def test_latent_detection_evaluator_and_attention_producer_names():
    model = ConvVAE(input_shape=(16, 16, 1), channels=(4, 6), hidden=12, latent_dim=5)
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(10, 16, 16, 1)).astype(np.float32)
    images[5:] *= 0.3
    labels = np.array([0] * 5 + [1] * 5)
    masks = np.zeros((10, 16, 16))
    masks[5:, 4:8, 4:8] = 1
    variables = model.init(jax.random.key(0), images[:1])
    ctx = loc.Context(
        model=model,
        variables=variables,
        train_images=images[:5],
        test_images=images,
        masks=masks,
        labels=labels,
        batch_size=4,
    )
    att = loc.AnomalyAttention("kl", "empirical", "conv2")
    assert att.name == "attention_kl_empirical_conv2"
    results, maps = loc.evaluate(ctx, [att], [loc.LatentDetection(references=("prior",))])
    assert maps[att.name].shape == (10, 16, 16) and np.all(np.isfinite(maps[att.name]))
    out = model.apply(variables, images, method="encode")
    mu, logvar = np.asarray(out["mu"], np.float64), np.asarray(out["logvar"], np.float64)
    kl = 0.5 * (np.exp(logvar) + mu**2 - 1 - logvar).sum(1)  # KL to N(0, 1), by hand
    got = results["latent_detection"]["kl_prior"]["overall"]
    assert got == pytest.approx(roc_auc_score(labels, kl), abs=1e-9)
    assert set(results) == {"latent_detection", "figures", "eval_wall_s", "map_cost"}
    assert set(results["map_cost"]) == {att.name}


def test_collect_nests_pairs():
    pairs = [("metrics/a", 1), ("figures/roc", "r.png"), ("metrics/b", 2), ("x", 3)]
    assert loc.collect(pairs) == {"metrics": {"a": 1, "b": 2}, "figures": ["r.png"], "x": 3}
    assert loc.collect([]) == {"figures": []}

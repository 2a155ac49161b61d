"""Producers and evaluators built from ``config.eval`` by registry lookup alone: an unknown
name or a bad entry is a ConfigError naming the field, each constructor checks its own
arguments, and a newly registered class is selectable without editing the builders."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import pytest

from vae_xai import localization as loc
from vae_xai.localization import maps, producers, vae_maps
from vae_xai.validation import ConfigError

LAYERS = {"layers": ("conv1", "conv2")}


@pytest.mark.parametrize(
    "entry, field",
    [
        ({"baselines": ("ink",)}, "eval.baselines"),
        ({"baselines": "intensity"}, "eval.baselines"),  # a string, not a list of names
        ({"criteria": ("diference",)}, "eval.criteria"),
        ({"criteria": ()}, "eval.criteria"),
        ({"references": ("posterior",)}, "eval.references"),
        ({"references": ()}, "eval.references"),
        ({"maps": ("grad_typo",)}, "eval.maps"),
        ({"maps": ("combi", "combi")}, "eval.maps"),
        ({"evaluators": ("localization", "psnr")}, "eval.evaluators"),
        ({"layers": "conv1"}, "eval.layers"),
        ({"batch_size": 0}, "eval.batch_size"),
        ({"layer_typo": 1}, "eval"),
    ],
)
def test_an_unknown_name_or_key_names_its_field(entry, field):
    with pytest.raises(ConfigError) as err:
        loc.from_config({**LAYERS, **entry})
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")


def test_unknown_names_say_what_is_known():
    with pytest.raises(ConfigError, match=r"unknown entries \['ink'\]; choose from"):
        producers.producers_from_config({"baselines": ("ink",)})
    with pytest.raises(ConfigError, match="unknown evaluator 'psnr'; choose from") as err:
        loc.evaluators_from_config({**LAYERS, "evaluators": ("psnr", "localization")})
    assert "'roc_figure'" in str(err.value)


@pytest.mark.parametrize(
    "entry, field",
    [
        ({"max_fpr": 0.0}, "eval.max_fpr"),
        ({"max_fpr": 1.5}, "eval.max_fpr"),
        ({"max_fpr": "0.3"}, "eval.max_fpr"),
        ({"image_score": "median"}, "eval.image_score"),
        ({"overlay_layer": "conv3"}, "eval.overlay_layer"),
        ({"overlays_per_group": 0}, "eval.overlays_per_group"),
        ({"num_samples": 0}, "eval.num_samples"),
        ({"num_samples": 1.5}, "eval.num_samples"),
        ({"maps": ("grad_kl",), "grad": {"smooth_sigma": 0.0}}, "eval.grad.smooth_sigma"),
        ({"maps": ("grad_kl",), "grad": {"num_samples": -1}}, "eval.grad.num_samples"),
        ({"maps": ("projection",), "projection": {"steps": 0}}, "eval.projection.steps"),
        ({"maps": ("projection",), "projection": {"lam": -1.0}}, "eval.projection.lam"),
        ({"maps": ("combi",), "combi": {"normalize_on": "batch"}}, "eval.combi.normalize_on"),
        (
            {"maps": ("attention_x_recon",), "attention_x_recon": {"variants": ("gradcam",)}},
            "eval.attention_x_recon.variants",
        ),
        ({"layers": (), "maps": ("attention_x_recon",)}, "eval.attention_x_recon.layers"),
    ],
)
def test_a_bad_entry_names_its_field(entry, field):
    with pytest.raises(ConfigError) as err:
        loc.from_config({**LAYERS, **entry})
    assert err.value.field == field


@pytest.mark.parametrize(
    "build, field",
    [
        (lambda: loc.LocalizationMetrics(max_fpr=0.0), "eval.max_fpr"),
        (lambda: loc.LocalizationMetrics(max_fpr=1.01), "eval.max_fpr"),
        (lambda: loc.LocalizationMetrics(image_score="sum"), "eval.image_score"),
        (lambda: loc.LatentDetection(references=("posterior",)), "eval.references"),
        (lambda: loc.Overlays(shown=("recon",), per_group=0), "eval.overlays_per_group"),
        (
            lambda: loc.AnomalyAttention("difference", "prior", "c", num_samples=0),
            "eval.num_samples",
        ),
        (lambda: loc.AnomalyAttention("diff", "prior", "conv1"), "eval.criteria"),
        (lambda: loc.AnomalyAttention("kl", "posterior", "conv1"), "eval.references"),
        (lambda: loc.InputGradient("kl2"), "eval.maps"),
        (lambda: loc.GradientCombination("max"), "eval.maps"),
        (lambda: loc.GradientCombination("sum", max_norm_images=0), "eval.combi.max_norm_images"),
        (lambda: vae_maps.GradientSettings(channel_reduce="median"), "eval.grad.channel_reduce"),
        (lambda: loc.EnergyProjection(step_size=0.0), "eval.projection.step_size"),
        (lambda: loc.EnergyProjection(kl_weight=float("nan")), "eval.projection.kl_weight"),
        (lambda: loc.AttentionWeightedRecon("gradcam", "conv1"), "eval.attention_x_recon.variants"),
        (lambda: loc.AttentionWeightedRecon("kl", "conv1", num_samples=0), "eval.num_samples"),
    ],
)
def test_each_constructor_checks_its_arguments(build, field):
    with pytest.raises(ConfigError) as err:
        build()
    assert err.value.field == field


def test_constructors_keep_integer_entries_as_int():
    assert loc.AnomalyAttention("kl", "prior", "conv1", num_samples=2.0).num_samples == 2
    assert type(loc.EnergyProjection(steps=3.0).steps) is int


def test_overlay_layer_must_be_an_evaluated_layer():
    with pytest.raises(ConfigError) as err:
        loc.Overlays.from_config({**LAYERS, "overlay_layer": "conv3"})
    assert err.value.field == "eval.overlay_layer"
    assert "'conv3' is not one of eval.layers ['conv1', 'conv2']" in str(err.value)
    with pytest.raises(ConfigError, match="eval.overlay_layer: None is not one of eval.layers"):
        loc.Overlays.from_config({})  # no layers, so no attention map to show
    (overlays,) = loc.Overlays.from_config(LAYERS)
    assert overlays.shown == ("recon", "attention_prior_conv1", "attention_empirical_conv1")


def test_baselines_are_the_registered_model_free_kinds():
    assert maps.baseline_kinds() == ("center_prior", "intensity")
    assert not hasattr(loc, "BASELINES")
    names = [p.name for p in producers.producers_from_config({"baselines": ("intensity",) * 2})]
    assert names == ["recon", "intensity", "intensity"]  # once per mention, in order


@pytest.fixture
def registered():
    """Register classes for one test; the registries are restored after it."""
    before = dict(loc.PRODUCERS), dict(loc.EVALUATORS)
    yield
    for registry, saved in zip((loc.PRODUCERS, loc.EVALUATORS), before, strict=True):
        registry.clear()
        registry.update(saved)


def test_a_registered_evaluator_is_built_by_naming_it(registered):
    @loc.register_evaluator("mean_score")
    class MeanScore:
        def __init__(self, *, maps_seen):
            self.maps_seen = tuple(maps_seen)

        @classmethod
        def from_config(cls, eval_config, *, produced=None, **context):
            return [cls(maps_seen=produced or ())]

        def run(self, ctx, maps):
            for name, m in maps.items():
                yield f"mean_score/{name}", float(np.mean(m))

    e = {**LAYERS, "evaluators": ("localization", "mean_score")}
    producers_, evaluators = loc.from_config(e)
    assert [type(ev).kind for ev in evaluators] == ["localization", "mean_score"]
    assert evaluators[1].maps_seen == tuple(p.name for p in producers_)
    assert "mean_score" in loc.EVALUATORS


def test_an_evaluator_without_from_config_is_refused_at_registration(registered):
    with pytest.raises(TypeError, match="needs a classmethod from_config"):
        loc.register_evaluator("bare")(type("Bare", (), {"run": lambda self, ctx, maps: ()}))
    assert "bare" not in loc.EVALUATORS


def test_a_registered_baseline_and_vae_map_are_built_by_naming_them(registered):
    @loc.register_producer("toy_baseline")
    @dataclasses.dataclass(frozen=True)
    class Toy(maps.ModelFreeBaseline):
        name: ClassVar[str] = "toy_baseline"

        def produce(self, ctx):
            return np.zeros(np.shape(ctx.test_images)[:3], np.float32)

    @loc.register_producer("toy_map")
    @dataclasses.dataclass(frozen=True)
    class ToyMap:
        map_names: ClassVar[tuple[str, ...]] = ("toy_map",)
        map_name: ClassVar[str] = "toy_map"
        name: ClassVar[str] = "toy_map"

        @classmethod
        def from_config(cls, eval_config, **context):
            return [cls()] if cls.map_name in vae_maps.eval_maps(eval_config) else []

    assert maps.baseline_kinds() == ("center_prior", "intensity", "toy_baseline")
    e = {"baselines": ("toy_baseline", "center_prior"), "maps": ("grad_kl", "toy_map", "combi")}
    names = [p.name for p in producers.producers_from_config(e)]
    assert names == ["recon", "toy_baseline", "center_prior", "grad_kl", "toy_map", "combi"]

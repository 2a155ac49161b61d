"""The results schema (vae_xai.results), several seeds (vae_xai.seeds) and the config
variants (experiments.configs.common): fields present, mean/std against numpy, old variant
names giving the configs they gave before the rename."""

from __future__ import annotations

import importlib
import json
import math
import pathlib

import ml_collections
import numpy as np
import pytest

from experiments.configs.common import CANONICAL, parse_variant
from vae_xai import results as results_lib
from vae_xai import seeds as seeds_lib
from vae_xai import workdir as wd
from vae_xai.validation import ConfigError

HERE = pathlib.Path(__file__).resolve().parent
CONFIGS = (
    "quickstart",
    "mnist_attention",
    "mnist_localization",
    "mvtec_localization",
    "ucsd_localization",
    "dsprites_disentanglement",
)

# ----------------------------------------------------------------------------- variants


def test_parse_variant_options_and_errors():
    kw = dict(variants=("smoke", "cpu", "full"), default="full")
    assert parse_variant(None, **kw).name == "full"
    assert parse_variant("", **kw) == parse_variant("full", **kw)
    assert parse_variant(" cpu ", **kw).name == "cpu"
    with pytest.raises(ValueError, match=r"unknown variant 'small'; valid variants are 'smoke', "
                       r"'cpu', 'full'$"):  # fmt: skip
        parse_variant("small", **kw)  # old names are gone
    with pytest.raises(ValueError, match="choose one variant"):
        parse_variant("cpu,smoke", **kw)
    opt = dict(kw, options=("a", "b"), default_option="a", config="toy")
    assert parse_variant(None, **opt) == parse_variant("a", **opt)
    assert (parse_variant("b,cpu", **opt).option, parse_variant("cpu", **opt).option) == (
        "b",
        "a",
    )
    with pytest.raises(ValueError, match=r"toy: unknown option 'c' in 'c,cpu'; choose one of"):
        parse_variant("c,cpu", **opt)


def _get(name):
    return importlib.import_module(f"experiments.configs.{name}").get_config


def test_every_config_names_only_known_variants():
    for name in CONFIGS:
        mod = importlib.import_module(f"experiments.configs.{name}")
        assert {"smoke", "cpu"} <= set(mod.VARIANTS), name
        for variant in mod.VARIANTS:
            arg = variant if name != "dsprites_disentanglement" else f"factorvae,{variant}"
            c = mod.get_config(arg)
            assert c.variant == variant
            assert variant in CANONICAL or variant == "cpu_long", (name, variant)
            # one schema: seed and variant at the top; model, train and eval sections
            assert {"seed", "variant", "model", "train", "eval"} <= set(c), (name, variant)
            assert {"num_steps", "batch_size", "checkpoint_every", "log_every"} <= set(c.train)
        with pytest.raises(ValueError, match="valid variants are"):
            mod.get_config("huge" if name != "dsprites_disentanglement" else "factorvae,huge")


# The variants' old names (the reference file's arguments) and where the sectioned schema
# moved each flat field (new dotted path -> old one).
OLD_NAMES = {
    "quickstart": {"small": "smoke", "full": "cpu"},
    "mnist_attention": {"small": "smoke"},
    "mnist_localization": {"tiny": "smoke"},
    "mvtec_localization": {"small": "cpu", "tiny": "smoke"},
    "ucsd_localization": {"small": "cpu", "tiny": "smoke"},
    "dsprites_disentanglement": {"small": "cpu", "cpu": "cpu_long"},
}
_SCHEDULE = ("num_steps", "batch_size", "checkpoint_every", "log_every")
MOVED = {
    "quickstart": {
        "model.latent_dim": "latent_dim",
        **{f"train.{k}": k for k in (*_SCHEDULE, "learning_rate", "beta")},
        **{f"eval.{k}": k for k in ("layer", "num_samples", "max_latents_shown")},
    },
    "mnist_attention": {
        "model.latent_dim": "latent_dim",
        **{f"train.{k}": k for k in (*_SCHEDULE, "learning_rate", "beta")},
        "eval.layer": "layer",
        "eval.figure_digits": "figure_digits",
        "eval.examples_per_digit": "examples_per_digit",
        "eval.batch_size": "eval_batch_size",
        "eval.max_images": "max_eval_images",
    },
    "mnist_localization": {"model.latent_dim": "latent_dim"},
    "dsprites_disentanglement": {
        "model.latent_dim": "latent_dim",
        **{f"train.{k}": k for k in (*_SCHEDULE, "beta", "gamma", "disc_batch")},
    },
}


def _flat(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "figure_digits":
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_every_config_gives_the_values_it_gave_before_the_renames():
    """Reference: every config as the config modules of f91e2c6 built it (flat fields, old
    variant names), stored in tests/configs_before_variants.json. Each old name's variant,
    with the sectioned fields moved back to their flat names, gives the same values; only
    ``variant`` and what was added later (dSprites' ``seed`` and ``train.keep_every``, the
    localization configs' VAE maps) differ."""
    before = json.loads((HERE / "configs_before_variants.json").read_text())
    checked = 0
    for name, cases in before.items():
        get, moved, names = _get(name), MOVED.get(name, {}), OLD_NAMES[name]
        for arg, old in cases.items():
            parts = arg.split(",") if arg else []
            if parts and parts[-1] in names:
                parts[-1] = names[parts[-1]]
            new = _flat(json.loads(json.dumps(get(",".join(parts) or None).to_dict())))
            new = {moved.get(k, k): v for k, v in new.items()}
            for key in ("variant", "train.keep_every"):
                new.pop(key, None)
            if name == "dsprites_disentanglement":
                assert new.pop("seed") == 0
                assert new.pop("eval.tabulate") == "auto"  # added later (issue 20)
            if name.endswith("_localization"):  # maps added later (issue 19)
                for key in [k for k in new if k.split(".")[:2][-1] in _MAPS_KEYS]:
                    new.pop(key)
            old = {k: v for k, v in _flat(old).items() if k != "variant"}
            assert new == old, (name, arg)
            checked += 1
    assert checked == 28


_MAPS_KEYS = ("maps", "grad", "combi", "projection", "attention_x_recon", "residual")


def test_smoke_variants_are_short():
    for name in CONFIGS:
        arg = "smoke" if name != "dsprites_disentanglement" else "ad_factorvae,smoke"
        limit = 150 if name == "mnist_attention" else 30  # (one digit's model, about a minute)
        assert _get(name)(arg).train.num_steps <= limit, name
    d = _get("dsprites_disentanglement")("ad_factorvae,smoke")
    assert d.train.num_steps <= 2 and d.eval.factor_vae.num_train <= 20


def test_a_changed_variant_label_continues_its_workdir(tmp_path):
    """``variant`` is a label: the fields it stands for are compared, and when they are
    equal a workdir recorded under another label continues."""
    fields = wd.Fields(num_steps="num_steps", eval=(), schedule=())
    old = ml_collections.ConfigDict(dict(variant="small", seed=0, num_steps=4, lr=1e-3))
    first = wd.start(tmp_path, old, experiment="x", fields=fields, data={})
    # something of the run is kept (an untrained record would simply be replaced)
    first.evaluation({}, step=4).save_results({"x": 1.0})
    new = ml_collections.ConfigDict(dict(old.to_dict(), variant="cpu"))
    run = wd.start(tmp_path, new, experiment="x", fields=fields, data={})
    assert run.record["starts"][-1]["changed"] == {"variant": ["small", "cpu"]}
    other = ml_collections.ConfigDict(dict(new.to_dict(), lr=1e-2))
    with pytest.raises(wd.WorkdirError, match="lr: 0.001 -> 0.01"):
        wd.start(tmp_path, other, experiment="x", fields=fields, data={})


# ----------------------------------------------------------------------------- schema


PER_SEED = {
    "0": {
        "a": 1,
        "m": {"x": 0.5, "y": 2.0},
        "flag": True,
        "curve": [1, 2],
        "none": None,
        "digits": [{"d": 1, "v": 0.5}],
    },
    "1": {
        "a": 3,
        "m": {"x": 0.25},
        "flag": False,
        "curve": [3, 4],
        "none": None,
        "digits": [{"d": 1, "v": 0.7}],
    },
    "2": {"a": 8, "m": {"x": 1.0, "y": 4.0}, "name": "n", "digits": [{"d": 1, "v": 0.9}]},
}


def test_mean_std_of_every_numeric_leaf_against_numpy():
    out = results_lib.mean_std(PER_SEED)
    # no bools, lists of numbers, None or strings; lists of mappings by position
    assert set(out) == {"a", "m.x", "m.y", "digits.0.d", "digits.0.v"}
    want = {
        "a": [1, 3, 8],
        "m.x": [0.5, 0.25, 1.0],
        "m.y": [2.0, 4.0],
        "digits.0.v": [0.5, 0.7, 0.9],
    }
    for key, values in want.items():
        assert out[key]["n"] == len(values) and out[key]["values"] == values
        assert out[key]["mean"] == pytest.approx(np.mean(values), abs=1e-15)
        assert out[key]["std"] == pytest.approx(np.std(values, ddof=0), abs=1e-15)
    one = results_lib.mean_std({"3": {"v": 0.7}})
    assert one["v"] == {"mean": 0.7, "std": 0.0, "n": 1, "values": [0.7]}
    nan = results_lib.mean_std({"0": {"v": float("nan")}, "1": {"v": 1.0}})
    assert math.isnan(nan["v"]["mean"]) and math.isnan(nan["v"]["std"])


def test_written_document_has_every_schema_field(tmp_path):
    path = tmp_path / "sub" / "results.json"
    written = results_lib.write(
        path,
        experiment="toy",
        config={"seed": None, "lr": 0.1, "layers": ("a",)},
        data={"dataset": "toy"},
        per_seed=PER_SEED,
        extra={"paper": {"x": 0.9}},
    )
    on_disk = json.loads(path.read_text())
    assert on_disk == written
    results_lib.check(on_disk, seeds=[0, 1, 2])
    assert list(on_disk)[: len(results_lib.REQUIRED)] == list(results_lib.REQUIRED)
    assert on_disk["schema"] == "vae_xai.results" and on_disk["schema_version"] == 1
    assert on_disk["experiment"] == "toy" and on_disk["config"]["layers"] == ["a"]
    assert on_disk["per_seed"]["1"]["m"] == {"x": 0.25}  # the seeds' own keys, unchanged
    assert on_disk["paper"] == {"x": 0.9} and on_disk["results_path"] == str(path)
    assert set(on_disk["device"]) == {"platform", "kind", "count", "process_count"}
    assert {"vae_xai", "jax", "flax"} <= set(on_disk["versions"])
    assert "commit" in on_disk["git"] and on_disk["date"].startswith("20")
    with pytest.raises(ValueError, match=r"extra results fields \['seeds'\] would replace"):
        results_lib.write(path, experiment="t", config={}, data=None, per_seed=PER_SEED,
                          extra={"seeds": [9]})  # fmt: skip
    with pytest.raises(ValueError, match="per_seed is empty"):
        results_lib.write(path, experiment="t", config={}, data=None, per_seed={})
    with pytest.raises(ValueError, match="lack the schema field 'mean_std'"):
        results_lib.check({k: v for k, v in on_disk.items() if k != "mean_std"})


def test_evaluation_results_go_through_the_schema(tmp_path):
    fields = wd.Fields(num_steps="num_steps", eval=("eval",), schedule=())
    cfg = ml_collections.ConfigDict(dict(seed=7, num_steps=2, eval=dict(k=1)))
    run = wd.start(tmp_path, cfg, experiment="toy", fields=fields, data={"dataset": "d"})
    written = run.evaluation(run.eval_config(cfg), step=2).save_results({"auroc": 0.75})
    results_lib.check(written, seeds=[7])
    assert written["per_seed"] == {"7": {"auroc": 0.75}}
    assert written["mean_std"]["auroc"]["mean"] == 0.75
    assert written["data"] == {"dataset": "d"} and written["config"]["seed"] == 7
    assert written["run"]["experiment"] == "toy" and written["evaluation"]["step"] == 2
    assert json.loads((tmp_path / "results.json").read_text()) == written


# ----------------------------------------------------------------------------- seeds


def test_parse_seeds():
    assert seeds_lib.parse_seeds("0, 1,2") == [0, 1, 2]
    assert seeds_lib.parse_seeds(["3"]) == [3]
    assert seeds_lib.parse_seeds(None) is None  # not given; "" (given empty) is an error
    for bad, match in [
        ("a", "integers"),
        ("-1", r"in \[0, 2\*\*32\)"),
        ("1,1", "each seed once"),
        ("", "is empty"),
    ]:
        with pytest.raises(ConfigError, match=f"seeds: .*{match}"):
            seeds_lib.parse_seeds(bad)


def _toy_run_one(calls):
    """A stand-in experiment: one run per seed dir, its number a function of the seed."""
    fields = wd.Fields(num_steps="num_steps", eval=(), schedule=())

    def run_one(cfg, workdir):
        calls.append((cfg.seed, pathlib.Path(workdir).name))
        run = wd.start(workdir, cfg, experiment="toy", fields=fields, data={"dataset": "d"})
        evaluation = run.evaluation({}, step=cfg.num_steps)
        return evaluation.save_results(
            {"score": 0.1 * cfg.seed + cfg.lr, "nested": {"n": cfg.seed**2}},
            extra={"paper": {"score": 0.9}},
        )

    return run_one, fields


def test_run_seeds_one_run_per_seed_and_the_aggregate(tmp_path):
    calls = []
    run_one, fields = _toy_run_one(calls)
    cfg = ml_collections.ConfigDict(dict(seed=0, num_steps=3, lr=0.5))
    out = seeds_lib.run_seeds(tmp_path, cfg, [2, 0, 5], run_one, experiment="toy", fields=fields)
    assert calls == [(2, "seed_2"), (0, "seed_0"), (5, "seed_5")] and cfg.seed == 0
    results_lib.check(out, seeds=[2, 0, 5])
    for seed in (2, 0, 5):
        own = json.loads((tmp_path / f"seed_{seed}" / "results.json").read_text())
        assert own["per_seed"] == {str(seed): out["per_seed"][str(seed)]}
        assert (
            json.loads((tmp_path / f"seed_{seed}" / "run.json").read_text())["config"]["seed"]
            == seed
        )
        assert out["runs"][str(seed)] == own["results_path"]
    scores = [0.1 * s + 0.5 for s in (2, 0, 5)]
    assert out["mean_std"]["score"]["mean"] == pytest.approx(np.mean(scores), abs=1e-12)
    assert out["mean_std"]["score"]["std"] == pytest.approx(np.std(scores), abs=1e-12)
    assert out["mean_std"]["nested.n"]["values"] == [4, 0, 25]
    assert out["config"]["seed"] is None and out["paper"] == {"score": 0.9}
    assert json.loads((tmp_path / "results.json").read_text()) == out
    assert (tmp_path / "results.json").is_symlink()
    record = json.loads((tmp_path / wd.SEEDS_FILE).read_text())
    assert record["experiment"] == "toy" and record["seeds"] == [0, 2, 5]

    # fewer seeds: their own aggregate, the first one kept
    first = pathlib.Path(out["results_path"])
    again = seeds_lib.run_seeds(tmp_path, cfg, [0], run_one, experiment="toy", fields=fields)
    assert pathlib.Path(again["results_path"]) != first and first.exists()
    assert again["per_seed"]["0"] == out["per_seed"]["0"]

    # an aggregate hook's files are linked from the workdir; a later aggregate without them
    # unlinks them (the files stay in the earlier aggregate's folder)
    def with_curve(docs, folder):
        (folder / "curve.json").write_text(json.dumps(sorted(docs)))
        return {"curve_seeds": sorted(docs)}

    doc = seeds_lib.run_seeds(
        tmp_path, cfg, [2, 0], run_one, experiment="toy", fields=fields, aggregate=with_curve
    )
    assert doc["curve_seeds"] == [0, 2] and json.loads((tmp_path / "curve.json").read_text()) == [
        0,
        2,
    ]
    curve = pathlib.Path(doc["results_path"]).parent / "curve.json"
    seeds_lib.run_seeds(tmp_path, cfg, [2], run_one, experiment="toy", fields=fields)
    assert not (tmp_path / "curve.json").exists() and curve.exists()
    assert (tmp_path / "results.json").is_symlink()

    # a training change is refused for every seed before any seed runs
    calls.clear()
    changed = ml_collections.ConfigDict(dict(cfg.to_dict(), lr=0.1))
    with pytest.raises(wd.WorkdirError, match="lr: 0.5 -> 0.1"):
        seeds_lib.run_seeds(tmp_path, changed, [9, 5], run_one, experiment="toy", fields=fields)
    assert calls == [] and not (tmp_path / "seed_9").exists()
    # a single run in the parent is refused, and --seeds in a single run's workdir
    with pytest.raises(wd.WorkdirError, match="holds one run per seed"):
        wd.start(tmp_path, cfg, experiment="toy", fields=fields, data={})
    # an empty seeds.json (not written by --seeds) says what the file means and what to do
    emptied = tmp_path / "emptied"
    emptied.mkdir()
    (emptied / wd.SEEDS_FILE).write_text("")
    with pytest.raises(wd.WorkdirError, match="seeds.json is empty or unreadable.*remove"):
        wd.start(emptied, cfg, experiment="toy", fields=fields, data={})
    single = tmp_path / "single"
    wd.start(single, cfg, experiment="toy", fields=fields, data={})
    with pytest.raises(wd.WorkdirError, match="holds a single run"):
        seeds_lib.run_seeds(single, cfg, [0], run_one, experiment="toy", fields=fields)
    with pytest.raises(wd.WorkdirError, match="holds seeds of a 'toy' run; this is 'other'"):
        seeds_lib.run_seeds(tmp_path, cfg, [0], run_one, experiment="other", fields=fields)


@pytest.mark.real_data
def test_dsprites_fidelity_writes_the_schema(tmp_path, data_dir):
    from vae_xai.experiments import dsprites_fidelity

    out = tmp_path / "fidelity.json"
    summary = dsprites_fidelity.run(data_dir, out, every=160)
    written = json.loads(out.read_text())
    results_lib.check(written, seeds=[0])
    assert written["experiment"] == "dsprites_fidelity"
    assert written["per_seed"]["0"]["mean_iou"] == summary["mean_iou"]
    assert written["config"] == {"every": 160, "radius": 1, "exhaustive": 0}
    assert written["data"]["files"]["num_files"] == 1
    assert out.with_suffix(".png").stat().st_size > 0


def test_differences_compares_every_number_exactly_and_leaves_out_timings():
    a = {"per_seed": {"0": {"m": {"auroc": 0.75, "wall_s": 3.0}, "curve": [1.0, 2.0],
                            "digits": [{"x": 1}], "nan": float("nan"), "name": "a"}}}  # fmt: skip
    same = json.loads(json.dumps(a))
    same["per_seed"]["0"]["m"]["wall_s"] = 9.0  # a timing differs: not a result
    out = results_lib.differences(a, same)
    assert out == {"compared": 4, "differ": {}, "only_a": [], "only_b": []}  # NaN == NaN
    other = json.loads(json.dumps(a))
    other["per_seed"]["0"]["m"]["auroc"] = 0.75 + 1e-12  # one ulp-scale change is a change
    other["per_seed"]["0"]["curve"] = [1.0, 2.5]
    other["per_seed"]["0"]["digits"].append({"x": 2})
    out = results_lib.differences(a, other)
    assert out["differ"] == {"0.m.auroc": [0.75, 0.75 + 1e-12], "0.curve": [[1.0, 2.0], [1.0, 2.5]]}
    assert out["only_b"] == ["0.digits.1.x"] and out["only_a"] == []


def test_compare_results_launcher_exit_codes(tmp_path):
    import subprocess
    import sys

    doc = {"per_seed": {"0": {"score": 0.5}}, "mean_std": {}}
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "results.json").write_text(json.dumps(doc))
    (tmp_path / "b.json").write_text(
        json.dumps({"per_seed": {"0": {"score": 0.6}}, "mean_std": {}})
    )

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "experiments.compare_results", *args],
            cwd=HERE.parent, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    same = run(f"--a={tmp_path / 'a'}", f"--b={tmp_path / 'a' / 'results.json'}")
    assert same.returncode == 0 and json.loads(same.stdout)["compared"] == 1
    differ = run(f"--a={tmp_path / 'a'}", f"--b={tmp_path / 'b.json'}")
    assert differ.returncode == 1 and json.loads(differ.stdout)["differ"] == {"0.score": [0.5, 0.6]}
    missing = run(f"--a={tmp_path / 'nope'}", f"--b={tmp_path / 'b.json'}")
    assert (
        missing.returncode == 2 and "--a: " in missing.stderr and "nope not found" in missing.stderr
    )

"""Table 3 along training: scores at kept steps, their reuse, and the paired comparison."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from experiments.configs.dsprites_disentanglement import get_config
from vae_xai import validation
from vae_xai.experiments import dsprites_curves as curves_lib
from vae_xai.experiments import dsprites_disentanglement as ds
from vae_xai.experiments.dsprites_disentanglement import validate


def smoke(num_steps: int, **overrides):
    c = get_config("factorvae,smoke")
    c.train.num_steps, c.train.checkpoint_every = num_steps, 1
    c.eval.metrics = ("factor_vae", "mig")
    for k, v in overrides.items():
        c.train[k] = v
    return c


@pytest.mark.e2e
def test_curve_scores_equal_a_run_stopped_at_that_step_and_are_never_recomputed(
    tmp_path, monkeypatch
):
    long = tmp_path / "long"
    out = ds.train_and_evaluate(smoke(4, keep_every=2), long, seeds=[0], curve_every=2)
    assert out["summary"]  # the final evaluation is written as without the curve
    curve = json.loads((long / "curve.json").read_text())  # linked from the workdir
    assert curve["steps"] == [2, 4]
    assert (long / "curve.png").stat().st_size > 0
    at2 = curve["curve"][0]["per_seed"]["0"]
    # independent reference: the same seed trained to step 2 only, scored the usual way
    short = ds.train_and_evaluate(smoke(2), tmp_path / "short", seeds=[0])
    ref = short["per_seed"]["0"]
    assert at2["factor_vae_score"] == ref["factor_vae"]["eval_accuracy"]
    assert at2["mig"] == ref["mig"]["discrete_mig"]
    final = curve["curve"][1]["per_seed"]["0"]
    assert final["factor_vae_score"] == out["per_seed"]["0"]["factor_vae"]["eval_accuracy"]
    # the step-2 evaluation has its own results.json, not linked from the seed's run
    own = json.loads((long / "seed_0" / "results.json").read_text())
    assert own["evaluation"]["step"] == 4 and own["per_seed"]["0"]["curve"]["2"] == at2

    def no_scoring(*args, **kwargs):
        raise AssertionError("a scored step was scored again")

    monkeypatch.setattr(ds, "evaluate", no_scoring)
    again = ds.train_and_evaluate(smoke(4, keep_every=2), long, seeds=[0], curve_every=2)
    assert again["summary"] == out["summary"]


def test_curve_every_must_be_a_multiple_of_the_kept_steps():
    with pytest.raises(validation.ConfigError, match="curve_every.*keep_every=0"):
        ds.curve_steps(smoke(4), 2)
    with pytest.raises(validation.ConfigError, match="multiple of config.train.keep_every"):
        ds.curve_steps(smoke(10, keep_every=2), 3)
    with pytest.raises(validation.ConfigError, match="positive integer"):
        ds.curve_steps(smoke(10, keep_every=2), 2.0)
    assert ds.curve_steps(smoke(9, keep_every=2), 4) == [4, 8, 9]
    with pytest.raises(validation.ConfigError, match="keep_every"):
        validate(smoke(10, keep_every=3, checkpoint_every=2))


def test_paired_difference_matches_scipy_paired_t_test():
    a = {"0": 0.71, "1": 0.80, "2": 0.64}
    b = {"0": 0.69, "1": 0.73, "2": 0.66, "7": 0.5}  # seed 7 has no partner: left out
    d = curves_lib.paired_difference(a, b)
    x, y = [a[s] for s in "012"], [b[s] for s in "012"]
    want = stats.ttest_rel(x, y).confidence_interval(0.95)
    assert d["n"] == 3 and d["seeds"] == [0, 1, 2]
    np.testing.assert_allclose(d["mean"], np.mean(np.subtract(x, y)), rtol=1e-12)
    np.testing.assert_allclose(d["ci95"], [want.low, want.high], rtol=1e-10)
    # hand-computed: differences 0.02, 0.07, -0.02; sd 0.0450925...; t(0.975, 2) = 4.3027
    np.testing.assert_allclose(d["std"], math.sqrt(((0.02 - 0.07 / 3) ** 2 + (0.07 - 0.07 / 3)
                               ** 2 + (-0.02 - 0.07 / 3) ** 2) / 2), rtol=1e-9)  # fmt: skip
    assert d["verdict"] == "no measurable difference"
    clear = curves_lib.paired_difference({"0": 0.9, "1": 0.91}, {"0": 0.5, "1": 0.52})
    assert clear["verdict"] == "higher"
    one = curves_lib.paired_difference({"0": 0.9}, {"0": 0.5})
    assert one["n"] == 1 and "ci95" not in one
    assert curves_lib.paired_difference({"0": 0.9}, {"1": 0.5}) is None


@pytest.mark.parametrize("n", [3, 5])
def test_detectable_difference_has_the_asked_power_in_simulated_paired_t_tests(n):
    # independent reference: draw n normal differences with the returned mean and sd, run
    # scipy's one-sample t-test (= the paired test on differences), count rejections
    sd = 0.07
    delta = curves_lib.detectable_difference(sd, n)
    rng = np.random.default_rng(0)
    draws = rng.normal(delta, sd, size=(200_000, n))
    p = stats.ttest_1samp(draws, 0.0, axis=1).pvalue
    rate = float(np.mean(p < 0.05))
    assert abs(rate - 0.8) < 0.005, rate  # MC standard error ~0.0009
    # and a smaller true difference is detected less often than asked
    draws = rng.normal(0.8 * delta, sd, size=(200_000, n))
    assert float(np.mean(stats.ttest_1samp(draws, 0.0, axis=1).pvalue < 0.05)) < 0.75


def test_detectable_difference_limits_and_errors():
    # large n: the normal approximation (z_0.975 + z_0.8) * sd / sqrt(n)
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)  # 1.95996 + 0.84162
    np.testing.assert_allclose(curves_lib.detectable_difference(1.0, 40_000), z / 200, rtol=2e-4)
    # linear in sd; fewer seeds need a larger effect
    d3 = curves_lib.detectable_difference(0.05, 3)
    np.testing.assert_allclose(curves_lib.detectable_difference(0.10, 3), 2 * d3, rtol=1e-9)
    assert (
        curves_lib.detectable_difference(0.05, 2) > d3 > curves_lib.detectable_difference(0.05, 4)
    )
    assert curves_lib.detectable_difference(0.0, 3) == 0.0
    assert curves_lib.detectable_difference(0.05, 1) is None
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="sd must be finite"):
            curves_lib.detectable_difference(bad, 3)
    with pytest.raises(ValueError, match="alpha < power"):
        curves_lib.detectable_difference(0.1, 3, power=0.01)
    # paired_difference reports it for its own spread
    d = curves_lib.paired_difference({"0": 0.71, "1": 0.80, "2": 0.64}, {"0": 0.69, "1": 0.73,
                                                                        "2": 0.66})  # fmt: skip
    np.testing.assert_allclose(
        d["detectable80"], curves_lib.detectable_difference(d["std"], 3), rtol=1e-12
    )


def _curve(method, rows):
    return {
        "method": method,
        "steps": [r[0] for r in rows],
        "curve": [
            {
                "step": step,
                "per_seed": {str(i): {"factor_vae_score": v} for i, v in enumerate(vals)},
                "summary": {
                    "factor_vae_score": {
                        "mean": float(np.mean(vals)),
                        "std": float(np.std(vals)),
                        "values": vals,
                    }
                },
            }
            for step, vals in rows
        ],
        "train_s_per_step": {"0": 0.2, "1": 0.4},
    }


def test_compare_writes_tables_and_figures(tmp_path, monkeypatch):
    for name, rows in {
        "fv": ("factorvae", [(10, [0.5, 0.6]), (20, [0.7, 0.8])]),
        "ad": ("ad_factorvae", [(10, [0.6, 0.6]), (20, [0.75, 0.9])]),
    }.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "curve.json").write_text(json.dumps(_curve(*rows)))
    runs = {"factorvae": tmp_path / "fv", "ad_factorvae": tmp_path / "ad"}
    out = curves_lib.compare(runs, tmp_path / "out")
    assert out["pair"] == ["ad_factorvae", "factorvae"]
    step20 = out["paired_difference"][1]
    assert step20["step"] == 20
    np.testing.assert_allclose(step20["factor_vae_score"]["differences"], [0.05, 0.1])
    assert step20["beta_vae_score"] is None  # not scored: no pairs
    np.testing.assert_allclose(out["train_s_per_step"]["factorvae"], 0.3)
    md = (tmp_path / "out" / "curves.md").read_text()
    assert "| ad_factorvae | 20 | 0.825 +- 0.075 (n=2) |" in md
    assert (tmp_path / "out" / "curves.png").stat().st_size > 0
    assert (tmp_path / "out" / "paired.png").stat().st_size > 0
    # what the paired figure draws: each seed's difference, the mean with its t-interval,
    # zero and the paper's AD - FactorVAE difference (0.93 - 0.82)
    drawn = {}
    monkeypatch.setattr(curves_lib.plots, "save_curves", lambda path, panels, **kw: drawn.update(
        panels=panels, **kw))  # fmt: skip
    curves_lib.save_paired_figure(tmp_path / "unused.png", out)
    fv = drawn["panels"]["FactorVAE score"]
    x, y, lo, hi = fv["mean, 95% t-interval (n=2)"]
    assert x == [10, 20]
    np.testing.assert_allclose(y, [0.05, 0.075])
    np.testing.assert_allclose([lo[1], hi[1]], step20["factor_vae_score"]["ci95"])
    np.testing.assert_allclose(fv["seed 0"][1], [0.1, 0.05])  # seed 0: 0.6-0.5, 0.75-0.7
    np.testing.assert_allclose(fv["seed 1"][1], [0.0, 0.1])
    assert "beta-VAE score" not in drawn["panels"]  # never scored
    refs = drawn["hlines"]["FactorVAE score"]
    assert refs[0][0] == 0.0 and abs(refs[1][0] - 0.11) < 1e-12
    none_shared = {**out, "paired_difference": [{"step": 10, **dict.fromkeys(curves_lib.METRICS)}]}
    with pytest.raises(ValueError, match="share no scored seed"):
        curves_lib.save_paired_figure(tmp_path / "unused.png", none_shared)
    # a later comparison without a pair into the same folder leaves no stale paired figure
    curves_lib.compare({"factorvae": tmp_path / "fv"}, tmp_path / "out")
    assert not (tmp_path / "out" / "paired.png").exists()
    with pytest.raises(FileNotFoundError, match="curve.json not found"):
        curves_lib.compare({"x": tmp_path}, tmp_path / "out2")
    with pytest.raises(ValueError, match="label=workdir"):
        curves_lib.parse_runs(["factorvae"])


def test_curve_figure_draws_each_methods_paper_value_once(tmp_path, monkeypatch):
    # an ablation: three labels of one method (its weight varied) and FactorVAE
    curves = {
        "factorvae": _curve("factorvae", [(10, [0.5])]),
        "ad_factorvae": _curve("ad_factorvae", [(10, [0.6])]),
        "ad_lambda10": _curve("ad_factorvae", [(10, [0.7])]),
        "ad_lambda40": _curve("ad_factorvae", [(10, [0.4])]),
    }
    drawn = {}
    monkeypatch.setattr(ds.plots, "save_curves", lambda path, panels, **kw: drawn.update(
        panels=panels, **kw))  # fmt: skip
    ds.save_curve_figure(tmp_path / "unused.png", curves)
    assert len(drawn["panels"]["FactorVAE score"]) == 4  # every label is drawn
    # Table 3: FactorVAE 0.82, AD-FactorVAE 0.93, each once, beside its first label
    assert sorted(drawn["hlines"]["FactorVAE score"]) == [
        (0.82, "paper factorvae 0.82", "factorvae (n="),
        (0.93, "paper ad_factorvae 0.93", "ad_factorvae (n="),
    ]


def _events(folder, points, monkeypatch):
    """Write one event file of (step, wall time) scalar points, the wall times as given."""
    from vae_xai import metric_writer as mw

    clock = iter([points[0][1]] * 2 + [w for _, w in points])  # file name, header, each point
    monkeypatch.setattr(mw.time, "time", lambda: next(clock))
    with mw.MetricWriter(folder) as w:
        for step, _ in points:
            w.write_scalars(step, {"loss": 1.0})
    monkeypatch.undo()


def test_step_seconds_from_event_files_by_hand(tmp_path, monkeypatch):
    seed = tmp_path / "seed_0"
    # first process: 100-step stretches of 20 s, 30 s, 25 s, then a 600 s pause (SIGSTOP)
    _events(seed, [(100, 1000.0), (200, 1020.0), (300, 1050.0), (400, 1075.0), (500, 1675.0)],
            monkeypatch)  # fmt: skip
    # a second file (a resumed process): its gap to the first is no stretch
    _events(seed, [(400, 9000.0), (500, 9022.0)], monkeypatch)
    got = curves_lib.step_seconds(seed)
    rates = [0.20, 0.30, 0.25, 6.00, 0.22]  # seconds per step of each stretch, by hand
    assert got["stretches"] == 5 and got["steps"] == 500
    np.testing.assert_allclose(got["median"], 0.25)
    np.testing.assert_allclose([got["p10"], got["p90"]], np.percentile(rates, [10, 90]))
    assert curves_lib.step_seconds(tmp_path / "nothing") is None

    # compare() reports them per seed and the ratio of the pair
    for name, method, per_step in (("fv", "factorvae", 100.0), ("ad", "ad_factorvae", 110.0)):
        run = tmp_path / name
        (run).mkdir()
        (run / "curve.json").write_text(json.dumps(_curve(method, [(10, [0.5, 0.6])])))
        for s in (0, 1):
            k = per_step * (1 + s)  # seconds per 100 steps; seed 1 twice as slow
            _events(run / f"seed_{s}", [(0, 0.0), (100, k), (300, 3 * k)], monkeypatch)
    out = curves_lib.compare({"factorvae": tmp_path / "fv", "ad_factorvae": tmp_path / "ad"},
                             tmp_path / "out")  # fmt: skip
    t = out["step_seconds"]
    np.testing.assert_allclose(t["factorvae"]["per_seed"]["1"]["median"], 2.0)
    np.testing.assert_allclose(t["factorvae"]["mean_of_medians"], 1.5)
    np.testing.assert_allclose(t["ratio"]["value"], 1.1)
    md = (tmp_path / "out" / "curves.md").read_text()
    assert "ad_factorvae / factorvae seconds per step: 1.100" in md


def _seed_workdir(
    path,
    method,
    scores_by_seed,
    *,
    steps=(10, 20),
    lr=1e-4,
    log_every=100,
    first_num_steps=None,
    eval_size=10_000,
    scored_size=10_000,
    data="renderer",
):
    """A scored workdir (curve.json) whose seeds each have the run.json and final results.json
    a trained one has (``first_num_steps``: the run was first started for fewer steps)."""
    path.mkdir(parents=True)
    record = {
        "method": method,
        "variant": "full",
        "num_steps": steps[-1],
        "steps": list(steps),
        "curve": [
            {
                "step": step,
                "per_seed": {s: {"factor_vae_score": v[i]} for s, v in scores_by_seed.items()},
                "summary": {},
            }
            for i, step in enumerate(steps)
        ],
        "train_s_per_step": {s: 0.1 * (int(s) + 1) for s in scores_by_seed},
    }
    (path / "curve.json").write_text(json.dumps(record))
    for s in scores_by_seed:
        (path / f"seed_{s}").mkdir()

        def config(num_steps, s=s):
            return {"seed": int(s), "method": method, "variant": "full",
                    "optim": {"vae_lr": lr}, "eval": {"factor_vae_size": eval_size},
                    "train": {"num_steps": num_steps, "log_every": log_every}}  # fmt: skip

        run = {
            "config": config(first_num_steps or steps[-1]),
            "last_config": config(steps[-1]),
            "data": {"source": data},
            "git": {"commit": f"c{s}"},
            "fields": {
                "num_steps": "train.num_steps",
                "eval": ["eval"],
                "schedule": ["train.log_every"],
                "labels": ["variant"],
            },  # fmt: skip
        }
        (path / f"seed_{s}" / "run.json").write_text(json.dumps(run))
        final = {"evaluation": {"config": {"eval": {"factor_vae_size": scored_size}}}}
        (path / f"seed_{s}" / "results.json").write_text(json.dumps(final))
    return path


def test_a_label_given_twice_merges_the_seeds_of_its_workdirs(tmp_path, monkeypatch):
    a = _seed_workdir(tmp_path / "a", "factorvae", {"0": [0.5, 0.7], "1": [0.6, 0.8]})
    # seed 2 trained elsewhere: logged at another period and first started for 10 steps (not
    # the model's config), and its run config names other metric sizes than it was scored
    # with at the end (the evaluation compared is the one that scored it)
    b = _seed_workdir(tmp_path / "b", "factorvae", {"2": [0.4, 0.9]}, log_every=50,
                      first_num_steps=10, eval_size=500)  # fmt: skip
    _events(b / "seed_2", [(0, 0.0), (100, 30.0), (200, 60.0)], monkeypatch)
    ad = _seed_workdir(tmp_path / "ad", "ad_factorvae", {"0": [0.6, 0.8], "2": [0.5, 0.8]})
    runs = curves_lib.parse_runs([f"factorvae={a}", f"ad_factorvae={ad}", f"factorvae={b}"])
    assert runs == {"factorvae": [str(a), str(b)], "ad_factorvae": [str(ad)]}
    out = curves_lib.compare(runs, tmp_path / "out")
    fv = out["curves"]["factorvae"]
    assert fv["sources"] == {"0": str(a), "1": str(a), "2": str(b)}
    assert fv["commits"] == {"0": "c0", "1": "c1", "2": "c2"}
    assert out["curves"]["ad_factorvae"]["commits"] == {"0": "c0", "2": "c2"}
    step20 = fv["curve"][1]["summary"]["factor_vae_score"]
    np.testing.assert_allclose(step20["values"], [0.7, 0.8, 0.9])
    np.testing.assert_allclose([step20["mean"], step20["std"]], [0.8, np.std([0.7, 0.8, 0.9])])
    # the pair: seeds 0 and 2 (1 has no AD-FactorVAE run), AD - FV = +0.1 and -0.1 at step 20
    d = out["paired_difference"][1]["factor_vae_score"]
    assert d["seeds"] == [0, 2]
    np.testing.assert_allclose(d["differences"], [0.1, -0.1])
    md = (tmp_path / "out" / "curves.md").read_text()
    assert "| factorvae | 20 | 0.800 +- 0.082 (n=3) |" in md
    assert out["runs"]["factorvae"] == [str(a.absolute()), str(b.absolute())]
    # seed 2's timing is read from its own workdir (b), the only one with event files
    assert list(out["step_seconds"]["factorvae"]["per_seed"]) == ["2"]
    np.testing.assert_allclose(out["step_seconds"]["factorvae"]["per_seed"]["2"]["median"], 0.3)


def test_merging_refuses_what_is_not_one_method_s_seeds(tmp_path):
    a = _seed_workdir(tmp_path / "a", "factorvae", {"0": [0.5, 0.7]})

    def other(name, **kw):
        return _seed_workdir(tmp_path / name, kw.pop("method", "factorvae"), {"1": [1, 1]}, **kw)

    with pytest.raises(ValueError, match=r"seed 0 is in both .*a and .*again"):
        curves_lib.merge_curves([a, _seed_workdir(tmp_path / "again", "factorvae", {"0": [1, 1]})])
    with pytest.raises(ValueError, match=r"another config .*optim.vae_lr: 0.0001 vs 0.001"):
        curves_lib.merge_curves([a, other("lr", lr=1e-3)])
    with pytest.raises(ValueError, match=r"other data .*: source: 'renderer' vs 'npz'"):
        curves_lib.merge_curves([a, other("data", data="npz")])
    with pytest.raises(
        ValueError, match=r"another evaluation config .*factor_vae_size: 10000 vs 500"
    ):
        curves_lib.merge_curves([a, other("scored", scored_size=500)])
    with pytest.raises(ValueError, match="cannot merge .*: method differs"):
        curves_lib.merge_curves([a, other("ad", method="ad_factorvae")])
    with pytest.raises(ValueError, match="cannot merge .*: num_steps differs"):
        curves_lib.merge_curves([a, other("n", steps=(10, 30))])
    with pytest.raises(ValueError, match="cannot merge .*: steps differs"):
        curves_lib.merge_curves([a, other("s", steps=(5, 20))])
    no_run = other("norun")
    (no_run / "seed_1" / "run.json").unlink()
    with pytest.raises(ValueError, match=r"seed_1/run.json: cannot read the seed's run record"):
        curves_lib.merge_curves([a, no_run])
    no_results = other("noresults")
    (no_results / "seed_1" / "results.json").unlink()
    with pytest.raises(ValueError, match=r"seed_1/results.json: cannot read the seed's final"):
        curves_lib.merge_curves([a, no_results])
    with pytest.raises(ValueError, match=r"workdir .*again/\.\./a given twice"):
        curves_lib.merge_curves([a, tmp_path / "again" / ".." / "a"])
    with pytest.raises(ValueError, match="given twice"):
        curves_lib.parse_runs([f"factorvae={a}", f"factorvae={a}"])
    with pytest.raises(ValueError, match="no workdir"):
        curves_lib.merge_curves([])
    # a key on one side only is named, not left out of the message
    assert curves_lib._config_diff({"x": None}, {}) == ["x: None vs <missing>"]

"""Table 3 along training: several dSprites runs' score curves side by side.

The library side of ``python -m experiments.dsprites_curves`` (usage there). Each run is a
``dsprites_disentanglement`` workdir trained with ``--config.train.keep_every`` and scored with
``--curve_every`` (its ``curve.json``, :func:`vae_xai.experiments.dsprites_disentanglement.
curve_record`), or several such workdirs holding one method's seeds (:func:`merge_curves`).
This module puts them in one table (mean +- std over seeds at each step),
one figure (score against step, the paper's values and the independent reproduction's
plateau as reference lines), and a paired comparison of two methods over the seeds they
share: per step, the per-seed differences, their mean, a 95% t-interval, and the smallest
true difference that many seeds would detect (:func:`detectable_difference`).
"""

from __future__ import annotations

import json
import math
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import optimize, stats

from vae_xai import plots
from vae_xai import workdir as workdir_lib
from vae_xai.experiments import dsprites_disentanglement as ds
from vae_xai.experiments import paper
from vae_xai.metric_writer import read_scalars

__all__ = [
    "compare",
    "detectable_difference",
    "load_curve",
    "merge_curves",
    "paired_difference",
    "parse_runs",
    "save_paired_figure",
    "step_seconds",
    "table_markdown",
]

METRICS = ("factor_vae_score", "beta_vae_score", "mig")


def load_curve(workdir: str | pathlib.Path) -> dict[str, Any]:
    """The ``curve.json`` of a dSprites workdir.

    Args:
      workdir: a ``dsprites_disentanglement`` workdir scored with ``--curve_every``.

    Returns:
      The curve record (:func:`vae_xai.experiments.dsprites_disentanglement.curve_record`).

    Raises:
      FileNotFoundError: no ``curve.json`` (the message names the file and the command).
      ValueError: the file is not valid JSON.
    """
    path = pathlib.Path(workdir) / ds.CURVE_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: score the run along training first (python -m "
            "experiments.dsprites_disentanglement ... --config.train.keep_every=K --curve_every=K)"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); rerun the scoring command") from err


_MISSING = type("_Missing", (), {"__repr__": lambda self: "<missing>"})()


def _seed_identity(workdir: pathlib.Path, seed: str) -> dict[str, Any]:
    """What makes a seed's scores comparable with another seed's of the same method.

    ``train``: the config fields that change the trained model (the workdir record's kind
    ``"train"``, of the latest start, without the seed), ``data``: the data record,
    ``scoring``: the final evaluation's config (metric sizes, the images scored), and
    ``commit``: the commit that started the run.
    """
    folder = workdir / f"seed_{seed}"
    try:
        run = json.loads((folder / workdir_lib.RUN_FILE).read_text())
        fields = workdir_lib.Fields(**run["fields"])
        config = workdir_lib.flatten(run.get("last_config", run["config"]))
        data = workdir_lib.flatten(run["data"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f"{folder / workdir_lib.RUN_FILE}: cannot read the seed's run record ({err}); "
            "merging workdirs needs each seed's run.json (copy the workdir with it, without "
            "the checkpoints)"
        ) from err
    try:
        scoring = json.loads((folder / "results.json").read_text())["evaluation"]["config"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f"{folder / 'results.json'}: cannot read the seed's final evaluation ({err}); "
            "merging workdirs needs it (copy the workdir with it, without the checkpoints)"
        ) from err
    train = {k: v for k, v in config.items() if fields.kind(k) == "train" and k != "seed"}
    return {
        "train": train,
        "data": data,
        "scoring": workdir_lib.flatten(scoring),
        "commit": (run.get("git") or {}).get("commit"),
    }


def merge_curves(workdirs: Sequence[str | pathlib.Path]) -> dict[str, Any]:
    """One method's curve over the seeds of several workdirs.

    For seeds of one method trained in different workdirs (another session or machine), the
    seeds must be disjoint, the curves scored at the same steps, and each seed trained with
    the same config (the fields that change the trained model, as the workdir record compares
    them: not the seed, the checkpoint / log schedule or the evaluation fields) on the same
    data, and scored with the same evaluation config (its final ``results.json``). A copy of
    a workdir without its ``checkpoints`` folders is enough (``curve.json``, each seed's
    ``run.json``, ``results.json`` and event files).

    Args:
      workdirs: dSprites workdirs scored with ``--curve_every``; one is returned as loaded.

    Returns:
      The curve record (:func:`vae_xai.experiments.dsprites_disentanglement.curve_record`)
      over all seeds, with ``sources`` (seed -> workdir) and ``commits`` (seed -> the commit
      that trained it).

    Raises:
      ValueError: no workdir, one workdir twice, a seed in two workdirs, another method /
        number of steps / steps scored, a training config, data or scoring config that
        differs (the message names the fields), or an unreadable ``run.json`` /
        ``results.json``.
    """
    if not workdirs:
        raise ValueError("merge_curves: no workdir given")
    paths = [pathlib.Path(w) for w in workdirs]
    seen: dict[pathlib.Path, pathlib.Path] = {}
    for path in paths:
        if path.resolve() in seen:
            raise ValueError(f"workdir {path} given twice (also as {seen[path.resolve()]})")
        seen[path.resolve()] = path
    records = [load_curve(p) for p in paths]
    first, first_path = records[0], paths[0]
    sources: dict[str, str] = {}
    for path, record in zip(paths, records, strict=True):
        for key in ("method", "num_steps", "steps"):
            if record.get(key) != first.get(key):
                raise ValueError(
                    f"cannot merge {path} with {first_path}: {key} differs "
                    f"({record.get(key)!r} vs {first.get(key)!r})"
                )
        seeds = sorted({s for row in record["curve"] for s in row["per_seed"]}, key=int)
        for seed in seeds:
            if seed in sources:
                raise ValueError(f"seed {seed} is in both {sources[seed]} and {path}")
            sources[seed] = str(path)
    if len(paths) == 1:
        commits = {seed: _commit(paths[0], seed) for seed in sources}
        return {**first, "sources": sources, "commits": commits}
    identities = {
        seed: _seed_identity(pathlib.Path(path), seed)
        for seed, path in sorted(sources.items(), key=lambda kv: int(kv[0]))
    }
    commits = {seed: ident["commit"] for seed, ident in identities.items()}
    ref_seed, ref = next(iter(identities.items()))
    for seed, ident in identities.items():
        for part, what in (("train", "trained with another config"),
                           ("data", "trained on other data"),
                           ("scoring", "scored with another evaluation config")):  # fmt: skip
            if ident[part] != ref[part]:
                diff = _config_diff(ref[part], ident[part])
                raise ValueError(
                    f"seed {seed} ({sources[seed]}) was {what} than seed {ref_seed} "
                    f"({sources[ref_seed]}): {', '.join(diff)}"
                )
    rows = []
    for step in first["steps"]:
        per_seed: dict[str, Any] = {}
        for record in records:
            for row in record["curve"]:
                if row["step"] == step:
                    per_seed.update(row["per_seed"])
        per_seed = dict(sorted(per_seed.items(), key=lambda kv: int(kv[0])))
        rows.append({"step": step, "per_seed": per_seed, "summary": ds._summary(per_seed)})
    wall: dict[str, float] = {}
    for record in records:
        wall.update(record.get("train_s_per_step") or {})
    return {**first, "curve": rows, "train_s_per_step": wall, "sources": sources,
            "commits": commits}  # fmt: skip


def _commit(workdir: pathlib.Path, seed: str) -> str | None:
    """The commit that started a seed's run, or ``None`` when its run.json is not readable."""
    try:
        run = json.loads((workdir / f"seed_{seed}" / workdir_lib.RUN_FILE).read_text())
        return (run.get("git") or {}).get("commit")
    except (OSError, ValueError, AttributeError):
        return None


def _config_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """``key: a -> b`` for each key of two flat configs whose values differ."""
    return [f"{k}: {x!r} vs {y!r}" for k, x, y in workdir_lib.diff_flat(a, b, missing=_MISSING)]


def step_seconds(run_dir: str | pathlib.Path) -> dict[str, Any] | None:
    """Training seconds per step of one seed's run, from its TensorBoard event files.

    Every logged step carries its wall time; each pair of consecutive logged steps in one event
    file (one process) gives ``seconds / steps`` of that stretch. The median over the
    stretches is robust to what ``train_wall.json`` misses or inflates: processes killed
    without saving their time, pauses, compilation (before the first logged step of each
    process, never inside a stretch).

    Args:
      run_dir: the seed's folder (``workdir/seed_N``, its ``events.out.tfevents.*``).

    Returns:
      ``{"median", "p10", "p90", "stretches", "steps"}`` (seconds per step; the number of
      stretches and the steps they cover), or ``None`` without two logged steps in a file.
    """
    rates, steps = [], 0
    for path in sorted(pathlib.Path(run_dir).glob("events.out.tfevents.*")):
        points = [(step, wall) for step, wall, _ in read_scalars(path)]
        for (s0, w0), (s1, w1) in zip(points, points[1:], strict=False):
            if s1 > s0:
                rates.append((w1 - w0) / (s1 - s0))
                steps += s1 - s0
    if not rates:
        return None
    r = np.asarray(rates)
    return {
        "median": float(np.median(r)),
        "p10": float(np.percentile(r, 10)),
        "p90": float(np.percentile(r, 90)),
        "stretches": len(rates),
        "steps": int(steps),
    }


def detectable_difference(
    sd: float, n: int, *, power: float = 0.8, alpha: float = 0.05
) -> float | None:
    """The smallest true mean difference a two-sided paired t-test over ``n`` seeds detects
    with probability ``power`` at level ``alpha``, if the per-seed differences spread by ``sd``.

    Solves the exact power of the t-test (noncentral t with ``n - 1`` degrees of freedom,
    noncentrality ``delta * sqrt(n) / sd``) for ``delta``. Fed the observed ``sd``, as
    :func:`paired_difference` does, it says what effect sizes the comparison could have told
    from zero; with few seeds that ``sd`` is itself rough (2 degrees of freedom at ``n = 3``).

    Args:
      sd: standard deviation of the per-seed differences (ddof=1), >= 0.
      n: number of paired seeds.
      power: the detection probability wanted, in (alpha, 1).
      alpha: the test's two-sided level, in (0, 1).

    Returns:
      ``delta >= 0`` (0 when ``sd == 0``), or ``None`` for ``n < 2`` (no test).

    Raises:
      ValueError: a negative or non-finite ``sd``, or ``power``/``alpha`` out of range.
    """
    if not (math.isfinite(sd) and sd >= 0):
        raise ValueError(f"sd must be finite and >= 0, got {sd!r}")
    if not 0 < alpha < 1 or not alpha < power < 1:
        raise ValueError(f"need 0 < alpha < power < 1, got alpha={alpha!r}, power={power!r}")
    if n < 2:
        return None
    if sd == 0:
        return 0.0
    df = n - 1
    t_crit = float(stats.t.ppf(1 - alpha / 2, df))

    def shortfall(nc: float) -> float:
        # P(T > t) + P(T < -t) under noncentrality nc; the lower tail as the upper tail at -nc
        # (the same number: scipy 1.17's nct.cdf returns NaN deep in that tail, sf does not)
        reject = stats.nct.sf(t_crit, df, nc) + stats.nct.sf(t_crit, df, -nc)
        if not math.isfinite(reject):
            raise FloatingPointError(f"noncentral t power is {reject} at df={df}, nc={nc}")
        return float(reject) - power

    hi = t_crit + 1.0
    while shortfall(hi) < 0:
        hi *= 2
    nc = optimize.brentq(shortfall, 0.0, hi, xtol=1e-12, rtol=1e-12)
    return float(nc * sd / math.sqrt(n))


def paired_difference(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, Any] | None:
    """``a - b`` over the seeds both have, with a 95% t-interval of the mean difference.

    Seeds are paired because a seed fixes the data stream and the VAE's initial weights in
    every method.

    Args:
      a: ``{seed: score}`` of one method.
      b: ``{seed: score}`` of the other.

    Returns:
      ``{"n", "seeds", "differences", "mean"}`` and, with two or more shared seeds,
      ``"std"`` (ddof=1), ``"se"``, ``"ci95"`` (Student t, n-1 dof), ``"verdict"`` and
      ``"detectable80"`` (:func:`detectable_difference` at 80% power, two-sided 5%, of the
      observed ``std``); ``None`` without a shared seed.
    """
    seeds = sorted(set(a) & set(b), key=int)
    if not seeds:
        return None
    d = np.array([a[s] - b[s] for s in seeds], np.float64)
    out: dict[str, Any] = {
        "n": len(seeds),
        "seeds": [int(s) for s in seeds],
        "differences": [float(x) for x in d],
        "mean": float(d.mean()),
    }
    if len(d) > 1:
        sd = float(d.std(ddof=1))
        se = sd / math.sqrt(len(d))
        half = float(stats.t.ppf(0.975, len(d) - 1)) * se
        out.update(std=sd, se=se, ci95=[out["mean"] - half, out["mean"] + half])
        lo, hi = out["ci95"]
        out["verdict"] = "higher" if lo > 0 else "lower" if hi < 0 else "no measurable difference"
        out["detectable80"] = detectable_difference(sd, len(d))
    return out


def _per_seed(record: Mapping[str, Any], step: int, metric: str) -> dict[str, float]:
    for row in record["curve"]:
        if row["step"] == step:
            return {s: v[metric] for s, v in row["per_seed"].items() if metric in v}
    return {}


def _workdirs(value: str | pathlib.Path | Sequence[str | pathlib.Path]) -> list[pathlib.Path]:
    if isinstance(value, (str, pathlib.Path)):
        return [pathlib.Path(value)]
    return [pathlib.Path(v) for v in value]


def compare(
    runs: Mapping[str, str | pathlib.Path | Sequence[str | pathlib.Path]],
    out_dir: str | pathlib.Path,
    *,
    pair: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Combine the curves of ``runs`` (label -> workdir) into ``out_dir``: ``curves.json``,
    ``curves.md`` (the tables), ``curves.png`` (score against step) and, with a pair,
    ``paired.png`` (:func:`save_paired_figure`).

    Args:
      runs: label -> dSprites workdir with a ``curve.json``, or a list of workdirs whose
        seeds make up that label's curve (:func:`merge_curves`).
      out_dir: created if missing; its files are replaced (a ``paired.png`` of an earlier
        comparison is removed when this one has no pair).
      pair: ``(a, b)`` labels for the paired comparison ``a - b``; default
        ``("ad_factorvae", "factorvae")`` when both labels are present.

    Returns:
      What ``curves.json`` holds: each run's curve, the paired comparison per step and
      metric, and each run's training seconds per step.
    """
    if not runs:
        raise ValueError("name at least one run (label=workdir)")
    curves = {label: merge_curves(_workdirs(path)) for label, path in runs.items()}
    if pair is None and {"ad_factorvae", "factorvae"} <= set(curves):
        pair = ("ad_factorvae", "factorvae")
    if pair is not None:
        missing = [p for p in pair if p not in curves]
        if missing:
            raise ValueError(f"pair {pair}: no run labelled {missing}; runs: {sorted(curves)}")
    paired: list[dict[str, Any]] = []
    if pair is not None:
        a, b = (curves[p] for p in pair)
        for step in sorted(set(a["steps"]) & set(b["steps"])):
            row: dict[str, Any] = {"step": step}
            for m in METRICS:
                row[m] = paired_difference(_per_seed(a, step, m), _per_seed(b, step, m))
            paired.append(row)
    cost = {
        label: float(np.mean(list(c["train_s_per_step"].values())))
        for label, c in curves.items()
        if c.get("train_s_per_step")
    }
    timing: dict[str, Any] = {}
    for label, c in curves.items():
        seeds = sorted({s for row in c["curve"] for s in row["per_seed"]}, key=int)
        per_seed = {s: step_seconds(pathlib.Path(c["sources"][s]) / f"seed_{s}") for s in seeds}
        per_seed = {s: v for s, v in per_seed.items() if v is not None}
        if per_seed:
            medians = [v["median"] for v in per_seed.values()]
            timing[label] = {"per_seed": per_seed, "mean_of_medians": float(np.mean(medians))}
    if pair is not None and all(p in timing for p in pair):
        a_s, b_s = (timing[p]["mean_of_medians"] for p in pair)
        timing["ratio"] = {"pair": list(pair), "value": a_s / b_s}
    out = {
        "runs": {label: [str(w.absolute()) for w in _workdirs(p)] for label, p in runs.items()},
        "curves": curves,
        "pair": list(pair) if pair else None,
        "paired_difference": paired,
        "train_s_per_step": cost,
        "step_seconds": timing,
        "paper": dict(paper.TABLE3_FACTOR_VAE_SCORE),
        "independent": paper.TABLE3_INDEPENDENT_CURVES,
    }
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    workdir_lib.write_json_atomic(out_dir / "curves.json", out)
    (out_dir / "curves.md").write_text(table_markdown(out))
    ds.save_curve_figure(out_dir / "curves.png", curves)
    if _any_shared_seed(paired):
        save_paired_figure(out_dir / "paired.png", out)
    else:
        (out_dir / "paired.png").unlink(missing_ok=True)
    return out


def _any_shared_seed(paired: Sequence[Mapping[str, Any]]) -> bool:
    """Whether a step of :func:`compare`'s ``paired_difference`` has a seed both methods scored."""
    return any(row[m] for row in paired for m in METRICS)


def save_paired_figure(path: str | pathlib.Path, out: Mapping[str, Any]) -> pathlib.Path:
    """The paired difference against step, one panel per metric: each seed's difference, and
    their mean with its 95% t-interval as the band; zero and, on the FactorVAE score, the
    paper's difference (Table 3) as reference lines.

    Args:
      path: the PNG.
      out: :func:`compare`'s result, with a ``pair``.

    Returns:
      ``path``.

    Raises:
      ValueError: the two methods share no scored seed.
    """
    a, b = out["pair"]
    if not _any_shared_seed(out["paired_difference"]):
        raise ValueError(f"{a} and {b} share no scored seed: no paired difference to draw")
    panels: dict[str, dict[str, tuple]] = {}
    for m, title in ds.CURVE_METRICS.items():
        rows = [(r["step"], r[m]) for r in out["paired_difference"] if r.get(m)]
        if not rows:
            continue
        bounds = [d.get("ci95", (d["mean"], d["mean"])) for _, d in rows]  # n=1: no interval
        lines = {
            f"mean, 95% t-interval (n={max(d['n'] for _, d in rows)})": (
                [s for s, _ in rows],
                [d["mean"] for _, d in rows],
                [lo for lo, _ in bounds],
                [hi for _, hi in bounds],
            )
        }
        for seed in sorted({x for _, d in rows for x in d["seeds"]}):
            pts = [(s, d["differences"][d["seeds"].index(seed)]) for s, d in rows
                   if seed in d["seeds"]]  # fmt: skip
            ys = [y for _, y in pts]
            lines[f"seed {seed}"] = ([s for s, _ in pts], ys, ys, ys)
        panels[title] = lines
    hlines: dict[str, list[tuple]] = {t: [(0.0, "no difference")] for t in panels}
    pa, pb = (out.get("paper", {}).get(out["curves"][k]["method"]) for k in (a, b))
    first = ds.CURVE_METRICS["factor_vae_score"]
    if pa is not None and pb is not None and first in hlines:
        hlines[first].append((pa - pb, f"paper {pa} - {pb} = {pa - pb:+.2f}"))
    return plots.save_curves(
        path,
        panels,
        hlines=hlines,
        title=f"Paired difference {a} - {b} per seed (band: 95% t-interval of the mean)",
    )


def _cell(summary: Mapping[str, Any] | None) -> str:
    if not summary:
        return "-"
    return f"{summary['mean']:.3f} +- {summary['std']:.3f} (n={len(summary['values'])})"


def _diff_cell(d: Mapping[str, Any] | None) -> str:
    if not d:
        return "-"
    if "ci95" not in d:
        return f"{d['mean']:+.3f} (n=1)"
    lo, hi = d["ci95"]
    return f"{d['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}] (n={d['n']})"


def _detectable_cell(d: Mapping[str, Any] | None) -> str:
    if not d or d.get("detectable80") is None:
        return "-"
    return f"{d['detectable80']:.3f} (n={d['n']})"


def table_markdown(out: Mapping[str, Any]) -> str:
    """The Markdown tables of :func:`compare`'s result.

    Scores per step and method (mean +- std over seeds, ddof=0), the paired differences with
    95% t-intervals and the difference detectable at 80% power, and the training cost per step.

    Args:
      out: :func:`compare`'s result.

    Returns:
      The Markdown text.
    """
    lines = ["| method | step | FactorVAE score | beta-VAE score | MIG | paper FactorVAE score |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for label, c in out["curves"].items():
        for row in c["curve"]:
            s = row["summary"]
            paper_score = out["paper"].get(c["method"], "-")
            lines.append(
                f"| {label} | {row['step']} | {_cell(s.get('factor_vae_score'))} | "
                f"{_cell(s.get('beta_vae_score'))} | {_cell(s.get('mig'))} | {paper_score} |"
            )
    if out.get("pair"):
        a, b = out["pair"]
        lines += [
            "",
            f"Paired difference {a} - {b} over seeds: mean [95% t-interval]",
            "",
            "| step | FactorVAE score | beta-VAE score | MIG |",
            "|---|---|---|---|",
        ]
        for row in out["paired_difference"]:
            lines.append(
                f"| {row['step']} | " + " | ".join(_diff_cell(row[m]) for m in METRICS) + " |"
            )
        if any((row[m] or {}).get("detectable80") is not None
               for row in out["paired_difference"] for m in METRICS):  # fmt: skip
            lines += [
                "",
                "Smallest true difference these seeds would detect (two-sided 5% paired t-test, "
                "80% power), given the per-seed differences' observed spread: a true effect "
                "smaller than this could well have given no measurable difference",
                "",
                "| step | FactorVAE score | beta-VAE score | MIG |",
                "|---|---|---|---|",
            ]
            for row in out["paired_difference"]:
                lines.append(
                    f"| {row['step']} | "
                    + " | ".join(_detectable_cell(row[m]) for m in METRICS)
                    + " |"
                )
    timing = out.get("step_seconds") or {}
    labels = [k for k in out["curves"] if k in timing or k in out.get("train_s_per_step", {})]
    if labels:
        lines += [
            "",
            "Training seconds per step: the median over the logged stretches of each seed's event "
            "files (mean over seeds; per seed: median [p10, p90]), and `train_wall.json`'s total "
            "over the steps trained (misses processes killed without saving their time).",
            "",
            "| method | s/step (median) | per seed | train_wall.json s/step |",
            "|---|---|---|---|",
        ]
        for k in labels:
            t = timing.get(k)
            median = f"{t['mean_of_medians']:.3f}" if t else "-"
            seeds = ", ".join(
                f"{s}: {v['median']:.3f} [{v['p10']:.3f}, {v['p90']:.3f}]"
                for s, v in (t["per_seed"].items() if t else [])
            )
            wall = out.get("train_s_per_step", {}).get(k)
            lines.append(
                f"| {k} | {median} | {seeds or '-'} | {'-' if wall is None else f'{wall:.3f}'} |"
            )
        if "ratio" in timing:
            a, b = timing["ratio"]["pair"]
            lines += ["", f"{a} / {b} seconds per step: {timing['ratio']['value']:.3f}"]
    return "\n".join(lines) + "\n"


def parse_runs(values: Sequence[str]) -> dict[str, list[str]]:
    """``["label=workdir", ...]`` -> ``{label: [workdir, ...]}``.

    A label given more than once collects its workdirs: one method's seeds trained in several
    workdirs (:func:`merge_curves`).

    Args:
      values: the ``--runs`` entries.

    Returns:
      ``{label: [workdir, ...]}``, labels in order of first appearance.

    Raises:
      ValueError: an entry without ``=``, or one workdir given twice for a label.
    """
    runs: dict[str, list[str]] = {}
    for v in values:
        label, sep, path = v.partition("=")
        if not sep or not label or not path:
            raise ValueError(f"--runs entries are label=workdir; got {v!r}")
        if path in runs.get(label, []):
            raise ValueError(f"--runs: {label}={path} given twice")
        runs.setdefault(label, []).append(path)
    return runs

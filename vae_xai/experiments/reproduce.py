"""Every table and figure of the paper at its ``full`` setting, in sequence, resumable, sized first.

:data:`JOBS` lists one job per trained configuration: Fig. 1 (quickstart; it has no paper-scale
setting, so its ``cpu`` variant), Fig. 4 (one-class MNIST), the MNIST localization control
(ours), Table 1 (UCSD Ped1), Table 2 (MVTec-AD, one job per category) and Table 3 (dSprites,
one job per method, several seeds). :func:`run` trains and evaluates them one after another,
each in ``workdir/<job>`` through its experiment's own ``train_and_evaluate`` (so a rerun
resumes every job from its checkpoints, and a finished job only re-evaluates), and writes the
paper-vs-ours tables to ``workdir/reproduction.md`` and ``.json``. A job whose data folder is
missing is skipped and reported.

:func:`estimate` runs, for each job, its real code path (data loading, initialization, the
jitted step) inside :func:`vae_xai.train.probe` in a temporary workdir: the first training step
(compilation) and a few more are timed, then the job is stopped. The projection is
``setup + trainings x (first step + s_per_step x (num_steps - 1))`` per job (``trainings``:
seeds x per-digit models), summed per table and in total. Evaluation time is not included
(it is minutes on a CPU for the localization jobs, and measured in each ``results.json``).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import pathlib
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from data_pipelines.mvtec_ad import MVTEC_CATEGORIES
from vae_xai import train
from vae_xai import workdir as workdir_lib

__all__ = ["JOBS", "Job", "estimate", "format_estimate", "run", "select"]

HEADLINE_METRICS = (
    "pixel_auroc",
    "best_iou",
    "aupro",
    "image_auroc",
    "test_auroc",
    "factor_vae_score",
    "beta_vae_score",
    "mig",
)

# ``(experiment, config_arg) -> config``: how the jobs get their configs. The launcher passes
# experiments.configs.get_config (the configs are data of the launchers' package, which this
# library does not import).
GetConfig = Callable[[str, str], Any]


@dataclasses.dataclass(frozen=True)
class Job:
    """One trained configuration of the reproduction.

    Attributes:
      name: the job's folder under the reproduction's workdir.
      table: what it reproduces (``"Table 3"``).
      experiment: the module in :mod:`vae_xai.experiments` and the config's name
        (``experiments/configs/NAME.py``).
      config_arg: the config argument (``"full"``, ``"ad_factorvae"``).
      data: the data folder under ``--data_dir`` (``None``: no data needed).
      category: MVTec-AD category.
      seeds: ``--seeds`` of the job (``None``: the config's seed in the workdir).
    """

    name: str
    table: str
    experiment: str
    config_arg: str
    data: str | None = None
    category: str | None = None
    seeds: tuple[int, ...] | None = None

    def config(self, get_config: GetConfig, overrides: Mapping[str, Any] | None = None) -> Any:
        """``get_config(experiment, config_arg)`` with ``overrides`` applied.

        Args:
          get_config: ``(config name, arg) -> config``.
          overrides: ``{dotted key: value}``.

        Returns:
          The job's config.
        """
        config = get_config(self.experiment, self.config_arg)
        for key, value in (overrides or {}).items():
            node = config
            *parents, leaf = key.split(".")
            for p in parents:
                node = node[p]
            node[leaf] = value
        return config

    def trainings(self, config: Any) -> int:
        """How many models the job trains (seeds x per-digit models).

        Args:
          config: the job's config.

        Returns:
          The count.
        """
        n = len(self.seeds) if self.seeds else 1
        if self.experiment == "mnist_attention":
            n *= len(config.train_digits)
        return n

    def data_dir(self, root: str | pathlib.Path | None) -> pathlib.Path | None:
        """The job's data folder under ``root``.

        Args:
          root: the ``--data_dir`` holding every dataset, or ``None``.

        Returns:
          The folder, or ``None`` for a job without data.

        Raises:
          FileNotFoundError: the job needs data and ``root`` is missing or lacks it.
        """
        if self.data is None:
            return None
        if root is None:
            raise FileNotFoundError(f"job {self.name} needs --data_dir (its data: {self.data})")
        path = pathlib.Path(root) / self.data
        if self.category is not None and not (path / self.category).is_dir():
            raise FileNotFoundError(f"job {self.name}: no category folder {path / self.category}")
        if not path.exists():
            raise FileNotFoundError(f"job {self.name}: no data at {path}")
        return path

    def launch(
        self, config: Any, workdir: pathlib.Path, data_root: Any, *, progress: bool = True
    ) -> dict[str, Any]:
        """This job's ``train_and_evaluate(config, workdir, ...)``.

        Args:
          config: the job's config.
          workdir: the job's workdir.
          data_root: the ``--data_dir`` holding every dataset.
          progress: show progress bars.

        Returns:
          The job's results document.
        """
        lib = importlib.import_module(f"vae_xai.experiments.{self.experiment}")
        kwargs: dict[str, Any] = {"seeds": list(self.seeds) if self.seeds else None}
        if self.data is not None:
            kwargs["data_dir"] = self.data_dir(data_root)
        if self.category is not None:
            kwargs["category"] = self.category
        if self.experiment != "dsprites_disentanglement":
            kwargs["progress"] = progress
        return lib.train_and_evaluate(config, workdir, **kwargs)


UCSD = "UCSD_Anomaly_Dataset.v1p2"
TABLE3_SEEDS = (0, 1, 2)

JOBS: tuple[Job, ...] = (
    Job("fig1_quickstart", "Fig. 1", "quickstart", "cpu"),
    Job("fig4_mnist", "Fig. 4", "mnist_attention", "full", data="mnist"),
    Job("control_mnist_localization", "control (ours)", "mnist_localization", "full", "mnist"),
    Job("table1_ucsd_ped1", "Table 1", "ucsd_localization", "full", data=UCSD),
    *(
        Job(f"table2_mvtec_{c}", "Table 2", "mvtec_localization", "full", "mvtec_ad", c)
        for c in MVTEC_CATEGORIES
    ),
    *(
        Job(f"table3_{m}", "Table 3", "dsprites_disentanglement", m, seeds=TABLE3_SEEDS)
        for m in ("beta_vae", "factorvae", "ad_factorvae")
    ),
)


def num_steps(config: Any) -> int:
    """A config's training steps (``train.num_steps``).

    Args:
      config: an experiment config.

    Returns:
      The steps.
    """
    return int(config.train.num_steps)


def select(names: Sequence[str] | None, jobs: Sequence[Job] = JOBS) -> list[Job]:
    """The jobs named, by job name or table (e.g. ``table3`` or ``table3_factorvae``).

    Args:
      names: the names; ``None`` or empty: every job.
      jobs: the jobs to choose from.

    Returns:
      The jobs, in ``jobs`` order.

    Raises:
      ValueError: an unknown name.
    """
    if not names:
        return list(jobs)
    chosen = []
    for name in names:
        hits = [j for j in jobs if j.name == name or j.name.startswith(name + "_")]
        if not hits:
            raise ValueError(f"no job {name!r}; jobs: {', '.join(j.name for j in jobs)}")
        chosen += [j for j in hits if j not in chosen]
    return chosen


def estimate(
    jobs: Sequence[Job],
    *,
    get_config: GetConfig,
    data_dir: str | pathlib.Path | None,
    steps: int = 5,
    overrides: Mapping[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Time a few steps of each job here and project its training time (module docstring).

    Args:
      jobs: the jobs.
      get_config: ``(config name, arg) -> config``.
      data_dir: the folder holding every dataset (jobs without their data are skipped).
      steps: steps timed per job.
      overrides: ``{dotted key: value}`` applied to every job's config.
      log: where progress lines go.

    Returns:
      The projection per job, per table and in total.
    """
    out: dict[str, Any] = {"jobs": {}, "tables": {}, "probe_steps": steps}
    for job in jobs:
        config = job.config(get_config, overrides)
        entry: dict[str, Any] = {"table": job.table, "num_steps": num_steps(config)}
        try:
            job.data_dir(data_dir)
        except FileNotFoundError as err:
            entry.update(skipped=str(err))
            out["jobs"][job.name] = entry
            log(f"{job.name}: skipped ({err})")
            continue
        with tempfile.TemporaryDirectory(prefix=f"estimate_{job.name}_") as tmp:
            try:
                with train.probe(steps):
                    job.launch(config, pathlib.Path(tmp) / job.name, data_dir, progress=False)
                info = None  # finished within the probe: fewer steps than probed
            except train.ProbeDone as done:
                info = done.info
        trainings = job.trainings(config)
        if info is None:
            entry.update(projected_train_s=None, note="finished inside the probe")
        else:
            per_training = info["compile_s"] + info["s_per_step"] * max(entry["num_steps"] - 1, 0)
            entry.update(
                info,
                trainings=trainings,
                projected_train_s=info["setup_s"] + trainings * per_training,
            )
        out["jobs"][job.name] = entry
        log(f"{job.name}: {_fmt_entry(entry)}")
    for entry in out["jobs"].values():
        t = out["tables"].setdefault(entry["table"], {"projected_train_s": 0.0, "skipped": 0})
        if entry.get("projected_train_s") is None:
            t["skipped"] += 1
        else:
            t["projected_train_s"] += entry["projected_train_s"]
    out["total_projected_train_s"] = sum(t["projected_train_s"] for t in out["tables"].values())
    out["provenance"] = workdir_lib.provenance()
    return out


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def _fmt_entry(entry: Mapping[str, Any]) -> str:
    if "skipped" in entry:
        return f"skipped: {entry['skipped']}"
    if entry.get("projected_train_s") is None:
        return entry.get("note", "-")
    return (
        f"{entry['s_per_step']:.4f} s/step x {entry['num_steps']} steps x {entry['trainings']} "
        f"(first step {entry['compile_s']:.1f} s, setup {entry['setup_s']:.1f} s) -> "
        f"{_hours(entry['projected_train_s'])} of training"
    )


def format_estimate(est: Mapping[str, Any]) -> str:
    """A plain-text table of :func:`estimate`'s projection.

    Args:
      est: :func:`estimate`'s result.

    Returns:
      The table.
    """
    lines = [f"device: {est['provenance']['device']}"]
    for name, entry in est["jobs"].items():
        lines.append(f"  {name:34s} {_fmt_entry(entry)}")
    for table, t in est["tables"].items():
        skipped = f" ({t['skipped']} job(s) skipped)" if t["skipped"] else ""
        lines.append(f"{table:36s} {_hours(t['projected_train_s'])}{skipped}")
    lines.append(f"{'total (training only)':36s} {_hours(est['total_projected_train_s'])}")
    return "\n".join(lines)


def _headline(results: Mapping[str, Any]) -> dict[str, float]:
    """Our numbers to put beside the paper's: a results document's mean over seeds of every
    headline metric (overall rows for localization, the summary for dSprites)."""
    if isinstance(results.get("summary"), Mapping):
        return {
            k: v["mean"]
            for k, v in results["summary"].items()
            if isinstance(v, Mapping) and "mean" in v
        }
    out = {}
    for key, stats in results.get("mean_std", {}).items():
        parts = key.split(".")
        if parts[-1] in HEADLINE_METRICS and ("overall" in parts or len(parts) <= 3):
            out[key] = stats["mean"]
    return out


def run(
    jobs: Sequence[Job],
    workdir: str | pathlib.Path,
    *,
    get_config: GetConfig,
    data_dir: str | pathlib.Path | None,
    overrides: Mapping[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train and evaluate each job in ``workdir/<job>`` (resumable), then write the tables.

    Args:
      jobs: the jobs.
      workdir: the folder of one workdir per job; ``reproduction.md`` goes there.
      get_config: ``(config name, arg) -> config``.
      data_dir: the folder holding every dataset (jobs without their data are skipped).
      overrides: ``{dotted key: value}`` applied to every job's config.
      log: where progress lines go.

    Returns:
      The document written to ``workdir/reproduction.json`` (``jobs``: every job's headline
      numbers next to the paper's; ``provenance``).
    """
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    rows: dict[str, Any] = {}
    for job in jobs:
        try:
            job.data_dir(data_dir)
        except FileNotFoundError as err:
            rows[job.name] = {"table": job.table, "skipped": str(err)}
            log(f"{job.name}: skipped ({err})")
            continue
        log(f"{job.name}: training and evaluating in {workdir / job.name}")
        results = job.launch(job.config(get_config, overrides), workdir / job.name, data_dir)
        rows[job.name] = {
            "table": job.table,
            "paper": results.get("paper"),
            "ours": _headline(results),
            "results": str(results.get("results_path", workdir / job.name / "results.json")),
        }
    doc = {"jobs": rows, "provenance": workdir_lib.provenance()}
    workdir_lib.write_json_atomic(workdir / "reproduction.json", doc)
    (workdir / "reproduction.md").write_text(_markdown(rows))
    return doc


def _markdown(rows: Mapping[str, Any]) -> str:
    lines = [
        "# Reproduction: paper vs ours",
        "",
        "| job | table | paper | ours |",
        "|---|---|---|---|",
    ]
    for name, row in rows.items():
        if "skipped" in row:
            lines.append(f"| {name} | {row['table']} | - | skipped: {row['skipped']} |")
            continue
        paper = json.dumps(row["paper"]) if row["paper"] else "-"
        ours = ", ".join(f"{k} {v:.3f}" for k, v in row["ours"].items()) or "-"
        lines.append(f"| {name} | {row['table']} | {paper} | {ours} |")
    return "\n".join(lines) + "\n"

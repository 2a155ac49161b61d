"""Several seeds of one experiment: ``--seeds=0,1,2`` in every launcher.

Each seed is one run in ``workdir/seed_N`` (its own ``run.json``, checkpoints, evaluations;
:mod:`vae_xai.workdir`), trained with ``config.seed = N``. ``workdir/seeds.json`` records that
the workdir holds one run per seed (so a start without ``--seeds`` there is refused, and a
workdir that holds a single run is refused for ``--seeds``). After every seed, the
aggregate is written through the results schema (:mod:`vae_xai.results`) to
``workdir/evaluations/seeds<0-1-2>_<hash of the seeds' evaluations>/results.json`` and linked
as ``workdir/results.json``: the per-seed numbers are the seeds' own entries, ``mean_std``
their mean +- std. A set of seeds evaluated again with another evaluation config gets a new
folder; no aggregate overwrites another.

Without ``--seeds`` a launcher runs ``config.seed`` in ``workdir`` itself (the README's
``workdirs/quickstart/latent_attention.png``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from vae_xai import results as results_lib
from vae_xai import workdir as workdir_lib
from vae_xai.validation import ConfigError

__all__ = ["parse_seeds", "run_seeds", "seed_config"]


def parse_seeds(values: str | Sequence[str | int] | None) -> list[int] | None:
    """``"0,1,2"`` or ``["0", "1", "2"]`` -> ``[0, 1, 2]``; ``None`` (not given) -> ``None``.

    Args:
      values: the ``--seeds`` flag's value: a comma-separated string or a list.

    Returns:
      The seeds, or ``None`` when ``values`` is ``None``.

    Raises:
      ConfigError (field ``seeds``): a value that is not an integer in [0, 2**32) (what the
        random key holds: seeds equal modulo 2**32 would train the same run twice), a
        repeated seed, or no seed at all in a given value (``--seeds=``).
    """
    if values is None:
        return None
    if isinstance(values, str):
        values = values.split(",")
    items = [str(v).strip() for v in values]
    if not any(items):
        raise ConfigError("seeds", "is empty; name at least one seed (e.g. --seeds=0,1,2)")
    if not all(items):
        raise ConfigError("seeds", f"has an empty entry; got {','.join(items)!r}")
    try:
        seeds = [int(v) for v in items]
    except ValueError:
        raise ConfigError("seeds", f"must be integers >= 0, comma-separated; got {items}") from None
    bad = [s for s in seeds if not 0 <= s < workdir_lib.SEED_LIMIT]
    if bad:
        raise ConfigError("seeds", f"must be integers in [0, 2**32); got {bad}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError("seeds", f"each seed once; got {seeds}")
    return seeds


def seed_config(config: Any, seed: int) -> Any:
    """A copy of ``config`` with ``seed`` set (the config itself is not changed).

    Args:
      config: a ConfigDict or mapping with a ``seed`` field.
      seed: the seed.

    Returns:
      The copy (a ConfigDict for a ConfigDict, else a plain dict).

    Raises:
      ConfigError: the config has no ``seed`` field.
    """
    import ml_collections

    if isinstance(config, ml_collections.ConfigDict):
        out = ml_collections.ConfigDict(config.to_dict())
    else:
        out = json.loads(json.dumps(dict(config), default=str))
    if "seed" not in out:
        raise ConfigError("seed", "the config has no seed field; --seeds cannot set it")
    out["seed"] = int(seed)
    return out


def _link(workdir: pathlib.Path, target: pathlib.Path, copies: set[str]) -> None:
    workdir_lib.replace_link(
        workdir / target.name,
        os.path.relpath(target, workdir),
        workdir / workdir_lib.EVALUATIONS,
        copies=copies,
    )


def _read_record(workdir: pathlib.Path, experiment: str) -> dict[str, Any] | None:
    """``seeds.json``; one that cannot be read is rebuilt from the ``seed_N`` runs (it is
    bookkeeping: which seeds the folder holds), with a warning naming it."""
    path = workdir / workdir_lib.SEEDS_FILE
    if not path.exists():
        return None
    try:
        record = workdir_lib.read_state_json(path, fix="")
        if isinstance(record, dict) and isinstance(record.get("seeds"), list):
            return record
        raise workdir_lib.StateFileError(f"{path} is not a seeds record")
    except workdir_lib.StateFileError as err:
        found = sorted(
            int(p.name[len("seed_") :])
            for p in workdir.glob("seed_*")
            if p.is_dir() and p.name[len("seed_") :].isdigit()
        )
        experiments = set()
        for seed in found:
            run_file = workdir / f"seed_{seed}" / workdir_lib.RUN_FILE
            if run_file.exists():
                run = workdir_lib.read_state_json(run_file, fix=workdir_lib.RUN_FIX)
                experiments.add(run.get("experiment"))
        if len(experiments) > 1:
            raise workdir_lib.StateFileError(
                f"{err}; its seed_N runs are of several experiments {sorted(experiments)}: "
                "restore it from a copy, or use another --workdir"
            ) from err
        logging.warning("%s; rebuilt from the seed_N folders (seeds %s)", err, found)
        now = workdir_lib.provenance()["time"]
        return {
            "experiment": experiments.pop() if experiments else experiment,
            "seeds": found,
            "created": now,
            "starts": [],
            "rebuilt": now,
        }


def _refuse(
    workdir: pathlib.Path,
    record: Mapping[str, Any] | None,
    experiment: str,
    config: Any,
    seeds: Sequence[int],
    fields: workdir_lib.Fields,
) -> None:
    """Raise :class:`~vae_xai.workdir.WorkdirError` unless ``workdir`` may hold these seeds
    (checked before anything is written)."""
    if record is not None and record.get("experiment") != experiment:
        raise workdir_lib.WorkdirError(
            f"{workdir} holds seeds of a {record.get('experiment')!r} run; this is "
            f"{experiment!r}. Use another --workdir."
        )
    others = [p for p in workdir.iterdir() if p.name != workdir_lib.LOCK_FILE]
    if record is None and others:
        raise workdir_lib.WorkdirError(
            f"{workdir} is not empty and holds no {workdir_lib.SEEDS_FILE}: not a workdir of "
            "seeds. Use a new --workdir."
        )
    for seed in seeds:
        workdir_lib.check(
            workdir / f"seed_{seed}",
            seed_config(config, seed),
            experiment=experiment,
            fields=fields,
        )


def run_seeds(
    workdir: str | os.PathLike[str],
    config: Any,
    seeds: Sequence[int],
    run_one: Callable[[Any, pathlib.Path], Mapping[str, Any]],
    *,
    experiment: str,
    fields: workdir_lib.Fields,
    before: Callable[[Mapping[int, Any]], None] | None = None,
    aggregate: Callable[[Mapping[int, Mapping[str, Any]], pathlib.Path], Mapping[str, Any]]
    | None = None,
) -> dict[str, Any] | None:
    """Run ``run_one(config with seed N, workdir/seed_N)`` for each seed, then aggregate.

    ``run_one`` is the experiment's single-run function; it returns the results document it
    wrote (:meth:`vae_xai.workdir.Evaluation.save_results`). Before any seed trains, every
    seed that already has a run record is checked against its config
    (:func:`vae_xai.workdir.check`), so a refused change fails in seconds for all seeds.

    Args:
      workdir: the folder of one run per seed.
      config: the config shared by the seeds (``seed`` is set per seed).
      seeds: the seeds.
      run_one: ``(config, workdir/seed_N) -> results document`` (``None``: trained only;
        then nothing is aggregated and ``None`` is returned).
      experiment: the experiment's name (a workdir of another experiment is refused).
      fields: which config fields may change between starts (:class:`~vae_xai.workdir.Fields`).
      before: called once with ``{seed: config}`` after the checks, before any seed runs
        (e.g. to train all seeds together).
      aggregate: ``(documents by seed, aggregate folder) -> extra entries`` of the aggregate
        ``results.json``; it may write files into the folder, which are linked from the
        workdir with ``results.json``.

    Returns:
      The aggregate results document (schema :mod:`vae_xai.results`), with ``runs``: each
      seed's own ``results.json``; ``None`` when ``run_one`` only trained.

    Raises:
      ConfigError: bad ``seeds`` (:func:`parse_seeds`) or config values.
      WorkdirError: ``workdir`` holds a single run, another experiment's seeds, or other
        files, or a seed's run refuses the config (:func:`vae_xai.workdir.check`).
    """
    workdir = pathlib.Path(workdir)
    seeds = parse_seeds(list(seeds))
    if not seeds:
        raise ConfigError("seeds", "name at least one seed")
    if (workdir / workdir_lib.RUN_FILE).exists():
        raise workdir_lib.WorkdirError(
            f"{workdir} holds a single run ({workdir_lib.RUN_FILE}; started without --seeds): "
            "--seeds runs each seed in workdir/seed_N of a workdir of its own. Use another "
            "--workdir, or drop --seeds to continue that run"
        )
    workdir_lib.check_values(seed_config(config, seeds[0]))
    existed = workdir.exists()
    workdir_lib.lock(workdir)  # held to the end: the aggregate is this invocation's
    path = workdir / workdir_lib.SEEDS_FILE
    try:
        record = _read_record(workdir, experiment)
        _refuse(workdir, record, experiment, config, seeds, fields)
    except BaseException:
        if not existed:
            workdir_lib.release(workdir)
            (workdir / workdir_lib.LOCK_FILE).unlink(missing_ok=True)
            if not any(workdir.iterdir()):
                workdir.rmdir()
        raise
    configs = {seed: seed_config(config, seed) for seed in seeds}

    now = workdir_lib.provenance()["time"]

    if record is None:
        record = {"experiment": experiment, "seeds": [], "created": now, "starts": []}
    record["seeds"] = sorted(set(record["seeds"]) | set(seeds))
    record["starts"] = [*record["starts"], {"time": now, "seeds": seeds}]
    workdir.mkdir(parents=True, exist_ok=True)
    workdir_lib.write_json_atomic(path, record)

    if before is not None:
        before(configs)
    docs = {seed: run_one(cfg, workdir / f"seed_{seed}") for seed, cfg in configs.items()}
    if any(doc is None for doc in docs.values()):  # trained only: nothing to aggregate
        return None

    first = docs[seeds[0]]
    shared = {k: v for k, v in first.items() if k not in results_lib.REQUIRED}
    extra = {
        k: v
        for k, v in shared.items()
        if k not in ("run", "evaluation", "results_path")
        and all(d.get(k) == v for d in docs.values())
    }
    data = [d["data"] for d in docs.values()]
    base = workdir_lib.config_dict(configs[seeds[0]])
    base["seed"] = None
    runs = {str(s): d["results_path"] for s, d in docs.items()}
    evaluated = {
        str(s): d.get("evaluation", {}).get("dir", d["results_path"]) for s, d in docs.items()
    }
    key = json.dumps(evaluated, sort_keys=True)
    name = f"seeds{'-'.join(map(str, seeds))}_{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    target = workdir / workdir_lib.EVALUATIONS / name / "results.json"
    copies = workdir_lib.copied_outputs(workdir)  # (cp -rL) before the aggregate is rewritten
    if aggregate is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        extra = {**extra, **aggregate(docs, target.parent)}
    written = results_lib.write(
        target,
        experiment=experiment,
        config=base,
        data=data[0] if all(d == data[0] for d in data) else dict(zip(runs, data, strict=True)),
        per_seed={s: results_lib.per_seed_entry(d) for s, d in docs.items()},
        extra={**extra, "runs": runs},
    )
    names = {p.name for p in target.parent.iterdir() if p.is_file() and not p.name.startswith(".")}
    for link in workdir.iterdir():  # an earlier aggregate's output this one lacks is unlinked
        if link.name not in names and _links_to_aggregate(link):
            link.unlink()
    for name in sorted(names):
        _link(workdir, target.parent / name, copies)
    return written


def _links_to_aggregate(path: pathlib.Path) -> bool:
    """Whether ``path`` is a link into an aggregate's folder (``evaluations/seeds...``)."""
    if not path.is_symlink():
        return False
    parts = pathlib.PurePath(os.readlink(path)).parts
    return len(parts) == 3 and parts[0] == workdir_lib.EVALUATIONS and parts[1].startswith("seeds")

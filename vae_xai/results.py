"""One results schema for every experiment: ``results.json``.

Every experiment's results file is written by :func:`write` (through
:meth:`vae_xai.workdir.Evaluation.save_results` for one run, :func:`vae_xai.seeds.run_seeds`
for several seeds), so every file has the same top-level fields:

``schema``, ``schema_version``
    ``"vae_xai.results"`` and :data:`SCHEMA_VERSION`.
``experiment``
    the launcher's name (``"mvtec_localization"``, ...).
``config``
    the resolved config the numbers were produced with (for several seeds: the config shared
    by all seeds, ``seed`` set to ``None``; each seed's run sets it).
``data``
    the data identity from the run record (dataset, category, fingerprint).
``seeds``, ``per_seed``
    the seeds, and each seed's numbers keyed by ``str(seed)``: the experiment's own result
    keys (``metrics``, ``latent_detection``, ``kl_per_latent``, ``digits``, ``factor_vae``,
    ...), as each launcher defines them.
``mean_std``
    for every numeric leaf of the per-seed entries (dotted path; a list of mappings is
    descended by position, ``digits.0.x``; other lists and booleans are not leaves),
    ``{"mean", "std", "n", "values"}`` over the seeds that have it; ``std`` is the
    population standard deviation (``ddof=0``), 0 for one seed.
``device``, ``versions``, ``git``, ``date``
    where, with what and from which commit the file was written
    (:func:`vae_xai.provenance.provenance`).

Anything else an experiment adds (``run``/``evaluation`` headers, ``paper``, ``notes``,
``headline``) follows these fields.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

from vae_xai import provenance as provenance_lib

__all__ = [
    "REQUIRED",
    "SCHEMA",
    "SCHEMA_VERSION",
    "check",
    "differences",
    "document",
    "mean_std",
    "numeric_leaves",
    "per_seed_entry",
    "read",
    "write",
]

SCHEMA = "vae_xai.results"
SCHEMA_VERSION = 1
REQUIRED = (
    "schema",
    "schema_version",
    "experiment",
    "config",
    "data",
    "seeds",
    "per_seed",
    "mean_std",
    "device",
    "versions",
    "git",
    "date",
)


def _plain(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def numeric_leaves(tree: Any, prefix: str = "") -> dict[str, float]:
    """Flatten the numeric leaves of nested mappings to dotted paths: ``{"a.b": 1.0, ...}``.

    Int/float leaves count (finite or not); bools, ``None`` and lists of numbers (curves) do
    not. A list of mappings (``digits``: one entry per trained digit) is descended by position
    (``digits.0.auroc``).

    Args:
      tree: nested mappings.
      prefix: prepended to every path (with its trailing dot).

    Returns:
      ``{path: float}``.
    """
    out: dict[str, float] = {}
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            out.update(numeric_leaves(value, f"{prefix}{key}."))
    elif isinstance(tree, list | tuple) and tree and all(isinstance(x, Mapping) for x in tree):
        for i, value in enumerate(tree):
            out.update(numeric_leaves(value, f"{prefix}{i}."))
    elif isinstance(tree, int | float) and not isinstance(tree, bool):
        out[prefix[:-1]] = float(tree)
    return out


def mean_std(per_seed: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Mean, population std, count and values over seeds of every numeric leaf.

    A leaf missing from some seeds is summarized over the seeds that have it (``n`` says how
    many); a non-finite value makes the mean and std non-finite (written as JSON ``NaN``).

    Args:
      per_seed: ``{seed: entry}``.

    Returns:
      ``{path: {"mean", "std", "n", "values"}}`` (see :func:`numeric_leaves` for the paths).
    """
    leaves = {seed: numeric_leaves(entry) for seed, entry in per_seed.items()}
    keys: dict[str, None] = {}
    for flat in leaves.values():
        keys.update(dict.fromkeys(flat))
    out = {}
    for key in keys:
        values = [flat[key] for flat in leaves.values() if key in flat]
        n = len(values)
        mean = math.fsum(values) / n
        var = math.fsum((v - mean) ** 2 for v in values) / n if math.isfinite(mean) else mean
        out[key] = {"mean": mean, "std": math.sqrt(var), "n": n, "values": values}
    return out


def document(
    *,
    experiment: str,
    config: Mapping[str, Any],
    data: Mapping[str, Any] | None,
    per_seed: Mapping[Any, Mapping[str, Any]],
    extra: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the schema's document (see the module docstring).

    Args:
      experiment: the launcher's name.
      config: the resolved config.
      data: the data identity, or ``None``.
      per_seed: ``{seed: that seed's result entry}``.
      extra: further top-level fields, placed after the schema's.
      provenance: a :func:`vae_xai.provenance.provenance` dict; default: now's.

    Returns:
      The JSON-ready document.

    Raises:
      ValueError: ``per_seed`` is empty, or ``extra`` would replace a schema field.
    """
    if not per_seed:
        raise ValueError("results need at least one seed's entry (per_seed is empty)")
    per_seed = {str(k): _plain(v) for k, v in per_seed.items()}
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(REQUIRED))
    if clash:
        raise ValueError(f"extra results fields {clash} would replace schema fields")
    prov = dict(provenance or provenance_lib.provenance())
    seeds = [int(s) if s.lstrip("-").isdigit() else s for s in per_seed]
    doc = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "experiment": experiment,
        "config": _plain(dict(config)),
        "data": _plain(dict(data)) if data is not None else None,
        "seeds": seeds,
        "per_seed": per_seed,
        "mean_std": mean_std(per_seed),
        "device": prov["device"],
        "versions": prov["versions"],
        "git": prov["git"],
        "date": prov["time"],
    }
    return {**doc, **_plain(extra)}


def write(path: str | os.PathLike[str], **kwargs: Any) -> dict[str, Any]:
    """Build :func:`document` and write it to ``path`` atomically.

    Args:
      path: the ``results.json`` to write.
      **kwargs: the keyword arguments of :func:`document`.

    Returns:
      What was written, with ``results_path`` added.
    """
    path = pathlib.Path(path)
    doc = {**document(**kwargs), "results_path": str(path)}
    provenance_lib.write_json_atomic(path, doc)
    return _plain(doc)


def read(
    path: str | os.PathLike[str],
    *,
    hint: str = "",
    require: Sequence[str] = ("per_seed", "mean_std"),
) -> dict[str, Any]:
    """Read a ``results.json`` (or the one in the folder ``path``), checked.

    Args:
      path: the file, or a workdir / evaluation folder holding ``results.json``.
      hint: added to the not-found message (e.g. what kind of run was expected).
      require: the top-level entries the caller reads; one missing is an error.

    Returns:
      The document.

    Raises:
      FileNotFoundError: no such file (names it).
      ValueError: not valid JSON, or an entry of ``require`` missing (not a results-schema
        document); names the file.
    """
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found" + (f": {hint}" if hint else ""))
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); rerun its evaluation") from err
    missing = [k for k in require if not isinstance(doc, dict) or k not in doc]
    if missing:
        raise ValueError(f"{path} has no {', '.join(missing)}: not a results-schema file")
    return doc


def per_seed_entry(doc: Mapping[str, Any], seed: int | str | None = None) -> dict[str, Any]:
    """One seed's entry of a results document.

    Args:
      doc: a results document.
      seed: the seed; ``None``: the only one.

    Returns:
      The entry.

    Raises:
      ValueError: ``seed`` is ``None`` and the document holds several seeds.
      KeyError: no entry for ``seed``.
    """
    entries = doc["per_seed"]
    if seed is None:
        if len(entries) != 1:
            raise ValueError(f"results hold seeds {doc['seeds']}; name one")
        return next(iter(entries.values()))
    return entries[str(seed)]


def check(doc: Mapping[str, Any], seeds: Sequence[int] | None = None) -> None:
    """Check a results document against the schema.

    Args:
      doc: a results document.
      seeds: if given, the seeds it must hold, in order.

    Raises:
      ValueError: naming the first missing schema field, a wrong ``schema`` or a seed mismatch.
    """
    for field in REQUIRED:
        if field not in doc:
            raise ValueError(f"results lack the schema field {field!r}")
    if doc["schema"] != SCHEMA:
        raise ValueError(f"schema is {doc['schema']!r}, not {SCHEMA!r}")
    if seeds is not None and list(doc["seeds"]) != list(seeds):
        raise ValueError(f"results hold seeds {doc['seeds']}, expected {list(seeds)}")


# Leaves that measure the run rather than the model: wall times, timestamps, paths.
TIMING_KEYS = ("wall_s", "ms_per_image", "load_s", "compile_s", "s_per_step", "seconds", "time")


def _is_timing(path: str, ignore: Sequence[str]) -> bool:
    return any(part.endswith(key) for part in path.split(".") for key in ignore)


def _leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Every number and list of numbers of nested mappings and lists, by dotted path."""
    out: dict[str, Any] = {}
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            out.update(_leaves(value, f"{prefix}{key}."))
    elif isinstance(tree, list | tuple) and tree and all(isinstance(x, int | float) for x in tree):
        out[prefix[:-1]] = [float(x) for x in tree]
    elif isinstance(tree, list | tuple):
        for i, value in enumerate(tree):
            out.update(_leaves(value, f"{prefix}{i}."))
    elif isinstance(tree, int | float) and not isinstance(tree, bool):
        out[prefix[:-1]] = float(tree)
    return out


def differences(
    a: Mapping[str, Any], b: Mapping[str, Any], *, ignore: Sequence[str] = TIMING_KEYS
) -> dict[str, Any]:
    """Compare the numbers of two results documents' ``per_seed`` entries, exactly.

    Every number and list of numbers is compared for equality (NaN equals NaN); leaves
    whose path has a component ending in one of ``ignore`` (wall times, timestamps) are
    left out. What tells whether a change of code changed a result.

    Args:
      a, b: results documents (:func:`write`).
      ignore: suffixes of path components to leave out.

    Returns:
      ``{"compared": n, "differ": {path: [a, b]}, "only_a": [paths], "only_b": [paths]}``.
    """
    la = {k: v for k, v in _leaves(a["per_seed"]).items() if not _is_timing(k, ignore)}
    lb = {k: v for k, v in _leaves(b["per_seed"]).items() if not _is_timing(k, ignore)}

    def same(x: Any, y: Any) -> bool:
        if isinstance(x, list) or isinstance(y, list):
            return (
                isinstance(x, list)
                and isinstance(y, list)
                and len(x) == len(y)
                and all(same(u, v) for u, v in zip(x, y, strict=True))
            )
        return x == y or (math.isnan(x) and math.isnan(y))

    shared = sorted(set(la) & set(lb))
    return {
        "compared": len(shared),
        "differ": {k: [la[k], lb[k]] for k in shared if not same(la[k], lb[k])},
        "only_a": sorted(set(la) - set(lb)),
        "only_b": sorted(set(lb) - set(la)),
    }

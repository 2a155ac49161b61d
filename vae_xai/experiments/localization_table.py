"""Which anomaly map localizes: every map of several localization runs in one table.

The library side of ``python -m experiments.localization_table`` (usage there). Each run is a
``mnist_localization`` / ``mvtec_localization`` / ``ucsd_localization`` workdir (one seed or
``--seeds``); its ``results.json`` (the results schema) holds, per map, the pooled pixel
AUROC, AUPRO (FPR <= max_fpr), best IoU and image AUROC, overall and per defect type, and
each map's cost (``map_cost``). This module lines them up: maps as rows, data (a run, or
one defect type of it) as columns, mean +- std over seeds, and each map's cost per test
image (``recon``'s is one encode-decode pass; a map's extra cost is its cost minus that).
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

from vae_xai import results as results_lib
from vae_xai import workdir as workdir_lib
from vae_xai.experiments import paper

__all__ = ["METRICS", "collect", "markdown", "parse_columns", "write"]

METRICS = ("pixel_auroc", "aupro", "best_iou", "image_auroc")
_SHORT = {"pixel_auroc": "pixel AUROC", "aupro": "AUPRO", "best_iou": "best IoU",
          "image_auroc": "image AUROC"}  # fmt: skip


def _load(workdir: str | pathlib.Path) -> dict[str, Any]:
    return results_lib.read(
        pathlib.Path(workdir) / "results.json",
        hint=f"is {workdir} an evaluated localization run?",
        require=("mean_std",),
    )


def parse_columns(values: Sequence[str]) -> list[tuple[str, str, str]]:
    """``["label=workdir[:group]", ...]`` -> ``[(label, workdir, group)]``.

    Args:
      values: the ``--runs`` entries; ``group`` (a defect type, e.g. ``square``) defaults to
        ``overall``.

    Returns:
      The columns, in order.

    Raises:
      ValueError: a malformed entry or repeated labels.
    """
    out = []
    for v in values:
        label, sep, rest = v.partition("=")
        if not sep or not label or not rest:
            raise ValueError(f"--runs entries are label=workdir[:group]; got {v!r}")
        path, _, group = rest.partition(":")
        out.append((label, path, group or "overall"))
    labels = [c[0] for c in out]
    if len(set(labels)) != len(labels):
        raise ValueError(f"--runs: labels must be distinct; got {labels}")
    return out


def collect(columns: Sequence[tuple[str, str | pathlib.Path, str]]) -> dict[str, Any]:
    """Per column (data) and map: each metric's ``{mean, std, n}`` over seeds, and the map's cost.

    The cost ``ms_per_image`` is the mean over seeds of the wall time of producing the map
    over the test set (compilation and the maps it reuses included), per test image.

    Args:
      columns: ``(label, workdir, group)`` of :func:`parse_columns`.

    Returns:
      The table.

    Raises:
      FileNotFoundError: a workdir without ``results.json``.
      ValueError: an invalid results file, or no metrics for the group.
    """
    table: dict[str, Any] = {"columns": [], "maps": []}
    for label, workdir, group in columns:
        results = _load(workdir)
        ms = results["mean_std"]
        where = group if group == "overall" else f"per_defect.{group}"
        maps = [
            k.split(".")[1]
            for k in ms
            if k.startswith("metrics.") and k.endswith(f".{where}.pixel_auroc")
        ]
        if not maps:
            raise ValueError(f"{workdir}: no metrics for group {group!r}")
        col: dict[str, Any] = {
            "label": label,
            "workdir": str(pathlib.Path(workdir).absolute()),
            "group": group,
            "experiment": results.get("experiment"),
            "seeds": results.get("seeds"),
            "maps": {},
        }
        for m in maps:
            entry = {
                metric: ms[key]
                for metric in METRICS
                if (key := f"metrics.{m}.{where}.{metric}") in ms
            }
            entry["ms_per_image"] = ms.get(f"map_cost.{m}.ms_per_image", {}).get("mean")
            col["maps"][m] = entry
        for m in maps:
            if m not in table["maps"]:
                table["maps"].append(m)
        table["columns"].append(col)
    return table


def _cell(v: Mapping[str, Any] | None, best: bool) -> str:
    if not v:
        return "-"
    text = f"{v['mean']:.3f} +- {v['std']:.3f}"
    return f"**{text}**" if best else text


def markdown(table: Mapping[str, Any], *, metric: str = "pixel_auroc") -> str:
    """Maps as rows, data as columns: ``metric`` mean +- std over seeds (best per column in bold).

    Each map's cost per test image in each distinct run follows (``recon``'s is the cost of
    one encode-decode pass: the extra cost of a map is its cost minus that).

    Args:
      table: :func:`collect`'s result.
      metric: the metric shown.

    Returns:
      The Markdown text.
    """
    cols = table["columns"]
    head = [f"{c['label']} (n={len(c['seeds'] or [])})" for c in cols]
    lines = [f"{_SHORT.get(metric, metric)}, mean +- std over seeds", "",
             "| map | " + " | ".join(head) + " | ms/image |",
             "|---|" + "---|" * (len(cols) + 1)]  # fmt: skip
    best = {}
    for i, c in enumerate(cols):
        vals = {m: e[metric]["mean"] for m, e in c["maps"].items() if metric in e}
        best[i] = max(vals, key=vals.get) if vals else None
    for m in table["maps"]:
        cells = [_cell(c["maps"].get(m, {}).get(metric), best[i] == m) for i, c in enumerate(cols)]
        costs: dict[str, float] = {}  # a run's cost once, not per group of it
        for c in cols:
            entry = c["maps"].get(m)
            if entry and entry["ms_per_image"] is not None:
                costs.setdefault(c["workdir"], entry["ms_per_image"])
        cost = " / ".join(f"{x:.1f}" for x in costs.values()) or "-"
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {cost} |")
    return "\n".join(lines) + "\n"


def write(
    columns: Sequence[tuple[str, str | pathlib.Path, str]], out_dir: str | pathlib.Path
) -> dict[str, Any]:
    """:func:`collect`, written to ``out_dir/maps_table.json`` and ``maps_table.md``.

    The Markdown has one table per metric, and the paper's MVTec bottle row with its
    baselines.

    Args:
      columns: ``(label, workdir, group)`` of :func:`parse_columns`.
      out_dir: the output folder.

    Returns:
      The table.
    """
    table = collect(columns)
    table["references"] = {
        "paper_table2_bottle": paper.TABLE2_MVTEC["bottle"],
        "feature_based_ceiling_bottle": paper.MVTEC_BOTTLE_FEATURE_CEILING,
    }
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    workdir_lib.write_json_atomic(out_dir / "maps_table.json", table)
    text = "\n".join(markdown(table, metric=m) for m in METRICS)
    (out_dir / "maps_table.md").write_text(text)
    return table

"""The maps x data table: read from results-schema files, groups, bold best, cost column."""

from __future__ import annotations

import json

import pytest

from vae_xai.experiments import localization_table as lib


def _results(path, maps):
    ms = {}
    for name, (auroc, std, cost) in maps.items():
        ms[f"metrics.{name}.overall.pixel_auroc"] = {"mean": auroc, "std": std, "n": 3}
        ms[f"metrics.{name}.per_defect.square.pixel_auroc"] = {"mean": auroc / 2, "std": 0.0}
        ms[f"metrics.{name}.overall.aupro"] = {"mean": auroc - 0.1, "std": std, "n": 3}
        ms[f"map_cost.{name}.ms_per_image"] = {"mean": cost, "std": 0.0, "n": 3}
    path.mkdir()
    (path / "results.json").write_text(
        json.dumps({"experiment": "x", "seeds": [0, 1, 2], "mean_std": ms})
    )


def test_table_lines_up_maps_and_data(tmp_path):
    _results(tmp_path / "a", {"recon": (0.8, 0.01, 10.0), "combi": (0.9, 0.02, 25.0)})
    _results(tmp_path / "b", {"recon": (0.7, 0.0, 5.0), "grad_kl": (0.6, 0.05, 7.5)})
    cols = lib.parse_columns([f"A={tmp_path / 'a'}", f"Asq={tmp_path / 'a'}:square",
                              f"B={tmp_path / 'b'}"])  # fmt: skip
    assert cols[1] == ("Asq", str(tmp_path / "a"), "square")
    table = lib.write(cols, tmp_path / "out")
    assert table["maps"] == ["recon", "combi", "grad_kl"]
    a, asq, b = table["columns"]
    assert a["maps"]["combi"]["pixel_auroc"]["mean"] == 0.9
    assert asq["maps"]["combi"]["pixel_auroc"]["mean"] == 0.45  # the defect type's numbers
    assert "aupro" not in asq["maps"]["combi"]  # not in the file: not invented
    md = (tmp_path / "out" / "maps_table.md").read_text()
    assert "| combi | **0.900 +- 0.020** | **0.450 +- 0.000** | - | 25.0 |" in md
    assert "| recon | 0.800 +- 0.010 | 0.400 +- 0.000 | **0.700 +- 0.000** | 10.0 / 5.0 |" in md
    assert "| grad_kl | - | - | 0.600 +- 0.050 | 7.5 |" in md
    saved = json.loads((tmp_path / "out" / "maps_table.json").read_text())
    assert saved["references"]["paper_table2_bottle"]["vae_attention"]["pixel_auroc"] == 0.87


def test_bad_inputs_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="label=workdir"):
        lib.parse_columns(["nolabel"])
    with pytest.raises(ValueError, match="distinct"):
        lib.parse_columns(["a=x", "a=y"])
    with pytest.raises(FileNotFoundError, match="results.json not found"):
        lib.collect([("a", tmp_path, "overall")])
    _results(tmp_path / "r", {"recon": (0.8, 0.0, 1.0)})
    with pytest.raises(ValueError, match="no metrics for group 'hole'"):
        lib.collect([("a", tmp_path / "r", "hole")])

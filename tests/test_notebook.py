"""notebooks/quickstart.ipynb runs top to bottom (smoke mode, CPU) and is committed stripped."""

from __future__ import annotations

import pathlib

import nbclient  # in the test extra: pip install -e '.[test]'
import nbformat
import pytest

NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


@pytest.mark.e2e
@pytest.mark.slow
def test_quickstart_notebook_runs_in_smoke_mode(tmp_path, monkeypatch):
    # the kernel inherits this environment: a few training steps, on the CPU
    monkeypatch.setenv("VAE_XAI_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebook's workdir goes under tmp_path
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails

    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code)
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2  # the per-latent grid and the anomaly attention figure
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "trained 3 steps" in text
    for name in ("input intensity (no model)", "reconstruction error", "difference", "kl"):
        assert f"{name}: pixel AUROC" in text
    assert list(tmp_path.glob("vae_xai_quickstart_*/latent_attention.png"))


def test_committed_notebook_is_stripped():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.outputs]
    counted = [i for i, c in enumerate(nb.cells) if c.get("execution_count") is not None]
    assert not dirty, f"cells {dirty} have outputs; clear them before committing"
    assert not counted, f"cells {counted} have execution counts; clear them before committing"
    assert "widgets" not in nb.metadata

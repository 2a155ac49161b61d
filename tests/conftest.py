"""Shared test fixtures.

Real-data tests are marked ``real_data`` and read the datasets from ``$VAE_XAI_DATA_DIR``
(``.ci/run`` points it at ``../shared/data``). Without it they skip with a reason; in CI
(``CI=true``) ``.ci/run`` fails if any of them was skipped.
"""

from __future__ import annotations

import os
import pathlib

import pytest

DATA_ENV = "VAE_XAI_DATA_DIR"


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
    """Root of the real datasets (mnist/, mvtec_ad/, dsprites_reference/), or skip."""
    value = os.environ.get(DATA_ENV)
    if not value:
        pytest.skip(f"real data not available: set ${DATA_ENV} to the data folder")
    path = pathlib.Path(value)
    if not path.is_dir():
        pytest.skip(f"real data not available: ${DATA_ENV}={value} is not a directory")
    return path

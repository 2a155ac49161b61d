"""Shared test fixtures.

Real-data tests are marked ``real_data`` and read the datasets from ``$VAE_XAI_DATA_DIR``
(``.ci/run`` points it at ``../shared/data``). Without it they skip with a reason. In CI
(``CI=true``) a missing data folder is an error instead of a skip, and ``.ci/run`` also
fails if any test was skipped for lack of data.
"""

from __future__ import annotations

import os
import pathlib

import pytest

DATA_ENV = "VAE_XAI_DATA_DIR"


def _unavailable(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"real data required in CI: {reason}")
    pytest.skip(f"real data not available: {reason}")


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
    """Root of the real datasets (mnist/, mvtec_ad/, dsprites_reference/), or skip."""
    value = os.environ.get(DATA_ENV)
    if not value:
        _unavailable(f"set ${DATA_ENV} to the data folder")
    path = pathlib.Path(value)
    if not path.is_dir():
        _unavailable(f"${DATA_ENV}={value} is not a directory")
    return path

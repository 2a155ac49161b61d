"""Shared test fixtures.

Real-data tests are marked ``real_data`` and read the datasets from ``$VAE_XAI_DATA_DIR``
(``.ci/run`` points it at ``../shared/data``). Without it they skip with a reason. In CI
(``CI=true``) a missing data folder is an error instead of a skip, and ``.ci/run`` also
fails if any test was skipped for lack of data.
"""

from __future__ import annotations

import atexit
import os
import pathlib
import shutil
import sys
import tempfile

import pytest

# One persistent XLA compilation cache for the whole test session (this process and every
# launcher subprocess a test starts inherit it): many tests compile the same small models and
# steps, and the cache skips recompiling an identical program. It changes no result (the
# cached executable is the one XLA would build) and starts empty in every session. It needs
# zstandard (in the test extra): without it JAX compresses each entry with zlib, ~2 s per
# executable here, which cost more than the cache saved (measured 2026-12-03).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _CACHE = tempfile.mkdtemp(prefix="vae_xai_test_xla_cache_")
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
    if "jax" in sys.modules:  # imported before this file (a plugin): set it directly too
        import jax

        jax.config.update("jax_compilation_cache_dir", _CACHE)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

# Tests run small programs a few times each, so XLA's optimization passes cost more than they
# save: JAX's own switch for that case (jax_disable_most_optimizations: backend optimization
# level 0, no expensive LLVM passes) roughly halves the suite's time on 2 CPU cores (measured
# 2026-12-03: 8 of the heaviest tests 335 s -> 155 s; the whole suite under `-n 2` 17 min ->
# 10 min). It changes no semantics, only how well the code is optimized, and every assertion is
# against an independent reference with a tolerance. Launcher subprocesses inherit it;
# `.ci/run`'s install check runs the quickstart outside pytest, fully optimized. Run with
# JAX_DISABLE_MOST_OPTIMIZATIONS=0 to test the optimized programs.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
if "jax" in sys.modules:
    import jax

    _value = os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"].lower()
    jax.config.update("jax_disable_most_optimizations", _value in ("1", "true", "t", "yes", "on"))

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

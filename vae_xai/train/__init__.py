"""Training: a pytree state, jitted donated steps on a mesh, and a resumable loop.

The pieces compose for any model, one job per module:

* :mod:`~vae_xai.train.state` -- :class:`TrainState` holds ``step``, ``params``,
  ``opt_state`` and ``model_state`` (e.g. BatchNorm statistics or a second network's state);
  it is a pytree so it can be jitted, sharded and checkpointed as one object.
  :func:`init_state` initializes a Flax model's state (``params`` plus any other
  collections).
* :mod:`~vae_xai.train.steps` -- ``update_fn(state, batch, key) -> (state, metrics)`` is a
  pure function; :func:`jit_step` compiles it with the state donated, the batch sharded over
  the mesh's ``"data"`` axis and everything else replicated (:func:`jit_steps`: a block of
  steps per call). The step's PRNG key is ``fold_in(seed_key, state.step)``, so a resumed run
  replays exactly the keys of an uninterrupted one.
* :mod:`~vae_xai.train.elbo` -- :func:`vae_update_fn`, the ELBO update for the VAEs in
  :mod:`vae_xai.models`.
* :mod:`~vae_xai.train.schedule` -- :class:`Schedule`: number of steps, save, keep and log
  periods, steps per dispatch (and the process default of the latter,
  :func:`set_default_steps_per_dispatch`).
* :mod:`~vae_xai.train.checkpoint` -- the orbax manager, checksums of each saved step and a
  verified restore (:func:`restore_params`, :class:`CheckpointError`).
* :mod:`~vae_xai.train.loop` -- :func:`fit` runs the loop: restores the latest intact
  checkpoint found in ``workdir``, draws batches from ``batch_fn(step)`` (a deterministic
  function of the step, so resuming also replays the data), logs metrics to
  ``workdir/metrics.jsonl`` and TensorBoard event files in ``workdir``
  (:class:`vae_xai.metric_writer.MetricWriter`), shows a progress bar and checkpoints on the
  schedule. Every step also returns finiteness flags, checked on device at each log step and
  before each save, so a non-finite state is never checkpointed: a diverged run stops with
  :class:`DivergenceError`. Batches reach the mesh through :mod:`~vae_xai.train.feeding`
  (one process or several); SIGTERM/SIGINT save the current step first
  (:mod:`~vae_xai.train.signals`, :class:`Interrupted`).
* :mod:`~vae_xai.train.entry` -- :func:`train` is the one training entry every launcher
  calls: :func:`fit` plus what a run reports about itself (:class:`TrainInfo`: steps, steps
  run by this call, wall time of this call and accumulated over resumed calls in
  ``workdir/train_wall.json``, last logged metrics).
* :mod:`~vae_xai.train.probing` -- :func:`probe` times the next :func:`fit` call instead of
  running it (:class:`ProbeDone`).
"""

from __future__ import annotations

# the mesh helpers of vae_xai.sharding, re-exported for callers that import them from here
# (``as``: re-exported, not in __all__)
from vae_xai.sharding import DATA_AXIS as DATA_AXIS
from vae_xai.sharding import batch_sharding as batch_sharding
from vae_xai.sharding import make_mesh as make_mesh
from vae_xai.sharding import replicated as replicated
from vae_xai.sharding import shard_batch as shard_batch
from vae_xai.train.checkpoint import (
    DAMAGED_DIR,
    CheckpointError,
    checkpoint_manager,
    restore_params,
    verify_checkpoint,
    write_checksums,
)
from vae_xai.train.elbo import vae_update_fn
from vae_xai.train.entry import TRAIN_WALL_FILE, TrainInfo, train
from vae_xai.train.loop import DivergenceError, fit
from vae_xai.train.probing import _PROBE as _PROBE  # the probe context variable
from vae_xai.train.probing import ProbeDone, probe
from vae_xai.train.schedule import Schedule, set_default_steps_per_dispatch
from vae_xai.train.signals import Interrupted
from vae_xai.train.state import Batch, TrainState, UpdateFn, create_state, init_state
from vae_xai.train.state import _all_finite as _all_finite  # used by vae_xai.ensemble
from vae_xai.train.steps import jit_step, jit_steps, with_finite_flags
from vae_xai.workdir import CHECKSUMS_FILE

__all__ = [
    "CHECKSUMS_FILE",
    "DAMAGED_DIR",
    "TRAIN_WALL_FILE",
    "Batch",
    "CheckpointError",
    "DivergenceError",
    "Interrupted",
    "ProbeDone",
    "Schedule",
    "TrainInfo",
    "TrainState",
    "UpdateFn",
    "checkpoint_manager",
    "create_state",
    "fit",
    "init_state",
    "jit_step",
    "jit_steps",
    "probe",
    "restore_params",
    "set_default_steps_per_dispatch",
    "train",
    "vae_update_fn",
    "verify_checkpoint",
    "with_finite_flags",
    "write_checksums",
]

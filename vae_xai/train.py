"""Training: a pytree state, jitted donated steps on a mesh, and a resumable loop.

The pieces compose for any model:

* :class:`TrainState` holds ``step``, ``params``, ``opt_state`` and ``model_state`` (e.g.
  BatchNorm statistics or a second network's state); it is a pytree so it can be jitted,
  sharded and checkpointed as one object.
* ``update_fn(state, batch, key) -> (state, metrics)`` is a pure function; :func:`jit_step`
  compiles it with the state donated, the batch sharded over the mesh's ``"data"`` axis and
  everything else replicated. The step's PRNG key is ``fold_in(seed_key, state.step)``, so a
  resumed run replays exactly the keys of an uninterrupted one.
* :func:`fit` runs the loop: restores the latest orbax checkpoint found in ``workdir``,
  draws batches from ``batch_fn(step)`` (a deterministic function of the step, so resuming
  also replays the data), logs metrics to ``workdir/metrics.jsonl`` and TensorBoard event
  files in ``workdir`` (:class:`vae_xai.metric_writer.MetricWriter`), shows a progress bar and
  checkpoints every ``checkpoint_every`` steps and at the end. Every step also returns
  finiteness flags (of each metric and of the new parameters/model state), computed on
  device and checked at each log step and before each save, so a non-finite state is never
  checkpointed: a diverged run stops with :class:`DivergenceError`.
* :func:`train` is the one training entry every launcher calls: :func:`fit` plus what a run
  reports about itself (:class:`TrainInfo`: steps, steps run by this call, wall time of this
  call and accumulated over resumed calls in ``workdir/train_wall.json``, last logged metrics).
* :func:`init_state` initializes a Flax model's state (``params`` plus any other collections,
  e.g. BatchNorm statistics); :func:`vae_update_fn` is the ELBO update for the VAEs in
  :mod:`vae_xai.models`.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import functools
import hashlib
import json
import logging
import os
import pathlib
import shutil
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypedDict

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from vae_xai import distributed, losses
from vae_xai.metric_writer import MetricWriter
from vae_xai.sharding import DATA_AXIS, batch_sharding, make_mesh, replicated, shard_batch
from vae_xai.workdir import CHECKSUMS_FILE, StateFileError, read_state_json, write_json_atomic

Batch = Mapping[str, Any]
UpdateFn = Callable[["TrainState", Batch, jax.Array], tuple["TrainState", dict[str, jax.Array]]]

__all__ = [
    "CHECKSUMS_FILE",
    "DAMAGED_DIR",
    "CheckpointError",
    "DivergenceError",
    "Interrupted",
    "ProbeDone",
    "TrainInfo",
    "TrainState",
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


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue: a pytree of arrays."""

    step: jax.Array
    params: Any
    opt_state: Any
    model_state: Any = flax.struct.field(default_factory=dict)


def create_state(
    params: Any, optimizer: optax.GradientTransformation, model_state: Any = None
) -> TrainState:
    """A fresh state at step 0."""
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        model_state={} if model_state is None else model_state,
    )


def init_state(
    model: Any,
    optimizer: optax.GradientTransformation,
    input_shape: Sequence[int],
    *,
    seed: int = 0,
    key: jax.Array | None = None,
) -> TrainState:
    """A fresh :class:`TrainState` for a Flax ``model`` on inputs ``(B, *input_shape)``.

    ``model.init(key, zeros((1, *input_shape)), train=False)``; non-``params`` collections
    (BatchNorm's ``batch_stats``) go to ``state.model_state``. The init key defaults to
    ``jax.random.key(seed, impl="rbg")``: XLA compiles a threefry draw per parameter shape,
    which for a ResNet took ~35 s on a loaded CPU against ~8 s with ``rbg``. Initial values
    are then backend-specific (resuming is unaffected: it restores the checkpoint); pass a
    threefry ``key`` to override.
    """
    x = jnp.zeros((1, *input_shape), jnp.float32)
    key = jax.random.key(seed, impl="rbg") if key is None else key
    variables = dict(jax.jit(functools.partial(model.init, train=False))(key, x))
    params = variables.pop("params")
    return create_state(params, optimizer, variables)


def _keyed_step(update_fn: UpdateFn) -> Callable[..., Any]:
    """``update_fn`` with the per-step key ``fold_in(key, state.step)`` and the step
    counter advanced: one step of :func:`jit_step`, and the scan body of :func:`jit_steps`.
    The key (its raw bits) is an argument, not a constant of the program, so the runs of every seed
    compile to one program (and XLA's persistent compilation cache, where enabled, serves
    them all)."""

    def step(
        state: TrainState, batch: Batch, key_data: jax.Array
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        key = jax.random.fold_in(jax.random.wrap_key_data(key_data), state.step)
        new_state, metrics = update_fn(state, batch, key)
        return new_state.replace(step=state.step + 1), metrics

    return step


def _bind_key(jitted: Callable[..., Any], seed: int, mesh: Mesh) -> Callable[..., Any]:
    """``jitted(state, batch, key_data(key(seed)))`` as ``fn(state, batch)``: the raw key
    bits, replicated over the mesh (also across processes)."""
    data = np.asarray(jax.random.key_data(jax.random.key(seed)))
    base = jax.make_array_from_process_local_data(replicated(mesh), data, data.shape)

    @functools.wraps(jitted)
    def call(state: TrainState, batch: Batch):
        return jitted(state, batch, base)

    return call


def jit_step(update_fn: UpdateFn, mesh: Mesh, seed: int = 0) -> Callable[..., Any]:
    """Compile ``update_fn`` for the mesh: ``step(state, batch) -> (state, metrics)``.

    The state is donated (its buffers are reused for the new state) and replicated; the batch
    is sharded over ``"data"``; the per-step key is ``fold_in(key(seed), state.step)``.
    """
    rep = replicated(mesh)
    jitted = jax.jit(
        _keyed_step(update_fn),
        in_shardings=(rep, batch_sharding(mesh), rep),
        out_shardings=(rep, rep),
        donate_argnums=(0,),
    )
    return _bind_key(jitted, seed, mesh)


def jit_steps(
    update_fn: UpdateFn, mesh: Mesh, seed: int = 0, steps: int = 1, *, unroll: bool | None = None
) -> Callable[..., Any]:
    """``steps`` training steps per call, as one ``lax.scan`` over a block of batches.

    ``block(state, batches) -> (state, metrics)``: every leaf of ``batches`` has a leading
    axis of ``steps`` (then the batch axis, sharded over ``"data"``), the metrics get the same
    leading axis. Step ``i`` of the block is exactly step ``state.step + i`` of
    :func:`jit_step` (same key, same update), so ``k`` single steps and one block of ``k`` give
    the same state; one dispatch instead of ``k`` pays on accelerators, where a small model's
    step is shorter than the host's dispatch and data transfer.

    ``unroll`` (default: on the CPU backend only) writes the ``steps`` steps out instead of
    a loop: XLA CPU runs our conv steps inside a while loop about 35x slower (a block of two
    quickstart steps took 7.6 s rolled, 0.2 s unrolled, one step 0.12 s; one-off timing on the
    2-core development CPU, jax 0.10.2, 2026-12-02), while accelerators
    want the rolled loop (compile time independent of ``steps``).
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps (per dispatch) must be a positive integer; got {steps!r}")
    if unroll is None:
        unroll = jax.default_backend() == "cpu"
    rep = replicated(mesh)
    one = _keyed_step(update_fn)

    def block(state: TrainState, batches: Batch, key_data: jax.Array):
        return jax.lax.scan(
            lambda st, b: one(st, b, key_data), state, batches, unroll=steps if unroll else 1
        )

    jitted = jax.jit(
        block,
        in_shardings=(rep, NamedSharding(mesh, PartitionSpec(None, DATA_AXIS)), rep),
        out_shardings=(rep, rep),
        donate_argnums=(0,),
    )
    return _bind_key(jitted, seed, mesh)


def vae_update_fn(
    model: Any,
    optimizer: optax.GradientTransformation,
    *,
    beta: float = 1.0,
    likelihood: str = "bernoulli",
    variance: float = 0.5,
    augment: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    image_key: str = "image",
) -> UpdateFn:
    """ELBO update ``(state, batch, key) -> (state, metrics)`` for our VAEs.

    The model is called as ``model.apply(variables, x, key, train=True)`` and returns
    ``{"mu", "logvar", "logits", ...}``. Loss per example:
    :func:`vae_xai.losses.reconstruction_nll` (``likelihood``, ``variance``) ``+ beta *
    KL(q(z|x) || N(0, I))``; the batch mean is minimized with ``optimizer``.

    ``augment(key, images) -> images`` (e.g. random mirror + rotation) runs on device on the
    batch before the model; the step key is then split into an augmentation and a sampling
    key (without ``augment`` the step key samples ``z`` directly). If ``state.model_state``
    has ``batch_stats``, the model runs with ``mutable=["batch_stats"]``: normalization uses
    the batch statistics (over the global batch under the sharded :func:`jit_step`) and the
    running averages are stored back in ``state.model_state``.
    """
    if likelihood not in ("bernoulli", "gaussian"):
        raise ValueError(f'likelihood must be "bernoulli" or "gaussian"; got {likelihood!r}')

    def update(state: TrainState, batch: Batch, key: jax.Array):
        x = jnp.asarray(batch[image_key])
        k_z = key
        if augment is not None:
            k_aug, k_z = jax.random.split(key)
            x = augment(k_aug, x)
        has_bn = "batch_stats" in state.model_state

        def loss_fn(params):
            if has_bn:
                variables = {"params": params, "batch_stats": state.model_state["batch_stats"]}
                out, updates = model.apply(variables, x, k_z, train=True, mutable=["batch_stats"])
            else:
                out, updates = model.apply({"params": params}, x, k_z, train=True), {}
            rec = losses.reconstruction_nll(
                out["logits"], x, likelihood=likelihood, variance=variance
            )
            kl = losses.gaussian_kl(out["mu"], out["logvar"])
            loss = jnp.mean(rec + beta * kl)
            aux = {"loss": loss, "recon": jnp.mean(rec), "kl": jnp.mean(kl)}
            return loss, (aux, updates)

        grads, (aux, updates) = jax.grad(loss_fn, has_aux=True)(state.params)
        upd, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, upd)
        model_state = {**state.model_state, **updates}
        return state.replace(params=params, opt_state=opt_state, model_state=model_state), aux

    return update


class _QuietOrbax(logging.Filter):
    """Drop orbax's per-save INFO lines (they drown the progress bar); keep its warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or "orbax" not in record.pathname


_QUIET_ORBAX = _QuietOrbax()


def checkpoint_manager(
    workdir: str | pathlib.Path, *, max_to_keep: int = 2, keep_every: int | None = None
) -> ocp.CheckpointManager:
    """An orbax manager for ``workdir/checkpoints`` (created if missing).

    Args:
      workdir: the run folder.
      max_to_keep: how many of the latest checkpoints are kept.
      keep_every: also keep, forever, every checkpoint whose step is a multiple of this
        (orbax's ``keep_period``), e.g. for scores along training; ``None``: only the latest.
    """
    absl_logger = logging.getLogger("absl")
    if _QUIET_ORBAX not in absl_logger.filters:
        absl_logger.addFilter(_QUIET_ORBAX)
    directory = pathlib.Path(workdir).absolute() / "checkpoints"
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, keep_period=keep_every or None, create=True
    )
    # one unnamed item, declared: orbax otherwise infers single vs. several items from the
    # first step it reads, so one emptied step folder would make every other step unreadable
    return ocp.CheckpointManager(
        directory, options=options, item_handlers=ocp.StandardCheckpointHandler()
    )


def _abstract(state: TrainState, mesh: Mesh) -> Any:
    rep = replicated(mesh)
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), state)


# Where fit moves a damaged step (never deleted: the bytes stay for inspection).
DAMAGED_DIR = "damaged_checkpoints"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (damaged, unreadable, or not saved); the message is
    one line naming the step folder and what to do."""


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def write_checksums(step_dir: str | os.PathLike[str]) -> pathlib.Path:
    """Record the size and sha256 of every file of a finished step folder in
    ``step_dir/CHECKSUMS_FILE`` (atomically), for :func:`verify_checkpoint`.

    Args:
      step_dir: an orbax step folder (``workdir/checkpoints/<step>``) whose save has finished.

    Returns:
      The checksum file's path.
    """
    step_dir = pathlib.Path(step_dir)
    files = {
        p.relative_to(step_dir).as_posix(): [p.stat().st_size, _sha256(p)]
        for p in sorted(step_dir.rglob("*"))
        if p.is_file() and p.name != CHECKSUMS_FILE and not p.name.startswith(f".{CHECKSUMS_FILE}")
    }
    return write_json_atomic(step_dir / CHECKSUMS_FILE, {"step_dir": step_dir.name, "files": files})


def verify_checkpoint(step_dir: str | os.PathLike[str]) -> str | None:
    """Why the files of a step folder differ from the checksums written with them, or
    ``None`` when they match (or when the step has no checksum file: saved by an older
    version; such a step is checked by a full read and a finiteness check only).

    Args:
      step_dir: an orbax step folder (``workdir/checkpoints/<step>``).

    Returns:
      ``None`` or a short reason naming the first differing file.
    """
    step_dir = pathlib.Path(step_dir)
    if not step_dir.is_dir():
        return "the folder is missing"
    path = step_dir / CHECKSUMS_FILE
    if not path.exists():
        return None
    try:
        files = json.loads(path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"its {CHECKSUMS_FILE} cannot be read ({type(err).__name__})"
    for rel, (size, digest) in sorted(files.items()):
        p = step_dir / rel
        if not p.is_file():
            return f"{rel} is missing"
        if p.stat().st_size != size:
            return f"{rel} holds {p.stat().st_size} bytes, {size} were saved"
        if _sha256(p) != digest:
            return f"{rel} differs from the checksum saved with it"
    return None


@contextlib.contextmanager
def _orbax_silent():
    """Drop orbax's and tensorstore's log lines while a step is tried: a damaged step is
    reported in one line by the caller, not in the 60-160 lines orbax logs."""
    absl_logger = logging.getLogger("absl")

    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "orbax" not in record.pathname and "tensorstore" not in record.pathname

    drop = _Drop()
    absl_logger.addFilter(drop)
    try:
        yield
    finally:
        absl_logger.removeFilter(drop)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    line = text[0] if text else ""
    return f"{type(err).__name__}: {line[:160]}"


def _restore_checked(
    manager: ocp.CheckpointManager, step: int, abstract: Any
) -> tuple[Any, str | None]:
    """``(state, None)`` for an intact step, ``(None, reason)`` for a damaged one: its files
    differ from their checksums, orbax cannot read all of it, or it holds a non-finite value
    (never saved by :func:`fit`, so the bytes changed)."""
    step_dir = pathlib.Path(manager.directory) / str(step)
    reason = verify_checkpoint(step_dir)
    if reason is not None:
        return None, reason
    try:
        with _orbax_silent():
            restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
            restored = jax.block_until_ready(restored)
    except Exception as err:  # noqa: BLE001 (orbax/tensorstore raise many types)
        return None, f"it cannot be read ({_first_line(err)})"
    if not bool(jax.device_get(_all_finite(restored))):
        return None, "it holds non-finite values"
    return restored, None


def restore_params(
    workdir: str | pathlib.Path,
    state: TrainState,
    *,
    mesh: Mesh | None = None,
    step: int | None = None,
):
    """Restore the latest checkpoint of ``workdir`` (or that of ``step``) into the structure
    of ``state``, verified before use (checksums, a full read, finite values).

    Raises FileNotFoundError (naming the folder) when there is none, and
    :class:`CheckpointError` (one line naming the step folder to delete) when it is damaged:
    an evaluation of another step than asked would be mislabelled, so there is no fallback
    here (:func:`fit` falls back). With several processes the result is this process's copy
    (:func:`vae_xai.distributed.local_copy`).
    """
    mesh = mesh or make_mesh()
    if not (pathlib.Path(workdir) / "checkpoints").is_dir():
        raise FileNotFoundError(
            f"no checkpoint found under {pathlib.Path(workdir) / 'checkpoints'}"
        )
    if step is not None and (isinstance(step, bool) or not isinstance(step, int | np.integer)):
        raise TypeError(f"step must be an integer; got {step!r}")
    with checkpoint_manager(workdir) as manager:  # (a manager deletes only when it saves)
        if step is None:
            step = manager.latest_step()
            if step is None:
                raise FileNotFoundError(
                    f"no checkpoint found under {pathlib.Path(workdir) / 'checkpoints'}"
                )
        elif step not in manager.all_steps():
            raise FileNotFoundError(
                f"no checkpoint of step {step} under {pathlib.Path(workdir) / 'checkpoints'} "
                f"(it holds steps {sorted(manager.all_steps())})"
            )
        restored, reason = _restore_checked(manager, int(step), _abstract(state, mesh))
        if reason is not None:
            step_dir = pathlib.Path(manager.directory) / str(step)
            raise CheckpointError(
                f"checkpoint {step_dir} is damaged: {reason}; delete that folder and rerun the "
                "training command (it resumes from the newest intact step)"
            )
    return distributed.local_copy(restored)


def _restore_latest_intact(
    manager: ocp.CheckpointManager, abstract: Any, workdir: pathlib.Path, primary: bool
) -> tuple[Any, int | None]:
    """The newest intact step of ``manager`` restored, and its step (``(None, None)`` when
    there are no steps). Damaged steps newer than it are moved (never deleted) to
    ``workdir/DAMAGED_DIR/<step>``, each with a warning naming both paths; kept steps
    (``keep_every``) and older steps are untouched. With no intact step at all nothing is
    moved and :class:`CheckpointError` names the steps."""
    damaged: list[tuple[int, str]] = []
    for step in sorted(manager.all_steps(), reverse=True):
        restored, reason = _restore_checked(manager, step, abstract)
        if reason is None:
            break
        damaged.append((step, reason))
    else:
        if not damaged:
            return None, None
        listing = "; ".join(f"{pathlib.Path(manager.directory) / str(s)}: {r}" for s, r in damaged)
        raise CheckpointError(
            f"no intact checkpoint under {manager.directory} ({listing}); nothing was moved or "
            "deleted: delete those step folders to train from step 0, or use another --workdir"
        )
    if damaged and primary:
        target = workdir / DAMAGED_DIR
        target.mkdir(parents=True, exist_ok=True)
        for s, r in damaged:
            src = pathlib.Path(manager.directory) / str(s)
            dst = target / f"{s}_{time.strftime('%Y%m%dT%H%M%S')}"
            shutil.move(str(src), str(dst))
            logging.warning(
                "checkpoint %s is damaged (%s): moved to %s; resuming from step %d",
                src,
                r,
                dst,
                step,
            )
        manager.reload()
    return restored, step


class DivergenceError(FloatingPointError):
    """Training produced a non-finite metric or state; nothing non-finite was checkpointed."""


def _all_finite(tree: Any) -> jax.Array:
    leaves = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def with_finite_flags(update_fn: UpdateFn) -> UpdateFn:
    """``update_fn`` whose metrics become ``(metrics, flags)``: ``flags[name]`` says whether
    metric ``name`` is finite, ``flags["params/model_state"]`` whether the new state is."""

    def update(state: TrainState, batch: Batch, key: jax.Array):
        new_state, metrics = update_fn(state, batch, key)
        flags = {k: jnp.all(jnp.isfinite(v)) for k, v in metrics.items()}
        flags["params/model_state"] = _all_finite((new_state.params, new_state.model_state))
        return new_state, (metrics, flags)

    return update


def _to_float(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(np.asarray(v)) for k, v in metrics.items()}


def _truncate_log(path: pathlib.Path, last_step: int) -> None:
    """Drop log lines after the restored step so a resumed run does not duplicate them."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", -1) <= last_step:
                kept.append(line)
        except json.JSONDecodeError:  # a line cut by a kill: drop it
            continue
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)  # atomically: a kill here loses no log line


_DEFAULT_STEPS_PER_DISPATCH = 1


def _check_steps_per_dispatch(k: Any) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"steps_per_dispatch must be a positive integer; got {k!r}")


def set_default_steps_per_dispatch(k: int) -> None:
    """The ``steps_per_dispatch`` of every later :func:`fit` / :func:`train` call that does
    not pass one (the launchers' ``--steps_per_dispatch``). It changes how steps are
    dispatched, not what is trained (a block equals its single steps)."""
    global _DEFAULT_STEPS_PER_DISPATCH
    _check_steps_per_dispatch(k)
    _DEFAULT_STEPS_PER_DISPATCH = k


def fit(
    state: TrainState,
    update_fn: UpdateFn,
    batch_fn: Callable[[int], Batch],
    *,
    workdir: str | pathlib.Path,
    num_steps: int,
    mesh: Mesh | None = None,
    seed: int = 0,
    checkpoint_every: int = 500,
    keep_every: int | None = None,
    log_every: int = 50,
    progress: bool = True,
    hooks: Mapping[int, Callable[[int, TrainState], None]] | None = None,
    steps_per_dispatch: int | None = None,
) -> TrainState:
    """Train to ``num_steps``, resuming from the latest checkpoint in ``workdir``.

    Args:
      state: the initial state (used as is when ``workdir`` has no checkpoint, and as the
        structure to restore into otherwise).
      update_fn: see :func:`jit_step`.
      batch_fn: ``step -> batch`` (NumPy or JAX arrays, leading axis the batch). Must be a
        deterministic function of ``step`` so that a resumed run sees the same data.
      workdir: the run folder (``checkpoints/``, ``metrics.jsonl``, TensorBoard events).
      num_steps: total number of steps of the run (not of this call).
      mesh: device mesh (default: all devices on ``"data"``).
      seed: seeds the per-step keys.
      checkpoint_every: save period in steps; the final step is always saved.
      keep_every: keep every checkpoint whose step is a multiple of this (a multiple of
        ``checkpoint_every``) besides the latest ones; ``None``: keep only the latest.
      log_every: metrics period in steps (each log forces a device sync).
      progress: show a tqdm progress bar.
      hooks: ``{period: fn(step, state)}`` called after every ``period``-th step (e.g. eval).
      steps_per_dispatch: run this many steps per jitted call (:func:`jit_steps`, a
        ``lax.scan`` over a block of batches) for dispatch-bound accelerators; same result
        as single steps. A block never straddles a checkpoint or hook step (a state exists
        only between blocks): the steps before such a boundary that do not fill a block run
        singly, so periods that are multiples of it waste nothing. Every step is still
        logged and checked. ``None``: :func:`set_default_steps_per_dispatch` (1 unless a
        launcher's ``--steps_per_dispatch`` set it).

    Returns:
      The final state.

    Raises:
      ValueError: ``num_steps < 0`` or a period < 1 (before anything is compiled).
      DivergenceError: a metric or the new parameters/model state of some step were not
        finite (found at the next log step or save, whichever comes first). The message names
        the step, the non-finite entries and the last checkpoint, which was saved before the
        divergence (every save is preceded by a check of all steps since the last one) and is
        therefore finite and kept.
    """
    state, _ = _fit(
        state,
        update_fn,
        batch_fn,
        workdir=workdir,
        num_steps=num_steps,
        mesh=mesh,
        seed=seed,
        checkpoint_every=checkpoint_every,
        keep_every=keep_every,
        log_every=log_every,
        progress=progress,
        hooks=hooks,
        steps_per_dispatch=steps_per_dispatch,
    )
    return state


def _fit(
    state: TrainState,
    update_fn: UpdateFn,
    batch_fn: Callable[[int], Batch],
    *,
    workdir: str | pathlib.Path,
    num_steps: int,
    mesh: Mesh | None = None,
    seed: int = 0,
    checkpoint_every: int = 500,
    keep_every: int | None = None,
    log_every: int = 50,
    progress: bool = True,
    hooks: Mapping[int, Callable[[int, TrainState], None]] | None = None,
    steps_per_dispatch: int | None = None,
) -> tuple[TrainState, int]:
    """:func:`fit`, also returning the step it started (or resumed) from."""
    for name, value in (("num_steps", num_steps), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0; got {value!r}")
    for name, period in (("checkpoint_every", checkpoint_every), ("log_every", log_every)):
        if not isinstance(period, int) or period < 1:
            raise ValueError(f"{name} must be a positive integer; got {period!r}")
    if keep_every is not None and (
        not isinstance(keep_every, int) or keep_every < 1 or keep_every % checkpoint_every
    ):
        raise ValueError(
            f"keep_every must be a positive multiple of checkpoint_every={checkpoint_every} "
            f"(a kept step must be a saved step); got {keep_every!r}"
        )
    for period in hooks or {}:
        if not isinstance(period, int) or period < 1:
            raise ValueError(f"hook periods must be positive integers; got {period!r}")
    k = _DEFAULT_STEPS_PER_DISPATCH if steps_per_dispatch is None else steps_per_dispatch
    _check_steps_per_dispatch(k)
    # a state exists only between blocks: no block straddles a save or a hook
    boundaries = (checkpoint_every, *(hooks or {}))
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = mesh or make_mesh()
    log_path = workdir / "metrics.jsonl"
    step_fn = jit_step(with_finite_flags(update_fn), mesh, seed)
    block_fn = jit_steps(with_finite_flags(update_fn), mesh, seed, k) if k > 1 else None
    # several processes (vae_xai.distributed): each feeds its rows of every global batch;
    # process 0 alone writes metrics and shows progress; all take part in checkpointing
    primary = jax.process_index() == 0

    with checkpoint_manager(workdir, keep_every=keep_every) as manager, _StopSignals() as stop:
        restored, latest = _restore_latest_intact(manager, _abstract(state, mesh), workdir, primary)
        state = restored if latest is not None else jax.device_put(state, replicated(mesh))
        saved = latest

        def save(step: int) -> None:
            nonlocal saved
            check_finite()
            try:
                with _orbax_silent():  # a failed save is reported in one line below
                    manager.save(step, args=ocp.args.StandardSave(state), force=True)
                    manager.wait_until_finished()
                if primary:
                    write_checksums(pathlib.Path(manager.directory) / str(step))
            except Exception as err:
                raise _save_error(err, manager, step, saved) from err
            saved = step

        # drop lines logged after the restored step (or all, if killed before any checkpoint)
        if primary:
            _truncate_log(log_path, latest or 0)
        start = int(state.step)
        # (step, metrics, flags) of the steps not yet checked; device arrays, so no sync
        pending: list[tuple[int, Any, Any]] = []

        def check_finite() -> None:
            flags = jax.device_get([f for _, _, f in pending])
            for (done, metrics, _), ok in zip(pending, flags, strict=True):
                bad = [k for k, v in ok.items() if not bool(v)]
                if bad:
                    manager.wait_until_finished()
                    last = manager.latest_step()
                    where = (
                        f"the last finite checkpoint is {manager.directory / str(last)} (step "
                        f"{last}); a rerun on this workdir resumes from it and, with the same "
                        "config, diverges again at the same step"
                        if last is not None
                        else "no checkpoint was saved before it"
                    )
                    raise DivergenceError(
                        f"training diverged in {workdir}: non-finite {', '.join(bad)} at step "
                        f"{done} (metrics {_to_float(metrics)}); stopped, nothing non-finite "
                        f"was checkpointed; {where}"
                    )
            pending.clear()

        bar = tqdm(
            total=num_steps,
            initial=start,
            disable=not (progress and primary),
            desc=workdir.name,
            unit="step",
        )
        # a resumed run: TensorBoard drops the points the old files hold after the restored step
        # (no new event file when there is nothing left to train)
        resume = None if latest is None else latest + 1
        writer = (
            MetricWriter(workdir, jsonl=log_path, resume_step=resume)
            if start < num_steps and primary
            else _NullWriter()
        )
        with writer, bar:
            step = start
            if stop.signum is not None:
                raise Interrupted(stop.signum, start, pathlib.Path(manager.directory), start=start)
            probing = _PROBE.get()
            if probing is not None:
                probing = dict(probing, t_fit=time.perf_counter())
            while step < num_steps:
                # a block of k steps where one fits before the next save, hook or the end;
                # single steps up to that boundary otherwise
                fits = step + k <= num_steps and all(
                    (step // p + 1) * p >= step + k for p in boundaries
                )
                n = k if block_fn is not None and fits else 1
                if n == 1:
                    batch = _device_batch(batch_fn, step, mesh)
                    state, (metrics, flags) = step_fn(state, batch)
                    outs = [(metrics, flags)]
                else:
                    batches = _device_block(batch_fn, step, n, mesh)
                    state, (metrics, flags) = block_fn(state, batches)
                    outs = [jax.tree.map(lambda x, i=i: x[i], (metrics, flags)) for i in range(n)]
                for i, (metrics, flags) in enumerate(outs):
                    done = step + i + 1
                    pending.append((done, metrics, flags))
                    if done % log_every == 0 or done == num_steps:
                        check_finite()
                        values = _to_float(metrics)
                        writer.write_scalars(done, values)
                        writer.flush()
                        bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()})
                done = step + n
                for period, hook in (hooks or {}).items():
                    if done % period == 0:
                        hook(done, state)
                if done % checkpoint_every == 0 or done == num_steps:
                    save(done)
                bar.update(n)
                step = done
                if probing is not None:
                    _probe_tick(probing, done - start, state, num_steps)
                if stop.signum is not None:
                    if saved != done:
                        save(done)
                    raise Interrupted(
                        stop.signum, done, pathlib.Path(manager.directory), start=start
                    )
        manager.wait_until_finished()
    return state, start


class Interrupted(KeyboardInterrupt):
    """:func:`fit` stopped on SIGTERM or SIGINT after saving the current step.

    A ``KeyboardInterrupt`` (so a notebook's interrupt behaves as usual); ``signum``,
    ``step`` and ``exit_code`` (``128 + signum``, what a shell reports for the signal) say
    what happened; rerunning the same command resumes from ``step``. ``start``: the step
    this call started (or resumed) from, so ``step - start`` steps were trained.
    """

    def __init__(
        self, signum: int, step: int, directory: pathlib.Path, *, start: int | None = None
    ):
        name = signal.Signals(signum).name
        super().__init__(
            f"stopped by {name} at step {step}: checkpoint {directory / str(step)} is saved; "
            "rerun the same command to resume from it"
        )
        self.signum = signum
        self.step = step
        self.start = step if start is None else start
        self.exit_code = 128 + signum


class _StopSignals:
    """While inside, SIGTERM and SIGINT set ``signum`` instead of stopping the process, so
    :func:`fit` can save the current step first (a preemption notice from Colab, TPU VMs or
    SLURM is a SIGTERM). A second signal of either kind stops at once (the previous
    handlers are back). Only the main thread can install handlers; elsewhere this does
    nothing."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        del frame
        if self.signum is not None:  # the second one: stop now
            self._restore()
            signal.raise_signal(signum)
            return
        self.signum = signum
        logging.warning(
            "%s received: saving the current step, then stopping", signal.Signals(signum).name
        )

    def _restore(self) -> None:
        for signum, old in self._old.items():
            signal.signal(signum, old)
        self._old = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._old[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._restore()


def _save_error(
    err: BaseException, manager: ocp.CheckpointManager, step: int, saved: int | None
) -> BaseException:
    """A one-line :class:`CheckpointError` for a failed save (a full disk, a read-only or
    vanished folder); any other error is returned as is."""
    chain: list[BaseException] = []
    e: BaseException | None = err
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    os_err = next((e for e in chain if isinstance(e, OSError) and e.errno), None)
    text = " ".join(str(e) for e in chain)
    # tensorstore reports a failed write as a ValueError whose text holds the OS's reason
    known = [os.strerror(n) for n in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS)]
    found = next((r for r in known if r in text), None)
    if os_err is None and found is None:
        return err
    reason = os.strerror(os_err.errno) if os_err is not None else found
    where = (
        f"a rerun resumes from step {saved} ({pathlib.Path(manager.directory) / str(saved)})"
        if saved is not None
        else "no step was saved before it"
    )
    return CheckpointError(
        f"saving step {step} to {pathlib.Path(manager.directory) / str(step)} failed: {reason}; "
        f"fix that (e.g. free disk space) and rerun the same command: {where}"
    )


class ProbeDone(Exception):  # noqa: N818 (a signal, not an error)
    """Raised by :func:`fit` inside :func:`probe` once the probed steps are timed;
    ``info``: ``{"setup_s", "compile_s", "s_per_step", "steps_timed", "num_steps"}``."""

    def __init__(self, info: dict[str, Any]):
        super().__init__(f"probe done: {info}")
        self.info = info


_PROBE: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "vae_xai_train_probe", default=None
)


@contextlib.contextmanager
def probe(steps: int = 5):
    """Time the next :func:`fit` call instead of running it to the end.

    Inside this context, ``fit`` runs its first step (compilation included) and ``steps``
    more, then raises :class:`ProbeDone` with the setup time (from entering the context to
    the first step: data loading, initialization), the first step's time, and the mean seconds per
    step of the timed steps. Used by ``experiments.reproduce --estimate`` to
    project a job's training time on the current device without special code per experiment.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"probe steps must be a positive integer; got {steps!r}")
    token = _PROBE.set({"steps": steps, "t_enter": time.perf_counter()})
    try:
        yield
    finally:
        _PROBE.reset(token)


def _probe_tick(probe_state: dict[str, Any], done_steps: int, state: Any, num_steps: int) -> None:
    """Called after each dispatch inside :func:`probe`; raises :class:`ProbeDone` when done."""
    jax.block_until_ready(state)
    now = time.perf_counter()
    if "t_first" not in probe_state:
        probe_state.update(t_first=now, first_done=done_steps, t_start=probe_state["t_fit"])
        return
    timed = done_steps - probe_state["first_done"]
    if timed >= probe_state["steps"]:
        raise ProbeDone(
            {
                "setup_s": probe_state["t_fit"] - probe_state["t_enter"],
                "compile_s": probe_state["t_first"] - probe_state["t_fit"],
                "s_per_step": (now - probe_state["t_first"]) / timed,
                "steps_timed": timed,
                "num_steps": num_steps,
            }
        )


class _NullWriter(contextlib.nullcontext):
    """Stands in for the metric writer where nothing is written (nothing left to train, or
    not process 0)."""

    def write_scalars(self, step: int, values: Mapping[str, float]) -> None:
        del step, values

    def flush(self) -> None:
        pass


def _local_rows(batch_fn: Callable[..., Batch], step: int) -> tuple[Any, int]:
    """This process's rows of global batch ``step`` and the global batch size. A
    ``batch_fn`` with a ``global_batch_size`` attribute is asked for those rows only
    (``batch_fn(step, rows=slice)``); any other is called for the whole batch and sliced."""
    size = getattr(batch_fn, "global_batch_size", None)
    if size is not None:
        return batch_fn(step, rows=distributed.process_rows(int(size))), int(size)
    full = batch_fn(step)
    size = len(np.asarray(jax.tree.leaves(full)[0]))
    rows = distributed.process_rows(size)
    return jax.tree.map(lambda x: np.asarray(x)[rows], full), size


def _device_batch(batch_fn: Callable[..., Batch], step: int, mesh: Mesh) -> Any:
    """``batch_fn(step)`` on the mesh. With several processes, each process feeds only its
    rows (:func:`vae_xai.distributed.process_rows`) and the global arrays are assembled
    from them (see :func:`_local_rows`)."""
    if jax.process_count() == 1:
        return shard_batch(batch_fn(step), mesh)
    local, size = _local_rows(batch_fn, step)
    return distributed.global_batch(local, mesh, size)


def _device_block(batch_fn: Callable[..., Batch], start: int, n: int, mesh: Mesh) -> Any:
    """Batches ``start .. start + n - 1`` stacked on a leading axis, the batch axis sharded
    over ``"data"`` (the input of :func:`jit_steps`)."""
    sharding = NamedSharding(mesh, PartitionSpec(None, DATA_AXIS))
    multi = jax.process_count() > 1
    parts = [
        _local_rows(batch_fn, s) if multi else (batch_fn(s), None) for s in range(start, start + n)
    ]
    stacked = jax.tree.map(
        lambda *xs: np.stack([np.asarray(x) for x in xs]), *[p for p, _ in parts]
    )
    if multi:
        size = parts[0][1]
        return jax.tree.map(
            lambda x: jax.make_array_from_process_local_data(sharding, x, (n, size, *x.shape[2:])),
            stacked,
        )
    devices = mesh.shape[DATA_AXIS]
    for x in jax.tree.leaves(stacked):
        if x.ndim < 2 or x.shape[1] % devices:
            raise ValueError(
                f"batch leaf of shape {x.shape[1:]} cannot be split over {devices} devices: the "
                "batch size must be a multiple of the number of devices"
            )
    return jax.device_put(stacked, sharding)


TRAIN_WALL_FILE = "train_wall.json"


class TrainInfo(TypedDict):
    """What :func:`train` reports (a dict, so it goes into ``results.json`` as is).

    ``steps``: the step of the returned state; ``steps_run``: steps this call trained (0 when
    the workdir already held the final checkpoint); ``wall_s``: this call's seconds (restore
    and compilation included); ``total_wall_s``: the seconds of every call on this workdir
    that trained, accumulated in ``workdir/train_wall.json``; ``last``: the last line of
    ``workdir/metrics.jsonl`` (``{}`` if none).
    """

    steps: int
    steps_run: int
    wall_s: float
    total_wall_s: float
    last: dict[str, Any]


def _last_logged(log_path: pathlib.Path) -> dict[str, Any]:
    if not log_path.exists():
        return {}
    for line in reversed(log_path.read_text().splitlines()):
        try:
            return json.loads(line)
        except json.JSONDecodeError:  # blank, or cut by a kill
            continue
    return {}


def _read_wall(path: pathlib.Path) -> float:
    """The accumulated training seconds of ``train_wall.json``; bookkeeping, so a file that
    cannot be read is reported and counted from 0 again (rewritten at the end), not fatal."""
    if not path.exists():
        return 0.0
    try:
        return float(read_state_json(path, fix="")["seconds"])
    except (ValueError, KeyError, TypeError) as err:
        # (a StateFileError already names the file and the reason)
        what = str(err) if isinstance(err, StateFileError) else f"{path}: {_first_line(err)}"
        logging.warning(
            "%s: total_wall_s counts from this call on; it is rewritten when this call has trained",
            what,
        )
        return 0.0


def train(
    state: TrainState,
    update_fn: UpdateFn,
    batch_fn: Callable[[int], Batch],
    *,
    workdir: str | pathlib.Path,
    num_steps: int,
    seed: int = 0,
    checkpoint_every: int = 500,
    keep_every: int | None = None,
    log_every: int = 50,
    progress: bool = True,
    mesh: Mesh | None = None,
    hooks: Mapping[int, Callable[[int, TrainState], None]] | None = None,
    steps_per_dispatch: int | None = None,
) -> tuple[TrainState, TrainInfo]:
    """The one training entry: :func:`fit` (same arguments), and a :class:`TrainInfo`.

    Resumes from the latest checkpoint in ``workdir``. The wall time of a call that trained
    at least one step is added to ``workdir/train_wall.json`` (``{"seconds", "step"}``,
    written atomically), so ``total_wall_s`` is the training cost of the whole run however
    often it was resumed (a call stopped by SIGTERM/SIGINT after training adds its time
    too); a call with nothing left to train writes nothing.
    """
    workdir = pathlib.Path(workdir)
    wall_path = workdir / TRAIN_WALL_FILE
    before = _read_wall(wall_path)
    t0 = time.perf_counter()
    # (the start step comes from fit's own restore: a look at the folder here could differ
    # between processes and send them into different collective calls)
    try:
        state, start = _fit(
            state,
            update_fn,
            batch_fn,
            workdir=workdir,
            num_steps=num_steps,
            mesh=mesh,
            seed=seed,
            checkpoint_every=checkpoint_every,
            keep_every=keep_every,
            log_every=log_every,
            progress=progress,
            hooks=hooks,
            steps_per_dispatch=steps_per_dispatch,
        )
    except Interrupted as err:  # the steps saved for the signal cost time too
        if err.step > err.start and jax.process_index() == 0:
            write_json_atomic(
                wall_path, {"seconds": before + time.perf_counter() - t0, "step": err.step}
            )
        raise
    wall = time.perf_counter() - t0
    steps = int(state.step)
    steps_run = steps - start
    total = before
    if steps_run > 0:
        total = before + wall
        write_json_atomic(wall_path, {"seconds": total, "step": steps})
    info = TrainInfo(
        steps=steps,
        steps_run=steps_run,
        wall_s=wall,
        total_wall_s=total,
        last=_last_logged(workdir / "metrics.jsonl"),
    )
    # several processes: the evaluation that follows runs on this process's copy
    return distributed.local_copy(state), info

"""Is an MVTec attention hot spot tied to image position rather than content?

(the library side of ``python -m experiments.mvtec_position_check``.)

Loads the trained checkpoint of an ``experiments.mvtec_localization`` run and computes the
anomaly attention (deterministic score ``mu_x - mu_y``, prior reference) of every test image and
of the same image rotated by 180 degrees, the latter's map rotated back. Content-driven maps
agree (their hot spots follow the image); a positional artifact (e.g. from padding) stays at the
same place of the *input* and so moves to the opposite corner after rotating back. Prints, per
layer, the mean position of the top 1% of pixels of both, their correlation and the pooled
pixel AUROC of each, and writes them to
``workdir/evaluations/position_check_step<N>_<hash>/results.json``. The workdir must be a
finished run of the same config and category (checked against its ``run.json`` before any
work; see :mod:`vae_xai.workdir`).
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import optax

from data_pipelines import mvtec_ad
from vae_xai import localization, train, validation
from vae_xai import workdir as workdir_lib
from vae_xai.experiments.mvtec_localization import FIELDS, NAME, build_model
from vae_xai.metrics import pixel_auroc

LAYERS = ("stage1", "stage2", "stage3", "stage4")


def top_percent_position(maps: np.ndarray) -> list[float]:
    """Mean (row, col) of each map's top 1% pixels, as fractions of the image size.

    Args:
      maps: ``(N, H, W)``.

    Returns:
      ``[mean row, mean col]`` over all the maps' top pixels.
    """
    n, h, w = maps.shape
    k = max(1, h * w // 100)
    idx = np.argsort(maps.reshape(n, -1), axis=1)[:, -k:]
    return [float((idx // w).mean() / h), float((idx % w).mean() / w)]


def evaluate(
    cfg: Any,
    workdir: str | pathlib.Path,
    *,
    category: str,
    data_dir: str | pathlib.Path,
    layers: Sequence[str] = LAYERS,
) -> dict[str, Any]:
    """The position check of a finished ``mvtec_localization`` run (module doc).

    Writes its own evaluation's ``results.json`` (the results schema, not linked from the
    workdir).

    Args:
      cfg: the config the run was trained with.
      workdir: the run.
      category: the MVTec-AD category.
      data_dir: the folder of the categories.
      layers: the encoder layers checked.

    Returns:
      What was written.
    """
    layers = list(layers)
    model = build_model(cfg)
    validation.model_layers(model, (cfg.image_size, cfg.image_size, 3), layers, "--layers",
                            train=False)  # fmt: skip
    cat_dir = mvtec_ad.resolve_category_dir(data_dir, category)
    # the workdir must be a finished mvtec_localization run of this config and category
    run = workdir_lib.open_trained(
        workdir,
        cfg,
        experiment=NAME,
        fields=FIELDS,
        data={
            "dataset": "MVTec-AD",
            "category": category,
            "files": workdir_lib.fingerprint_files(
                cat_dir, suffixes=mvtec_ad.IMAGE_EXTENSIONS, ignore=mvtec_ad.IGNORED_NAMES
            ),
        },
    )
    workdir = run.workdir
    test = mvtec_ad.load_split(
        data_dir,
        category,
        "test",
        image_size=cfg.image_size,
        cache_dir=cfg.cache_dir or str(workdir / "data_cache"),
    )
    state = train.init_state(model, optax.adam(0.0), test["image"].shape[1:], seed=cfg.seed)
    variables = localization.variables_of(train.restore_params(workdir, state))
    images, masks = test["image"], test["mask"]
    rotated = np.ascontiguousarray(images[:, ::-1, ::-1])
    out = {}
    for layer in layers:
        kw = dict(layer=layer, key=jax.random.key(0), sample=False)
        maps = localization.anomaly_attention_maps(model, variables, images, **kw)
        back = localization.anomaly_attention_maps(model, variables, rotated, **kw)[:, ::-1, ::-1]
        out[layer] = {
            "top1pct_row_col": top_percent_position(maps),
            "rotated_input_top1pct_row_col_after_rotating_back": top_percent_position(back),
            "correlation": float(np.corrcoef(maps.ravel(), back.ravel())[0, 1]),
            "pixel_auroc": pixel_auroc(maps, masks),
            "pixel_auroc_rotated_back": pixel_auroc(back, masks),
        }
        print(layer, json.dumps(out[layer]))
    # its own evaluation folder (not linked from the workdir: the run's results stay there)
    evaluation = run.evaluation(
        {"position_check.layers": layers}, step=cfg.train.num_steps, label="position_check_step"
    )
    return evaluation.save_results({"position_check": out}, publish=False)

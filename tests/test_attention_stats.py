"""attention_mass_stats: where the two top latents' maps lie, against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from vae_xai.experiments.dsprites_disentanglement import attention_mass_stats


def _masks() -> np.ndarray:
    masks = np.zeros((2, 4, 4), bool)
    masks[0, :2, :2] = True  # 4 pixels
    masks[1, 0, :] = True  # 4 pixels
    return masks


def test_blank_second_maps_and_shares_on_the_sprite():
    maps = np.zeros((2, 2, 4, 4))
    maps[0, 0] = 1.0  # total 16, 4 on the sprite: 0.25
    maps[1, 0, 0, 0] = 2.0  # on the sprite
    maps[1, 0, 3, 3] = 2.0  # off: 2 of 4 on the sprite, 0.5
    maps[1, 1, 0, 0] = 1e-9  # 1e-9 <= 1e-6 * 4: blank
    out = attention_mass_stats(maps, _masks())
    assert out["blank_fraction"] == 1.0
    assert out["on_sprite_top1"] == pytest.approx(0.375)
    assert out["on_sprite_top2"] is None  # blank on every image
    assert out["sprite_area"] == pytest.approx(8 / 32)


def test_no_blank_maps():
    masks = _masks()
    maps = np.zeros((2, 2, 4, 4))
    maps[:, 0] = 1.0  # 0.25 on both images
    maps[0, 1] = 3.0 * masks[0]  # all on the sprite: 1.0
    maps[1, 1] = 0.5  # uniform: 0.25
    maps[1, 1, 2, 2] = 4.5  # total 8 + 4 = 12, on the sprite 4 x 0.5 = 2: 1/6
    out = attention_mass_stats(maps, masks)
    assert out["blank_fraction"] == 0.0
    assert out["on_sprite_top1"] == pytest.approx(0.25)
    assert out["on_sprite_top2"] == pytest.approx((1.0 + 1 / 6) / 2)


def test_a_pair_of_zero_maps_is_blank_and_tolerance_is_relative():
    masks = _masks()
    maps = np.zeros((2, 2, 4, 4))
    maps[1, 0, 0, 0] = 1.0
    maps[1, 1, 0, 1] = 1e-3  # 1e-3 of the larger map: blank only with a looser tolerance
    assert attention_mass_stats(maps, masks)["blank_fraction"] == 0.5
    assert attention_mass_stats(maps, masks, blank_tol=1e-2)["blank_fraction"] == 1.0
    out = attention_mass_stats(maps, masks)
    assert out["on_sprite_top1"] == 1.0 and out["on_sprite_top2"] == 1.0


@pytest.mark.parametrize(
    "maps, masks, match",
    [
        (np.zeros((2, 3, 4, 4)), _masks(), r"\(N, 2, H, W\)"),
        (np.zeros((2, 2, 4, 4)), np.zeros((2, 4, 5), bool), "masks must be"),
        (-np.ones((2, 2, 4, 4)), _masks(), "non-negative"),
        (np.full((2, 2, 4, 4), np.nan), _masks(), "NaN"),
    ],
)
def test_bad_inputs_are_named(maps, masks, match):
    with pytest.raises(ValueError, match=match):
        attention_mass_stats(maps, masks)

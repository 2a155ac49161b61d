"""Tests for the MVTec-AD pipeline (tiny generated fixtures + real bottle) and augmentations."""

from __future__ import annotations

import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fixtures_anomaly import MASK_ENCODINGS, MVTEC_DEFECT_BOX, make_mvtec_category, save_mask
from PIL import Image

from data_pipelines import augment
from data_pipelines import mvtec_ad as mv


@pytest.fixture()
def root(tmp_path: pathlib.Path) -> pathlib.Path:
    data = tmp_path / "mvtec"
    make_mvtec_category(data, "toy")
    make_mvtec_category(data, "graytoy", grayscale=True, seed=1)
    return data


# ----------------------------------------------------------------------------- loading


def test_train_split_shapes_dtypes_ranges(root: pathlib.Path) -> None:
    d = mv.load_split(root, "toy", "train", image_size=20)
    assert set(d) == {"image", "mask", "label", "defect", "defect_id", "path"}
    assert d["image"].shape == (4, 20, 20, 3) and d["image"].dtype == np.float32
    assert 0.0 <= d["image"].min() and d["image"].max() <= 1.0
    assert d["mask"].shape == (4, 20, 20) and d["mask"].dtype == np.uint8
    assert not d["mask"].any()
    np.testing.assert_array_equal(d["label"], 0)
    assert d["label"].dtype == np.int32
    assert d["defect"].tolist() == ["good"] * 4
    assert d["path"].tolist() == [f"toy/train/good/{i:03d}.png" for i in range(4)]


def test_test_split_masks_and_labels(root: pathlib.Path) -> None:
    d = mv.load_split(root, "toy", "test", image_size=20)
    assert d["image"].shape == (5, 20, 20, 3)
    # sorted defect folders: crack (2), good (2), hole (1)
    assert d["defect"].tolist() == ["crack", "crack", "good", "good", "hole"]
    np.testing.assert_array_equal(d["label"], [1, 1, 0, 0, 1])
    np.testing.assert_array_equal(d["defect_id"], [1, 1, 0, 0, 2])  # good=0, then sorted
    assert set(np.unique(d["mask"])) <= {0, 1}
    expected = np.zeros((20, 20), np.uint8)
    expected[5:10, 10:16] = 1  # MVTEC_DEFECT_BOX at half resolution
    for i in range(5):
        if d["label"][i]:
            np.testing.assert_array_equal(d["mask"][i], expected)
        else:
            assert not d["mask"][i].any()
    # the brightened defect region shows in the image
    assert d["image"][0, 6:9, 11:15].min() > 0.9
    assert d["path"][0] == "toy/test/crack/000.png"


def test_full_size_mask_is_exact(root: pathlib.Path) -> None:
    d = mv.load_split(root, "toy", "test", image_size=40)
    expected = np.zeros((40, 40), np.uint8)
    expected[MVTEC_DEFECT_BOX] = 1
    np.testing.assert_array_equal(d["mask"][0], expected)
    raw = np.asarray(Image.open(root / "toy/test/crack/000.png"), np.float32) / 255
    np.testing.assert_allclose(d["image"][0], raw, atol=1e-6)


def test_nonsquare_size_and_channels(root: pathlib.Path) -> None:
    d = mv.load_split(root, "toy", "test", image_size=(16, 24), channels=1)
    assert d["image"].shape == (5, 16, 24, 1) and d["mask"].shape == (5, 16, 24)


def test_grayscale_category(root: pathlib.Path) -> None:
    assert Image.open(root / "graytoy/train/good/000.png").mode == "L"
    d3 = mv.load_split(root, "graytoy", "train", image_size=20)
    assert d3["image"].shape == (4, 20, 20, 3)
    np.testing.assert_array_equal(d3["image"][..., 0], d3["image"][..., 1])
    np.testing.assert_array_equal(d3["image"][..., 0], d3["image"][..., 2])
    d1 = mv.load_split(root, "graytoy", "train", image_size=20, channels=1)
    assert d1["image"].shape == (4, 20, 20, 1)
    np.testing.assert_array_equal(d1["image"][..., 0], d3["image"][..., 0])


def test_root_may_hold_mvtec_ad_folder(tmp_path: pathlib.Path) -> None:
    make_mvtec_category(tmp_path / "mvtec_ad", "toy")
    d = mv.load_split(tmp_path, "toy", "train", image_size=8, num_workers=1)
    assert d["image"].shape == (4, 8, 8, 3)


# ----------------------------------------------------------------------------- errors


def test_error_missing_root(tmp_path: pathlib.Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mv.load_split(tmp_path / "nope", "toy")


def test_error_unknown_category(root: pathlib.Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"unknown MVTec-AD category 'bottel'") as e:
        mv.load_split(root, "bottel")
    assert "graytoy" in str(e.value) and "toy" in str(e.value)
    with pytest.raises(ValueError, match="plain folder name"):
        mv.load_split(root, "../toy")


def test_error_bad_split_and_missing_train_good(root: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="split must be"):
        mv.load_split(root, "toy", "val")  # type: ignore[arg-type]
    (root / "toy/train/good").rename(root / "toy/train/ok")
    with pytest.raises(FileNotFoundError, match=r"train[/\\]good"):
        mv.load_split(root, "toy", "train")


def test_error_empty_split(root: pathlib.Path) -> None:
    for p in (root / "toy/train/good").iterdir():
        p.unlink()
    (root / "toy/train/good/.DS_Store").write_bytes(b"x")  # ignored, still empty
    with pytest.raises(ValueError, match=r"empty split.*train[/\\]good"):
        mv.load_split(root, "toy", "train")


def test_error_defect_image_without_mask(root: pathlib.Path) -> None:
    (root / "toy/ground_truth/crack/001_mask.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"001\.png has no mask.*001_mask\.png"):
        mv.load_split(root, "toy", "test")


def test_error_missing_ground_truth_folder(root: pathlib.Path) -> None:
    (root / "toy/ground_truth/hole").rename(root / "toy/ground_truth/holes")
    with pytest.raises(FileNotFoundError, match=r"missing mask folder .*ground_truth[/\\]hole"):
        mv.load_split(root, "toy", "test")


def test_error_mask_size_mismatch(root: pathlib.Path) -> None:
    Image.new("L", (30, 40)).save(root / "toy/ground_truth/hole/000_mask.png")
    with pytest.raises(ValueError, match=r"size mismatch.*40x40.*000_mask\.png is 30x40"):
        mv.load_split(root, "toy", "test", num_workers=1)


def test_error_corrupt_image(root: pathlib.Path) -> None:
    (root / "toy/train/good/002.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    with pytest.raises(mv.CorruptFileError, match=r"cannot read image file .*002\.png"):
        mv.load_split(root, "toy", "train")


# ----------------------------------------------------------------------------- bad masks


def _box_mask(size: int = 40) -> np.ndarray:
    fg = np.zeros((size, size), bool)
    fg[MVTEC_DEFECT_BOX] = True
    return fg


@pytest.mark.parametrize("encoding", MASK_ENCODINGS)
def test_any_binary_mask_encoding_gives_the_same_masks(root: pathlib.Path, encoding: str) -> None:
    # 0/1 and the palette (gray levels 0 and 38) were binarized to empty masks by `> 127`.
    for mask in (root / "toy/ground_truth").rglob("*_mask.png"):
        save_mask(mask, _box_mask(), encoding)
    d = mv.load_split(root, "toy", "test", image_size=20)
    expected = np.zeros((20, 20), np.uint8)
    expected[5:10, 10:16] = 1  # MVTEC_DEFECT_BOX at half resolution
    for i in range(5):
        np.testing.assert_array_equal(d["mask"][i], expected if d["label"][i] else 0)


def test_mask_foreground_hand_computed() -> None:
    arr = np.array([[0, 7], [7, 0]], np.uint8)
    np.testing.assert_array_equal(mv.mask_foreground(Image.fromarray(arr)), arr == 7)
    all_fg = Image.fromarray(np.full((2, 3), 255, np.uint8))
    assert mv.mask_foreground(all_fg).all()  # one non-zero value: the whole image is defect
    assert not mv.mask_foreground(Image.new("L", (3, 2))).any()
    with pytest.raises(ValueError, match=r"mask m\.png is not binary: found values \[0, 3, 255\]"):
        mv.mask_foreground(Image.fromarray(np.array([[0, 3, 255]], np.uint8)), "m.png")
    with pytest.raises(ValueError, match=r"found values \[1, 255\]"):  # no background level
        mv.mask_foreground(Image.fromarray(np.array([[1, 255]], np.uint8)), "m.png")
    ramp = Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16))
    with pytest.raises(ValueError, match=r"found 256 distinct values \[0, 1, \.\.\., 255\]"):
        mv.mask_foreground(ramp, "ramp.png")
    wide = Image.fromarray(np.array([[0, 1000, 65535]], np.uint16))
    with pytest.raises(ValueError, match=r"found values \[0, 1000, 65535\]"):
        mv.mask_foreground(wide, "w.png")


def test_error_non_binary_mask_names_file_and_values(root: pathlib.Path) -> None:
    arr = np.zeros((40, 40), np.uint8)
    arr[MVTEC_DEFECT_BOX] = 255
    arr[0, :3] = 3  # e.g. an antialiased or JPEG-damaged edge
    Image.fromarray(arr, mode="L").save(root / "toy/ground_truth/crack/001_mask.png")
    with pytest.raises(
        ValueError,
        match=r"mask .*crack[/\\]001_mask\.png is not binary: found values \[0, 3, 255\]",
    ):
        mv.load_split(root, "toy", "test", num_workers=1)


def test_error_empty_mask_on_defect_image(root: pathlib.Path, tmp_path: pathlib.Path) -> None:
    save_mask(root / "toy/ground_truth/hole/000_mask.png", np.zeros((40, 40), bool))
    with pytest.raises(
        ValueError,
        match=r"anomalous test image .*hole[/\\]000\.png has an empty mask: "
        r".*hole[/\\]000_mask\.png .*allow_empty_masks=True",
    ):
        mv.load_split(root, "toy", "test", image_size=20)
    # the explicit opt-out loads it: still anomalous, no defect pixel
    cache = tmp_path / "cache"
    d = mv.load_split(root, "toy", "test", image_size=20, allow_empty_masks=True, cache_dir=cache)
    assert d["defect"][4] == "hole" and d["label"][4] == 1 and not d["mask"][4].any()
    assert d["mask"][0].sum() == 30  # the other defect masks are unchanged
    # ... and a cache written with the opt-out is not served to a default call
    with pytest.raises(ValueError, match="has an empty mask"):
        mv.load_split(root, "toy", "test", image_size=20, cache_dir=cache)


# ----------------------------------------------------------------------------- cache


def test_cache_hit_does_not_decode(
    root: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    first = mv.load_split(root, "toy", "test", image_size=20, cache_dir=cache)
    files = sorted(p.name for p in cache.iterdir())
    assert files == ["mvtec_toy_test_20x20_c3_bilinear.npz"]  # no temporary left behind

    def fail(path: pathlib.Path) -> Image.Image:
        raise AssertionError(f"decoded {path} despite a valid cache")

    monkeypatch.setattr(mv.decode, "_read_image", fail)  # where examples are decoded
    second = mv.load_split(root, "toy", "test", image_size=20, cache_dir=cache)
    assert first.keys() == second.keys()
    for k in first:
        np.testing.assert_array_equal(first[k], second[k])
        assert first[k].dtype == second[k].dtype
    # a different size is a different cache entry -> needs decoding
    with pytest.raises(AssertionError, match="decoded"):
        mv.load_split(root, "toy", "test", image_size=10, cache_dir=cache)


def test_stale_cache_is_rebuilt(root: pathlib.Path, tmp_path: pathlib.Path) -> None:
    cache = tmp_path / "cache"
    first = mv.load_split(root, "toy", "train", image_size=20, cache_dir=cache)
    target = root / "toy/train/good/000.png"
    Image.new("RGB", (40, 40), (255, 0, 0)).save(target)
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    second = mv.load_split(root, "toy", "train", image_size=20, cache_dir=cache)
    np.testing.assert_allclose(second["image"][0, ..., 0], 1.0)
    np.testing.assert_array_equal(second["image"][1:], first["image"][1:])
    # a new file in the split also invalidates it
    Image.new("RGB", (40, 40)).save(root / "toy/train/good/009.png")
    assert len(mv.load_split(root, "toy", "train", image_size=20, cache_dir=cache)["label"]) == 5


def test_corrupt_cache_is_rebuilt(root: pathlib.Path, tmp_path: pathlib.Path) -> None:
    cache = tmp_path / "cache"
    first = mv.load_split(root, "toy", "test", image_size=20, cache_dir=cache)
    path = cache / mv.cache_file_name("toy", "test", 20)
    path.write_bytes(path.read_bytes()[:100])  # truncated, as by a crash without atomicity
    again = mv.load_split(root, "toy", "test", image_size=20, cache_dir=cache)
    np.testing.assert_array_equal(again["image"], first["image"])
    assert mv.load_preprocessed(path)["image"].shape == (5, 20, 20, 3)  # rewritten, valid


def test_failed_cache_write_leaves_no_file(
    root: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez_compressed", killed)
    with pytest.raises(KeyboardInterrupt):
        mv.load_split(root, "toy", "train", image_size=20, cache_dir=cache)
    assert list(cache.iterdir()) == []


def test_cli_and_load_preprocessed(root: pathlib.Path, tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    rc = mv.main([f"--data_dir={root}", "--category=toy", "--image_size=16", f"--out={out}"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "mvtec_toy_test_16x16_c3_bilinear.npz",
        "mvtec_toy_train_16x16_c3_bilinear.npz",
    ]
    direct = mv.load_split(root, "toy", "test", image_size=16)
    pre = mv.load_preprocessed(out, "toy", "test", 16)
    for k in direct:
        np.testing.assert_array_equal(direct[k], pre[k])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mv.load_preprocessed(out, "toy", "test", 32)


# ----------------------------------------------------------------------------- batches


def test_iterate_batches() -> None:
    data = {"image": np.arange(10, dtype=np.float32)[:, None], "label": np.arange(10)}
    batches = list(mv.iterate_batches(data, 4, seed=1, epochs=2))
    assert len(batches) == 4 and all(b["image"].shape == (4, 1) for b in batches)
    for b in batches:
        np.testing.assert_array_equal(b["image"][:, 0], b["label"])  # keys stay aligned
    again = list(mv.iterate_batches(data, 4, seed=1, epochs=2))
    for a, b in zip(batches, again, strict=True):
        np.testing.assert_array_equal(a["label"], b["label"])
    assert len(set(np.concatenate([b["label"] for b in batches[:2]]))) == 8  # no repeats
    full = list(mv.iterate_batches(data, 4, shuffle=False, drop_remainder=False))
    assert [len(b["label"]) for b in full] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in full]), np.arange(10))
    forever = mv.iterate_batches(data, 3, epochs=None)
    assert len([next(forever) for _ in range(20)]) == 20
    with pytest.raises(ValueError, match="exceeds"):
        next(mv.iterate_batches(data, 11))
    with pytest.raises(ValueError, match="different leading"):
        next(mv.iterate_batches({"a": np.zeros(3), "b": np.zeros(4)}, 2))


# ----------------------------------------------------------------------------- augment


def _batch(h: int = 9, w: int = 9, b: int = 3) -> np.ndarray:
    return np.random.default_rng(0).random((b, h, w, 3), dtype=np.float32)


def test_mirror_twice_is_identity() -> None:
    x = jnp.asarray(_batch(7, 11))
    np.testing.assert_array_equal(augment.flip_horizontal(augment.flip_horizontal(x)), x)
    np.testing.assert_array_equal(augment.flip_vertical(augment.flip_vertical(x)), x)
    np.testing.assert_array_equal(augment.flip_horizontal(x), np.asarray(x)[:, :, ::-1])


def test_rotation_zero_and_right_angles() -> None:
    x = _batch()
    np.testing.assert_array_equal(augment.rotate(jnp.asarray(x), 0.0), x)
    # documented direction: +90 degrees = counter-clockwise = np.rot90(k=1)
    for k in (1, 2, 3, -1):
        got = augment.rotate(jnp.asarray(x), 90.0 * k)
        np.testing.assert_allclose(got, np.rot90(x, k, axes=(1, 2)), atol=1e-6)
    corner = np.zeros((1, 5, 5, 1), np.float32)
    corner[0, 0, 4] = 1  # top-right corner -> top-left after a CCW quarter turn
    assert augment.rotate(jnp.asarray(corner), 90.0)[0, 0, 0, 0] == 1


def test_rotation_matches_scipy_and_keeps_shape() -> None:
    ndimage = pytest.importorskip("scipy.ndimage")
    x = _batch(21, 21, 1)
    got = np.asarray(augment.rotate(jnp.asarray(x), 30.0, fill_mode="constant"))
    ref = ndimage.rotate(x[0], 30.0, axes=(1, 0), reshape=False, order=1, mode="constant")
    np.testing.assert_allclose(got[0, 6:15, 6:15], ref[6:15, 6:15], atol=1e-5)
    y = jnp.asarray(_batch(8, 13))
    assert augment.rotate(y, jnp.array([10.0, -20.0, 33.0])).shape == (3, 8, 13, 3)


def test_augment_batch_jit_and_masks() -> None:
    x = jnp.asarray(_batch(12, 12, 4))
    m = jnp.asarray((_batch(12, 12, 4)[..., 0] > 0.5).astype(np.uint8))
    fn = jax.jit(augment.augment_batch, static_argnames=("vflip", "right_angles"))
    xi, mi = fn(jax.random.key(0), x, m, vflip=True, right_angles=True)
    assert xi.shape == x.shape and xi.dtype == x.dtype
    assert mi.shape == m.shape and mi.dtype == m.dtype
    assert set(np.unique(np.asarray(mi)).tolist()) <= {0, 1}
    xj, _ = fn(jax.random.key(0), x, m, vflip=True, right_angles=True)
    np.testing.assert_array_equal(xi, xj)  # deterministic given the key
    assert float(jnp.abs(xi - x).max()) > 0
    assert augment.augment_batch(jax.random.key(1), x).shape == x.shape


def test_right_angles_only_gives_exact_permutations() -> None:
    x = _batch(6, 6, 8)
    xa, ma = augment.augment_batch(
        jax.random.key(3),
        jnp.asarray(x),
        jnp.asarray(x[..., 0]),
        hflip=True,
        max_rotation_deg=0.0,
        right_angles=True,
    )
    for i in range(8):
        variants = [np.rot90(v, k) for v in (x[i], x[i][:, ::-1]) for k in range(4)]
        assert any(np.array_equal(np.asarray(xa[i]), v) for v in variants)
        np.testing.assert_array_equal(ma[i], xa[i, ..., 0])  # mask followed the image


# ----------------------------------------------------------------------------- real data


@pytest.mark.real_data
def test_real_bottle(data_dir: pathlib.Path) -> None:
    root = data_dir / "mvtec_ad"
    train = mv.list_split(root, "bottle", "train")
    assert len(train) == 209 and all(ex.mask_path is None for ex in train)
    d = mv.load_split(root, "bottle", "test", image_size=64)
    assert d["image"].shape == (83, 64, 64, 3) and d["mask"].shape == (83, 64, 64)
    names, counts = np.unique(d["defect"], return_counts=True)
    assert dict(zip(names.tolist(), counts.tolist(), strict=True)) == {
        "broken_large": 20,
        "broken_small": 22,
        "contamination": 21,
        "good": 20,
    }
    area = d["mask"].reshape(83, -1).sum(axis=1)
    assert (area[d["label"] == 1] > 0).all() and (d["label"] == 1).sum() == 63
    assert (area[d["label"] == 0] == 0).all()
    assert set(np.unique(d["mask"]).tolist()) == {0, 1}
    assert 0 <= d["image"].min() and d["image"].max() <= 1
    sha_list = data_dir / "mvtec_ad_bottle.sha256"
    if sha_list.is_file():  # paths use the same convention as the published list
        listed = {line.split()[-1] for line in sha_list.read_text().splitlines() if line}
        assert set(d["path"].tolist()) <= listed

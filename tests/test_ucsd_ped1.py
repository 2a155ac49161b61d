"""Tests for the UCSD Ped1 pipeline on a tiny fixture in the official v1p2 layout."""

from __future__ import annotations

import pathlib
import shutil

import numpy as np
import pytest
from fixtures_anomaly import PED1_H, PED1_MASK_BOX, PED1_W, make_ucsd_ped1, save_mask
from PIL import Image

from data_pipelines import ucsd_ped1 as ped1


@pytest.fixture()
def ped1_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    return make_ucsd_ped1(tmp_path / "ucsd")


# ----------------------------------------------------------------------------- .m parser


def test_parse_official_style_lines() -> None:
    text = """TestDataset = {};
TestDataset{1}.gt_frame = [60:152];
TestDataset{2}.gt_frame = [50:175];
TestDataset{11}.gt_frame = [1:30, 50:100];
"""
    gt = ped1.parse_frame_gt(text)
    assert sorted(gt) == [1, 2, 11]
    np.testing.assert_array_equal(gt[1], np.arange(60, 153))
    assert gt[2][0] == 50 and gt[2][-1] == 175 and len(gt[2]) == 126
    np.testing.assert_array_equal(gt[11], np.r_[1:31, 50:101])
    assert gt[11].dtype == np.int32


def test_parse_robustness() -> None:
    text = """% frame-level ground truth
    TestDataset{3}.gt_frame=[ 5 : 7 ,9 12:2:16 ];  % trailing comment
    testdataset{ 4 }.gt_frame = [1:3, ...
        10:11];
    TestDataset{5}.gt_frame = [];
    TestDataset{6}.gt_frame = 8:9;
    % TestDataset{7}.gt_frame = [1:200];
    TestDataset{3}.gt_frame = [5:8, 7];
    """
    gt = ped1.parse_frame_gt(text)
    assert sorted(gt) == [3, 4, 5, 6]
    np.testing.assert_array_equal(gt[3], [5, 6, 7, 8])  # repeated entry: last one wins
    np.testing.assert_array_equal(gt[4], [1, 2, 3, 10, 11])
    assert gt[5].size == 0
    np.testing.assert_array_equal(gt[6], [8, 9])
    np.testing.assert_array_equal(ped1.frame_labels(gt[4], [1, 4, 10, 12]), [1, 0, 1, 0])


def test_parse_errors() -> None:
    with pytest.raises(ValueError, match=r"my\.m: cannot parse frame range 'a:5'"):
        ped1.parse_frame_gt("TestDataset{1}.gt_frame = [a:5];", source="my.m")
    with pytest.raises(ValueError, match="no 'TestDataset"):
        ped1.parse_frame_gt("x = 1;")
    with pytest.raises(ValueError, match="1-based"):
        ped1.parse_frame_gt("TestDataset{1}.gt_frame = [0:5];")


# ----------------------------------------------------------------------------- loading


def test_load_train(ped1_dir: pathlib.Path) -> None:
    d = ped1.load_train(ped1_dir.parent.parent)  # folder holding UCSD_Anomaly_Dataset.v1p2
    assert d["image"].shape == (10, 100, 100, 1) and d["image"].dtype == np.float32
    assert 0 <= d["image"].min() and d["image"].max() <= 1 and d["image"].std() > 0.05
    assert d["clip"].tolist() == ["Train001"] * 5 + ["Train002"] * 5
    np.testing.assert_array_equal(d["frame"], [1, 2, 3, 4, 5] * 2)
    np.testing.assert_array_equal(d["label"], 0)
    # full resolution keeps the raw pixels; image_size is (H, W)
    full = ped1.load_train(ped1_dir, image_size=(PED1_H, PED1_W), num_workers=1)
    raw = np.asarray(Image.open(ped1_dir / "Train/Train002/003.tif"), np.float32) / 255
    np.testing.assert_allclose(full["image"][7, ..., 0], raw, atol=1e-6)


def test_load_test_pixel_gt_only(ped1_dir: pathlib.Path) -> None:
    d = ped1.load_test(ped1_dir.parent, image_size=(79, 119))  # the v1p2 folder
    assert set(d) == {"image", "mask", "label", "has_mask", "clip", "frame"}
    assert d["image"].shape == (5, 79, 119, 1) and d["mask"].shape == (5, 79, 119)
    assert d["clip"].tolist() == ["Test001"] * 5
    np.testing.assert_array_equal(d["label"], [0, 1, 1, 1, 0])  # TestDataset{1} = [2:4]
    assert d["has_mask"].all() and d["mask"].dtype == np.uint8
    assert set(np.unique(d["mask"]).tolist()) == {0, 1}
    expected = np.zeros((79, 119), np.uint8)
    rows, cols = PED1_MASK_BOX
    expected[rows.start // 2 : rows.stop // 2, cols.start // 2 : cols.stop // 2] = 1
    for i in range(5):
        np.testing.assert_array_equal(d["mask"][i], expected if d["label"][i] else 0)


def test_load_test_all_clips(ped1_dir: pathlib.Path) -> None:
    d = ped1.load_test(ped1_dir, image_size=50, pixel_gt_only=False)
    assert d["image"].shape == (10, 50, 50, 1)
    assert d["clip"].tolist() == ["Test001"] * 5 + ["Test002"] * 5
    np.testing.assert_array_equal(d["label"], [0, 1, 1, 1, 0, 1, 0, 1, 0, 1])
    np.testing.assert_array_equal(d["has_mask"], [True] * 5 + [False] * 5)
    assert not d["mask"][5:].any() and d["mask"][1].any()


def test_batches(ped1_dir: pathlib.Path) -> None:
    d = ped1.load_train(ped1_dir, image_size=(20, 30))
    batches = list(ped1.iterate_batches(d, 4, seed=0))
    assert len(batches) == 2 and batches[0]["image"].shape == (4, 20, 30, 1)


def test_extended_gt_set(tmp_path: pathlib.Path) -> None:
    root = make_ucsd_ped1(tmp_path, gt_clips=(1, 2), stray_files=False)
    d = ped1.load_test(root, image_size=20)
    assert len(d["label"]) == 10 and d["has_mask"].all()


# ----------------------------------------------------------------------------- errors


def test_error_missing_folders(tmp_path: pathlib.Path, ped1_dir: pathlib.Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ped1.load_train(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no UCSDped1 folder"):
        ped1.load_test(tmp_path / "empty")
    shutil.rmtree(ped1_dir / "Train")
    with pytest.raises(FileNotFoundError, match=r"missing folder .*Train"):
        ped1.load_train(ped1_dir)


def test_error_missing_m_file(ped1_dir: pathlib.Path) -> None:
    (ped1_dir / "Test/UCSDped1.m").unlink()
    with pytest.raises(FileNotFoundError, match=r"UCSDped1\.m"):
        ped1.load_test(ped1_dir)


def test_error_gt_frame_count_mismatch(ped1_dir: pathlib.Path) -> None:
    (ped1_dir / "Test/Test001_gt/005.bmp").unlink()
    with pytest.raises(ValueError, match=r"Test001_gt has 4 frames but clip .*Test001 has 5"):
        ped1.load_test(ped1_dir)


def test_error_clip_without_m_entry(tmp_path: pathlib.Path) -> None:
    root = make_ucsd_ped1(tmp_path, m_text="TestDataset{1}.gt_frame = [2:4];\n")
    ped1.load_test(root)  # only Test001 needed with pixel_gt_only
    with pytest.raises(ValueError, match=r"no 'TestDataset\{2\}.gt_frame' entry"):
        ped1.load_test(root, pixel_gt_only=False)


def test_error_frames_beyond_clip(tmp_path: pathlib.Path) -> None:
    root = make_ucsd_ped1(tmp_path, m_text="TestDataset{1}.gt_frame = [4:9];\n", gt_clips=())
    with pytest.raises(ValueError, match=r"marks frames \[6, 7, 8, 9\]"):
        ped1.load_test(root, pixel_gt_only=False)


def test_error_no_gt_folders(tmp_path: pathlib.Path) -> None:
    root = make_ucsd_ped1(tmp_path, gt_clips=())
    with pytest.raises(ValueError, match="no TestNNN_gt"):
        ped1.load_test(root)


def test_error_orphan_gt_folder(ped1_dir: pathlib.Path) -> None:
    shutil.copytree(ped1_dir / "Test/Test001_gt", ped1_dir / "Test/Test009_gt")
    with pytest.raises(ValueError, match=r"without a matching test clip.*Test009_gt"):
        ped1.load_test(ped1_dir)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_error_unreadable_frame(ped1_dir: pathlib.Path) -> None:
    (ped1_dir / "Test/Test001/003.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(ped1.CorruptFileError, match=r"cannot read image file .*003\.tif"):
        ped1.load_test(ped1_dir)


def test_error_mask_size_mismatch(ped1_dir: pathlib.Path) -> None:
    Image.new("L", (100, 100)).save(ped1_dir / "Test/Test001_gt/002.bmp")
    with pytest.raises(ValueError, match=r"size mismatch.*002\.bmp is 100x100"):
        ped1.load_test(ped1_dir)


# ----------------------------------------------------------------------------- bad input


def _box(anomalous: bool) -> np.ndarray:
    fg = np.zeros((PED1_H, PED1_W), bool)
    if anomalous:
        fg[PED1_MASK_BOX] = True
    return fg


@pytest.mark.parametrize("encoding", ["0/1", "bool", "palette"])
def test_any_binary_mask_encoding(ped1_dir: pathlib.Path, encoding: str) -> None:
    want = ped1.load_test(ped1_dir, image_size=(79, 119))["mask"]
    assert want[1:4].any()
    for f in range(1, 6):  # frames 2-4 are anomalous (TestDataset{1} = [2:4])
        save_mask(ped1_dir / f"Test/Test001_gt/{f:03d}.bmp", _box(2 <= f <= 4), encoding)
    got = ped1.load_test(ped1_dir, image_size=(79, 119))["mask"]
    np.testing.assert_array_equal(got, want)


def test_error_non_binary_mask(ped1_dir: pathlib.Path) -> None:
    arr = _box(True).astype(np.uint8) * 255
    arr[0, 0] = 128
    Image.fromarray(arr, mode="L").save(ped1_dir / "Test/Test001_gt/003.bmp")
    with pytest.raises(
        ValueError,
        match=r"mask .*Test001_gt[/\\]003\.bmp is not binary: found values \[0, 128, 255\]",
    ):
        ped1.load_test(ped1_dir)


def test_error_empty_mask_on_anomalous_frame(ped1_dir: pathlib.Path) -> None:
    save_mask(ped1_dir / "Test/Test001_gt/003.bmp", _box(False))  # frame 3 is anomalous
    with pytest.raises(
        ValueError,
        match=r"frame .*Test001[/\\]003\.tif is anomalous in UCSDped1\.m but its mask "
        r".*Test001_gt[/\\]003\.bmp is empty",
    ):
        ped1.load_test(ped1_dir)
    d = ped1.load_test(ped1_dir, image_size=(79, 119), allow_empty_masks=True)
    np.testing.assert_array_equal(d["label"], [0, 1, 1, 1, 0])
    assert not d["mask"][2].any() and d["mask"][1].any() and d["mask"][3].any()


@pytest.mark.parametrize(
    ("split", "official", "twin"),
    [("Test", "Test001", "Test1"), ("Train", "Train001", "Train1"), ("Test", "Test001", "test001")],
)
def test_error_ambiguous_clip_folder(
    ped1_dir: pathlib.Path, split: str, official: str, twin: str
) -> None:
    # Before: Test1 was parsed as clip 1 too, doubling the test set (both using Test001_gt).
    shutil.copytree(ped1_dir / split / official, ped1_dir / split / twin)
    load = ped1.load_test if split == "Test" else ped1.load_train
    with pytest.raises(
        ValueError,
        match=rf"ambiguous folder name .*{twin}: .*second {official} beside .*{official}",
    ):
        load(ped1_dir)


def test_error_unofficial_folder_names(ped1_dir: pathlib.Path) -> None:
    (ped1_dir / "Test/Test001_gt").rename(ped1_dir / "Test/Test01_gt")
    with pytest.raises(
        ValueError, match=r"ambiguous folder name .*Test01_gt: .*would be 'Test001_gt'; rename"
    ):
        ped1.load_test(ped1_dir)
    (ped1_dir / "Test/Test01_gt").rename(ped1_dir / "Test/Test001_gt")
    # names that cannot be read as a clip of that split are ignored, as before
    (ped1_dir / "Test/Test001_gt_old").mkdir()
    (ped1_dir / "Train/Test001").mkdir()
    assert len(ped1.load_test(ped1_dir, image_size=20)["label"]) == 5
    assert len(ped1.load_train(ped1_dir, image_size=20)["label"]) == 10


def test_error_ped2_labels_are_not_used(ped1_dir: pathlib.Path) -> None:
    # Before: a lone UCSDped2.m (UCSD Ped2's labels) was read as Ped1's.
    (ped1_dir / "Test/UCSDped1.m").rename(ped1_dir / "Test/UCSDped2.m")
    with pytest.raises(
        FileNotFoundError, match=r"missing .*UCSDped1\.m; found \['UCSDped2\.m'\], not used"
    ):
        ped1.load_test(ped1_dir)


def test_error_frame_size(ped1_dir: pathlib.Path) -> None:
    rng = np.random.default_rng(3)
    odd = Image.fromarray(rng.integers(0, 256, (150, 200), dtype=np.uint8), mode="L")
    odd.save(ped1_dir / "Train/Train002/003.tif")
    with pytest.raises(
        ValueError,
        match=r"frame .*Train002[/\\]003\.tif is 200x150 \(WxH\); UCSD Ped1 frames are 238x158"
        r".*check_frame_size=False",
    ):
        ped1.load_train(ped1_dir)
    d = ped1.load_train(ped1_dir, image_size=(50, 60), check_frame_size=False)
    want = np.asarray(odd.resize((60, 50), Image.Resampling.BILINEAR), np.float32) / 255
    np.testing.assert_allclose(d["image"][7, ..., 0], want, atol=1e-6)
    odd.save(ped1_dir / "Test/Test002/001.tif")  # a clip without masks is checked too
    with pytest.raises(ValueError, match=r"Test002[/\\]001\.tif is 200x150"):
        ped1.load_test(ped1_dir, pixel_gt_only=False)

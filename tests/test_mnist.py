"""MNIST IDX reader on generated files, its errors, and (real_data) the full dataset."""

from __future__ import annotations

import gzip
import pathlib

import numpy as np
import pytest

from data_pipelines import mnist


def write_idx(path: pathlib.Path, array: np.ndarray, *, compress: bool) -> None:
    code = {np.uint8: 0x08}[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(s).to_bytes(4, "big") for s in array.shape
    )
    data = header + array.tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


@pytest.fixture
def fake_mnist(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    train_labels = np.array([0, 1, 2, 3, 1, 1, 7, 9, 4, 1, 0, 5], np.uint8)
    test = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    test_labels = np.array([7, 2, 1, 0, 4], np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte", train, compress=True)
    write_idx(tmp_path / "train-labels-idx1-ubyte", train_labels, compress=True)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", test, compress=False)  # raw also works
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", test_labels, compress=False)
    return tmp_path, train, train_labels, test, test_labels


def test_load_gz_and_raw(fake_mnist):
    root, train, train_labels, test, test_labels = fake_mnist
    images, labels = mnist.load(root, "train")
    assert images.shape == (12, 28, 28, 1) and images.dtype == np.float32
    np.testing.assert_array_equal(images[..., 0] * 255.0, train.astype(np.float32))
    np.testing.assert_array_equal(labels, train_labels)
    images, labels = mnist.load(root, "test")
    np.testing.assert_array_equal(np.rint(images[..., 0] * 255).astype(np.uint8), test)
    np.testing.assert_array_equal(labels, test_labels)


def test_one_class_filter(fake_mnist):
    root, train, train_labels, *_ = fake_mnist
    images, labels = mnist.load_one_class(root, "train", 1)
    assert set(labels.tolist()) == {1} and len(labels) == 4
    np.testing.assert_array_equal(images[..., 0] * 255.0, train[train_labels == 1])
    _, labels = mnist.load_one_class(root, "train", [0, 9])
    assert sorted(labels.tolist()) == [0, 0, 9]
    with pytest.raises(ValueError, match="0..9"):
        mnist.load_one_class(root, "train", 12)


def test_missing_and_malformed_files(fake_mnist, tmp_path_factory):
    root, *_ = fake_mnist
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        mnist.load(empty, "train")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mnist.load(empty / "nope", "train")
    (root / "t10k-images-idx3-ubyte").write_bytes(b"\x12\x34\x56\x78garbage")
    with pytest.raises(mnist.MNISTFormatError, match="not an IDX file"):
        mnist.load(root, "test")
    good = (root / "train-labels-idx1-ubyte.gz").read_bytes()
    (root / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(gzip.decompress(good)[:-3]))
    with pytest.raises(mnist.MNISTFormatError, match="truncated or corrupt"):
        mnist.load(root, "train")
    (root / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(mnist.MNISTFormatError, match="cannot read"):
        mnist.load(root, "train")
    with pytest.raises(ValueError, match="split"):
        mnist.load(root, "validation")


def test_batch_at_is_a_function_of_step():
    images = np.arange(10, dtype=np.float32)[:, None]
    seen = np.concatenate([mnist.batch_at(images, 3, s, seed=1) for s in range(3)])
    assert len(set(seen[:, 0].tolist())) == 9  # one epoch: no repeats, remainder dropped
    np.testing.assert_array_equal(
        mnist.batch_at(images, 3, 4, seed=1), mnist.batch_at(images, 3, 4, seed=1)
    )
    assert not np.array_equal(
        mnist.batch_at(images, 3, 0, seed=1), mnist.batch_at(images, 3, 3, seed=1)
    )


@pytest.mark.real_data
def test_real_mnist_counts(data_dir):
    images, labels = mnist.load(data_dir / "mnist", "train")
    assert images.shape == (60000, 28, 28, 1)
    assert 0.0 <= images.min() and images.max() == 1.0
    assert int((labels == 0).sum()) == 5923
    images, labels = mnist.load(data_dir / "mnist", "test")
    assert images.shape == (10000, 28, 28, 1)
    assert int((labels == 0).sum()) == 980

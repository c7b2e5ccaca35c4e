"""download(): SHA-256/MD5 verification, atomic rename, offline messages; no network used."""

import hashlib
import re
import urllib.error
from pathlib import Path

import pytest

from minidyn.data import DATASETS
from minidyn.data import download as dl
from minidyn.data.download import download as download_fn
from minidyn.errors import ConfigError, DataError

GOOD = b"official bytes " * 100
OTHER = b"official bytes, second file"


def spec(name, data, md5=True):
    return dl.RemoteFile(name, hashlib.sha256(data).hexdigest(),
                         hashlib.md5(data).hexdigest() if md5 else None)


@pytest.fixture
def fake_source(monkeypatch):
    source = dl.Source(
        mirrors=("https://mirror-one.invalid/ds/", "https://mirror-two.invalid/ds/"),
        files=(spec("a.gz", GOOD), spec("b.gz", OTHER)),
    )
    monkeypatch.setitem(dl.SOURCES, "mnist", source)
    return source


class FakeFetch:
    """Serves ``content[url]``; raises what ``errors[url]`` holds; records the calls."""

    def __init__(self, content=None, errors=None):
        self.content, self.errors, self.calls = content or {}, errors or {}, []

    def __call__(self, url, dest):
        self.calls.append((url, dest))
        assert Path(dest).parent.is_dir()
        if url in self.errors:
            raise self.errors[url]
        Path(dest).write_bytes(self.content[url])


def files_in(d):
    return sorted(p.name for p in Path(d).iterdir())


def one_line(e):
    msg = str(e.value)
    assert "\n" not in msg and msg
    return msg


M1, M2 = "https://mirror-one.invalid/ds/", "https://mirror-two.invalid/ds/"


def test_download_verifies_and_renames(tmp_path, fake_source):
    fetch = FakeFetch({M1 + "a.gz": GOOD, M1 + "b.gz": OTHER})
    paths = download_fn("mnist", tmp_path / "new" / "dir", fetch=fetch)
    d = tmp_path / "new" / "dir"
    assert paths == [d / "a.gz", d / "b.gz"]
    assert (d / "a.gz").read_bytes() == GOOD and (d / "b.gz").read_bytes() == OTHER
    assert files_in(d) == ["a.gz", "b.gz"]  # no temporary files left
    # the temporary file was in the same directory, under another name
    assert all(Path(dest).parent == d and Path(dest).name not in ("a.gz", "b.gz") for _, dest in fetch.calls)
    # present and verified: nothing fetched again
    again = FakeFetch()
    assert download_fn("mnist", d, fetch=again) == paths and again.calls == []
    assert dl.is_present("mnist", d)


def test_sha256_mismatch_deletes_and_raises(tmp_path, fake_source):
    fetch = FakeFetch({M1 + "a.gz": b"tampered", M1 + "b.gz": OTHER})
    with pytest.raises(DataError) as e:
        download_fn("mnist", tmp_path, fetch=fetch)
    msg = one_line(e)
    expected = fake_source.files[0].sha256
    got = hashlib.sha256(b"tampered").hexdigest()
    assert msg.startswith(f"a.gz: SHA-256 mismatch: expected {expected}, got {got}")
    assert files_in(tmp_path) == []


def test_md5_checked_too(tmp_path, monkeypatch):
    bad_md5 = dl.RemoteFile("a.gz", hashlib.sha256(GOOD).hexdigest(), "0" * 32)
    monkeypatch.setitem(dl.SOURCES, "cifar10", dl.Source((M1,), (bad_md5,)))
    with pytest.raises(DataError) as e:
        download_fn("cifar10", tmp_path, fetch=FakeFetch({M1 + "a.gz": GOOD}))
    assert one_line(e).startswith(f"a.gz: MD5 mismatch: expected {'0' * 32}, got {hashlib.md5(GOOD).hexdigest()}")
    assert files_in(tmp_path) == []


def test_corrupted_existing_file_is_replaced(tmp_path, fake_source):
    (tmp_path / "a.gz").write_bytes(b"half a download")
    fetch = FakeFetch({M1 + "a.gz": GOOD, M1 + "b.gz": OTHER})
    download_fn("mnist", tmp_path, fetch=fetch)
    assert (tmp_path / "a.gz").read_bytes() == GOOD
    # a failed verification keeps the previous file untouched and leaves no temporary file
    (tmp_path / "a.gz").write_bytes(b"old")
    with pytest.raises(DataError, match="SHA-256 mismatch"):
        download_fn("mnist", tmp_path, fetch=FakeFetch({M1 + "a.gz": b"evil"}))
    assert (tmp_path / "a.gz").read_bytes() == b"old"
    assert files_in(tmp_path) == ["a.gz", "b.gz"]


def test_second_mirror_used_when_first_fails(tmp_path, fake_source):
    fetch = FakeFetch(
        {M2 + "a.gz": GOOD, M2 + "b.gz": OTHER},
        errors={M1 + "a.gz": urllib.error.URLError("timed out"), M1 + "b.gz": TimeoutError("timed out")},
    )
    download_fn("mnist", tmp_path, fetch=fetch)
    assert files_in(tmp_path) == ["a.gz", "b.gz"]


@pytest.mark.parametrize("error", [
    urllib.error.URLError(OSError(-3, "Temporary failure in name resolution")),
    urllib.error.HTTPError("https://x", 404, "Not Found", {}, None),
    ConnectionResetError(104, "Connection reset by peer"),
])
def test_offline_message(tmp_path, fake_source, error):
    fetch = FakeFetch(errors={M1 + "a.gz": error, M2 + "a.gz": error})
    with pytest.raises(DataError) as e:
        download_fn("mnist", tmp_path, fetch=fetch)
    msg = one_line(e)
    assert msg.startswith("cannot download a.gz")
    assert "put a.gz, b.gz" in msg and str(tmp_path) in msg and M1 in msg
    if isinstance(error, urllib.error.HTTPError):
        assert "HTTP 404" in msg
    assert files_in(tmp_path) == []


def test_default_fetch_with_file_urls(tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    (served / "a.gz").write_bytes(GOOD)
    mirror = served.as_uri() + "/"
    monkeypatch.setitem(dl.SOURCES, "fashion-mnist", dl.Source((mirror,), (spec("a.gz", GOOD),)))
    out = tmp_path / "out"
    assert download_fn("fashion-mnist", out) == [out / "a.gz"]
    assert (out / "a.gz").read_bytes() == GOOD
    # a missing file behind the default fetch: the offline message
    monkeypatch.setitem(dl.SOURCES, "fashion-mnist", dl.Source((mirror,), (spec("missing.gz", GOOD),)))
    with pytest.raises(DataError) as e:
        download_fn("fashion-mnist", out)
    assert one_line(e).startswith("cannot download missing.gz")
    assert files_in(out) == ["a.gz"]


def test_unwritable_data_dir(tmp_path, fake_source):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(DataError) as e:
        download_fn("mnist", blocker / "sub", fetch=FakeFetch())
    assert one_line(e).startswith("cannot create")


def test_names():
    assert download_fn("mnist-sample", "/nonexistent") == []
    with pytest.raises(ConfigError, match="unknown dataset"):
        download_fn("imagenet", "/tmp")


def test_official_sources_are_well_formed():
    assert set(dl.SOURCES) == set(DATASETS) - {"mnist-sample"}
    idx = [s + ".gz" for s in dl.IDX_FILES]
    assert [f.name for f in dl.SOURCES["mnist"].files] == idx
    assert [f.name for f in dl.SOURCES["fashion-mnist"].files] == idx
    assert [f.name for f in dl.SOURCES["cifar10"].files] == ["cifar-10-binary.tar.gz"]
    assert dl.SOURCES["mnist"].mirrors[0] == "https://ossci-datasets.s3.amazonaws.com/mnist/"
    assert dl.SOURCES["cifar10"].mirrors[0] + "cifar-10-binary.tar.gz" == \
        "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
    for source in dl.SOURCES.values():
        assert all(m.endswith("/") for m in source.mirrors)
        for f in source.files:
            assert re.fullmatch(r"[0-9a-f]{64}", f.sha256)
            assert f.md5 is None or re.fullmatch(r"[0-9a-f]{32}", f.md5)
    # the values looked up (TFDS url_checksums; torchvision / dataset pages for MD5)
    assert dl.SOURCES["cifar10"].files[0].sha256 == \
        "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"
    assert dl.SOURCES["mnist"].files[0].md5 == "f68b3c2dcbeaaa9fbdd348bbdeb94873"


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert dl.default_data_dir("mnist") == tmp_path / "minidyn" / "mnist"
    monkeypatch.setattr(dl, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "nope")
    assert dl.default_data_dir("fashion-mnist") == tmp_path / "minidyn" / "fashion-mnist"
    deb = tmp_path / "deb"
    deb.mkdir()
    (deb / "train-images-idx3-ubyte.gz").write_bytes(b"")
    monkeypatch.setattr(dl, "DEBIAN_FASHION_MNIST_DIR", deb)
    assert dl.default_data_dir("fashion-mnist") == deb

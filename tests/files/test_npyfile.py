"""minidyn.files.npyfile: headers are checked before data is read; anything else is a one-line error.

The fuzz tests write arbitrary bytes and arbitrary `.npy` headers (shape tuples, dtype descr
strings, fortran_order), as a file and as an `.npz` member: the only outcomes are a valid array
or a `MinidynError`, never another exception.
"""
import io
import os
import shutil
import struct
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from click.testing import CliRunner
from hypothesis import strategies as st

from minidyn.cli.main import main
from minidyn.errors import CheckpointError, DataError, MinidynError
from minidyn.files.npyfile import fosc_header, npz_headers, read_fosc, read_npy, read_npz

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def npy_bytes(header: str, data: bytes = b"", version=(1, 0)) -> bytes:
    """A .npy file with a header dict text of our choosing (numpy's writer would refuse some)."""
    text = header.encode("latin1", "replace")
    pad = (-(len(text) + 11)) % 64
    text += b" " * pad + b"\n"
    size = struct.pack("<H", len(text)) if version == (1, 0) else struct.pack("<I", len(text))
    return b"\x93NUMPY" + bytes(version) + size + text + data


def npz_of(members: dict, compression=zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def saved(a) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


# --- units ------------------------------------------------------------------------------------
@pytest.mark.parametrize("a", [np.arange(12.0).reshape(3, 4), np.asfortranarray(np.arange(6.0).reshape(2, 3)),
                               np.zeros((0, 3), ">f4"), np.arange(5, dtype=">i8"), np.array(True),
                               np.array([np.nan, 1.5], np.float32)], ids=str)
def test_read_npy_is_np_load(tmp_path, a):
    (tmp_path / "a.npy").write_bytes(saved(a))
    b = read_npy(tmp_path / "a.npy")
    ref = np.load(tmp_path / "a.npy")
    assert b.dtype == ref.dtype and b.shape == ref.shape and b.flags.writeable
    np.testing.assert_array_equal(b, ref)
    assert b.flags.f_contiguous == ref.flags.f_contiguous


@pytest.mark.parametrize("data, words", [
    (b"", "not a .npy array"),
    (np.random.default_rng(0).bytes(300), "not a .npy array"),  # fixed: pytest-xdist's workers must collect the same ids
    (npy_bytes("{'descr': '|O', 'fortran_order': False, 'shape': (2,)}"), "not a plain"),
    (npy_bytes("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,)}"), "not a plain"),
    (npy_bytes("{'descr': '<U3', 'fortran_order': False, 'shape': (1,)}", b"a\0\0\0" * 3), "not bool/int/uint/float"),
    (npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}"), "declares the shape"),
    (npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2,)}", b"\0" * 4), "the file holds 4"),
    (npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2,)}", b"\0" * 12), "the file holds 12"),
    (npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000)}"), "more than"),
    (npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2,)}", b"\0" * 8, (3, 0)), "version"),
])
def test_a_bad_npy_is_one_data_error(tmp_path, data, words):
    (tmp_path / "a.npy").write_bytes(data)
    with pytest.raises(DataError, match=words) as info:
        read_npy(tmp_path / "a.npy")
    assert str(tmp_path / "a.npy") in str(info.value) and "\n" not in str(info.value)


def test_a_fifo_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "f.npy")
    with pytest.raises(DataError, match="not a regular file"):
        read_npy(tmp_path / "f.npy")


def test_npz_members_are_checked_before_any_data_is_read(tmp_path):
    bomb = np.zeros((8192, 8192), np.float32)  # 256 MiB that deflate to 256 KiB
    path = tmp_path / "bomb.npz"
    path.write_bytes(npz_of({"w.npy": saved(bomb)}, zipfile.ZIP_DEFLATED))
    assert path.stat().st_size < 1 << 20
    headers = npz_headers(path)  # reads a header, inflates nothing else
    assert headers["w"].shape == (8192, 8192) and headers["w"].nbytes == 1 << 28


@pytest.mark.parametrize("members, words", [
    ({"notes.txt": b"hello"}, "'notes.txt' is not a .npy array"),
    ({"w.npy": b"plain bytes, not npy"}, "member 'w.npy': not a .npy array"),
    ({"w.npy": npy_bytes("{'descr': '|O', 'fortran_order': False, 'shape': (1,)}", b"x" * 8)}, "not a plain"),
    ({"w.npy": saved(np.zeros(4, np.float32))[:-4]}, "declares 16 data bytes, the member holds 12"),
])
def test_a_bad_npz_member_is_one_error_naming_it(tmp_path, members, words):
    path = tmp_path / "a.npz"
    path.write_bytes(npz_of(members))
    with pytest.raises(CheckpointError, match=words):
        npz_headers(path, error=CheckpointError)


def test_read_npz_reads_only_the_asked_members(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, meta=np.array("{}"), w=np.ones((2, 3), np.float32))
    headers = npz_headers(path)
    out = read_npz(path, headers, ["meta"])
    assert list(out) == ["meta"] and out["meta"].item() == "{}"
    np.testing.assert_array_equal(read_npz(path, headers)["w"], np.ones((2, 3), np.float32))


def test_a_member_changed_after_its_header_was_checked_is_refused(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, w=np.ones(3, np.float32))
    headers = npz_headers(path)
    np.savez(path, w=np.ones(4, np.float32))
    with pytest.raises(DataError, match="header changed"):
        read_npz(path, headers)


@pytest.mark.parametrize("a, words", [
    (np.array([0.5, np.nan], np.float32), None),
    (np.array([0.5, np.inf], np.float32), "infinite"),
    (np.array(["a", "b"]), "not float"),
    (np.zeros((2, 2), np.float32), "1-d"),
    (np.arange(3), "not float"),
])
def test_fosc_files(tmp_path, a, words):
    path = tmp_path / "epoch_000.npy"
    path.write_bytes(saved(a))
    if words is None:
        np.testing.assert_array_equal(read_fosc(path), a)
        assert fosc_header(path).shape == a.shape
        return
    with pytest.raises(DataError, match=words):
        read_fosc(path)


def test_a_fosc_file_that_is_an_npz_or_noise_is_refused(tmp_path):
    path = tmp_path / "epoch_000.npy"
    np.savez(path.with_suffix(".npz"), a=np.zeros(3))
    os.replace(path.with_suffix(".npz"), path)
    with pytest.raises(DataError, match="not a valid FOSC file"):
        read_fosc(path)
    path.write_bytes(os.urandom(200))
    with pytest.raises(DataError, match="not a valid FOSC file"):
        fosc_header(path)


@pytest.fixture(scope="module")
def fosc_run(tiny_mnist, tmp_path_factory):
    """A finished one-epoch numpy run: it has fosc/epoch_000.npy."""
    out = tmp_path_factory.mktemp("fosc-run") / "run"
    r = CliRunner().invoke(main, ["train", "--backend", "numpy", "--model", "softmax", "--dataset", "mnist",
                                  "--data-dir", str(tiny_mnist), "--epochs", "1", "--batch-size", "32",
                                  "--steps", "1", "--eval-limit", "16", "--eval-steps", "1", "--out", str(out)],
                           catch_exceptions=False)
    assert r.exit_code == 0 and (out / "fosc" / "epoch_000.npy").is_file(), r.output
    return out


@pytest.mark.parametrize("content, words", [
    (lambda: os.urandom(500), "not a .npy array"),
    (lambda: npz_of({"a.npy": saved(np.zeros(96, np.float32))}), "not a .npy array"),
    (lambda: saved(np.array(["0.1"] * 96)), "not float numbers"),
    (lambda: npy_bytes("{'descr': '|O', 'fortran_order': False, 'shape': (96,)}", b"\x80" * 96 * 8), "not a plain"),
], ids=["noise", "npz", "strings", "objects"])
def test_analyze_refuses_a_bad_fosc_file_in_one_line(fosc_run, tmp_path, content, words):
    run = tmp_path / "run"
    shutil.copytree(fosc_run, run)
    (run / "fosc" / "epoch_000.npy").write_bytes(content())
    r = CliRunner().invoke(main, ["analyze", str(run), "--limit", "8", "--trajectories", "2",
                                  "--trajectory-steps", "2", "--eps-grid", "0.1", "--no-plots",
                                  "--out", str(tmp_path / "an")], catch_exceptions=False)
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert r.exit_code == 1 and len(errors) == 1, r.output
    assert "epoch_000.npy is not a valid FOSC file" in errors[0] and words in errors[0], errors[0]


# --- fuzz ------------------------------------------------------------------------------------
GOOD_DESCRS = ["<f4", ">f8", "|b1", "<i8", "|u1", "<c16", "<U3", "<f2"]
descrs = st.one_of(
    st.sampled_from(GOOD_DESCRS).map(repr),
    st.sampled_from(["|O", "|S0", "<M8[s]", "|V4", "(2,)<f4", "f4,f4", "float32", "<f4 ", ">>f4"]).map(repr),
    st.text(max_size=12).map(repr),
    st.lists(st.tuples(st.text(max_size=3), st.sampled_from(["<f4", "|O", "<i2"])), max_size=3).map(repr),
    st.integers().map(str),
)
odd_shapes = st.one_of(
    st.lists(st.integers(-3, 6), max_size=4).map(tuple),
    st.lists(st.integers(0, 2**62), max_size=3).map(tuple),
    st.sampled_from(["(1.5,)", "'x'", "None", "[2]", "(True,)", "2"]),
)


@st.composite
def npy_files(draw):
    """(header text, payload): often a valid .npy, else one thing wrong (dtype, shape, order,
    an extra key, or a payload that is short, long or noise)."""
    valid = draw(st.booleans())
    descr = repr(draw(st.sampled_from(GOOD_DESCRS))) if valid else draw(descrs)
    shape = draw(st.lists(st.integers(0, 5), max_size=3).map(tuple)) if valid else draw(odd_shapes)
    order = draw(st.sampled_from(["False", "True"] if valid else ["False", "True", "1", "'no'"]))
    extra = [] if valid else draw(st.lists(st.sampled_from(["'x': 1", "'descr': '<f4'"]), max_size=1))
    text = repr(shape) if isinstance(shape, tuple) else shape
    header = "{" + ", ".join([f"'descr': {descr}", f"'fortran_order': {order}", f"'shape': {text}"] + extra) + "}"
    try:
        size = int(np.prod(shape)) * np.dtype(eval(descr)).itemsize if isinstance(shape, tuple) else 8
    except Exception:
        size = 8
    size = max(0, min(size, 4096) + draw(st.sampled_from([0, 0, 0, -1, 1])))
    data = draw(st.one_of(st.just(bytes(size)), st.binary(min_size=size, max_size=size), st.binary(max_size=64)))
    return header, data


def outcome(call):
    """'ok' or the MinidynError's message; any other exception propagates and fails the test."""
    try:
        call()
        return "ok"
    except MinidynError as exc:
        assert "\n" not in str(exc)
        return str(exc)


@FUZZ
@given(data=st.binary(max_size=200))
def test_fuzz_any_bytes(tmp_path, data):
    (tmp_path / "a.npy").write_bytes(data)
    outcome(lambda: read_npy(tmp_path / "a.npy", kinds="biufcSU"))
    outcome(lambda: read_fosc(tmp_path / "a.npy"))
    (tmp_path / "a.npz").write_bytes(data)
    outcome(lambda: npz_headers(tmp_path / "a.npz"))


@FUZZ
@given(npy=npy_files(), version=st.sampled_from([(1, 0), (2, 0)]))
def test_fuzz_any_npy_header(tmp_path, npy, version):
    path = tmp_path / "a.npy"
    path.write_bytes(npy_bytes(*npy, version))
    got = []
    if outcome(lambda: got.append(read_npy(path, kinds="biufcSU"))) == "ok":  # what np.load reads
        ref = np.load(path, allow_pickle=False)
        assert got[0].dtype == ref.dtype and got[0].shape == ref.shape
        np.testing.assert_array_equal(got[0], ref)
    outcome(lambda: read_fosc(tmp_path / "a.npy"))


@FUZZ
@given(npy=npy_files(), name=st.sampled_from(["w.npy", "w", "model/fc1.weight.npy"]), deflate=st.booleans())
def test_fuzz_any_npz_member(tmp_path, npy, name, deflate):
    path = tmp_path / "a.npz"
    path.write_bytes(npz_of({name: npy_bytes(*npy)}, zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED))

    def read():
        found = npz_headers(path)
        small = [k for k, h in found.items() if h.nbytes <= 1 << 16]
        read_npz(path, found, small)
    outcome(read)

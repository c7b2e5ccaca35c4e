"""minidyn.files.readers (JSON run files, checkpoint meta) and the IDX header checks of data.idx.

Unit tests go through the callers that exist for users (RunDir, run_config, checkpoint_in,
grad_evals_per_example, read_images); the Hypothesis tests feed each reader any JSON value,
any meta dict and any IDX header: the only outcomes are a typed value or a one-line
MinidynError, never another exception.
"""
import gzip
import json
import math
import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minidyn.files.config import TrainConfig
from minidyn.data.idx import read_images, read_labels
from minidyn.errors import CheckpointError, ConfigError, DataError, MinidynError
from minidyn.evaluation.aggregate import grad_evals_per_example
from minidyn.evaluation.checkpoints import checkpoint_in, run_config
from minidyn.runs.rundir import RunDir

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def run_dir(tmp_path, config=None, metrics=None):
    d = tmp_path / "run"
    d.mkdir(exist_ok=True)
    if config is not None:
        (d / "config.json").write_text(config)
    if metrics is not None:
        (d / "metrics.jsonl").write_text(metrics)
    return d


def one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert message and "\n" not in message
    return message


# --- JSON run files --------------------------------------------------------------------------
@pytest.mark.parametrize("text, words", [
    ("[" * 50_000 + "]" * 50_000, "nested too deeply"),
    ('{"eps": NaN}', "NaN is not strict JSON"),
    ('{"eps": -Infinity}', "-Infinity is not strict JSON"),
    ('{"eps": 1e400}', "overflows to infinity"),
    ('{"seed": "\xff"}'.encode("latin-1"), "not UTF-8"),
    ("[]", "not a JSON object"),
    ('{"seed": true}', "seed is True"),
    ('{"lr_milestones": [2, "3"]}', "lr_milestones is [2, '3']"),
    ('{"no_such_option": 1}', "unknown key 'no_such_option'"),
])
def test_config_json_that_is_not_a_run_config_is_refused(tmp_path, text, words):
    d = run_dir(tmp_path)
    (d / "config.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError) as e:
        RunDir(d).read_json(d / "config.json")
    assert words in one_line(e) and "config.json" in str(e.value)
    with pytest.raises(ConfigError):
        run_config(d / "checkpoint.npz")


def test_a_fifo_in_place_of_config_json_does_not_hang(tmp_path):
    d = run_dir(tmp_path)
    os.mkfifo(d / "config.json")
    for name in ("checkpoint.npz", "checkpoint.pt"):
        (d / name).write_bytes(b"x")
    with pytest.raises(ConfigError) as e:
        checkpoint_in(d)  # two checkpoints: the config.json names the backend
    assert "not a regular file" in one_line(e)


def test_a_written_config_reads_back_unchanged_and_a_too_deep_one_is_refused(tmp_path):
    d = run_dir(tmp_path)
    saved = {**TrainConfig().resolved().to_dict(), "c_max_used": 0.5, "version": "0.1.0"}
    RunDir(d).write_json(d / "config.json", saved)
    assert RunDir(d).read_json(d / "config.json") == saved
    assert run_config(d / "checkpoint.npz") == saved
    (d / "config.json").write_text('{"extras": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ConfigError):
        run_config(d / "checkpoint.npz")


@pytest.mark.parametrize("lines, number", [
    ('{"epoch": 0}\n[1]\n', 2),
    ('{"epoch": 0, "grad_evals": 1.5}\n', 1),
    ('{"epoch": -1}\n', 1),
    ('{"epoch": 0, "train_loss": NaN}\n', 1),
    ('{"epoch": 0}\n{"epoch": 1, "gra', 2),  # a torn last line is refused, as before
])
def test_metrics_lines_that_are_not_epoch_records_are_refused(tmp_path, lines, number):
    d = run_dir(tmp_path, metrics=lines)
    for read in (RunDir(d).read_metrics, lambda: grad_evals_per_example(d)):
        with pytest.raises(ConfigError) as e:
            read()
        assert f"metrics.jsonl: line {number} is not a minidyn epoch record" in one_line(e)


# --- property tests: any JSON value --------------------------------------------------------------
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
CONFIG_KEYS = sorted({**TrainConfig().to_dict(), "c_max_used": 0, "version": ""})
RUN_OBJECTS = JSON | st.dictionaries(st.sampled_from(CONFIG_KEYS + ["accuracy", "test_n", "epoch", "n"]),
                                     JSON | st.dictionaries(st.text(max_size=6), JSON, max_size=3), max_size=6)


def readers():
    from minidyn.files import readers as r
    return {"config.json": r.read_config, "summary.json": r.read_summary, "eval.json": r.read_eval,
            "metrics.jsonl": r.read_metrics}


@FUZZ
@given(value=RUN_OBJECTS, name=st.sampled_from(["config.json", "eval.json", "metrics.jsonl", "summary.json"]))
def test_any_json_value_is_a_typed_object_or_a_one_line_error(tmp_path, value, name):
    path = tmp_path / name
    path.write_text(json.dumps(value))  # NaN and Infinity come out as non-strict literals
    try:
        result = readers()[name](path)
    except MinidynError as exc:
        assert str(exc) and "\n" not in str(exc) and name in str(exc)
        return
    records = result if name == "metrics.jsonl" else [result]
    assert all(isinstance(r, dict) for r in records)
    for record in records:
        for v in record.values():
            assert not (isinstance(v, float) and not math.isfinite(v))


# --- checkpoint meta ----------------------------------------------------------------------------
@pytest.mark.parametrize("meta, words", [
    ({"input_shape": 784}, "input_shape 784"),
    ({"input_shape": [0]}, "input_shape [0]"),
    ({"input_shape": [-1, 28, 28]}, "input_shape [-1, 28, 28]"),
    ({"input_shape": [1, 100_000, 100_000]}, "input_shape [1, 100000, 100000]"),
    ({"input_shape": [True, 28, 28]}, "input_shape [True, 28, 28]"),
    ({"num_classes": "ten"}, "num_classes 'ten'"),
    ({"num_classes": 1}, "num_classes 1"),
    ({"eps": "abc"}, "eps 'abc'"),
    ({"eps": float("nan")}, "eps nan"),
    ({"eps": 0}, "eps 0"),
    ({"model": "resnet9000"}, "model 'resnet9000'"),
    ({"arch": {"num_classes": 10.5}}, "num_classes 10.5"),
    ({"arch": [1]}, "arch record is [1]"),
    ({"epoch": -3}, "epoch -3"),
])
def test_meta_out_of_bounds_is_refused(meta, words):
    from minidyn.files.readers import check_meta

    with pytest.raises(CheckpointError) as e:
        check_meta(meta, "ckpt.npz")
    assert one_line(e).startswith("ckpt.npz") and words in str(e.value)


def test_meta_of_real_checkpoints_passes():
    from minidyn.files.readers import check_meta

    for meta in ({"model": "cnn8", "input_shape": [3, 32, 32], "num_classes": 10, "eps": 8 / 255, "epoch": 0},
                 {"arch": {"model": "wrn-28-10", "input_shape": (3, 32, 32), "num_classes": 100}, "eps": 1}):
        assert check_meta(meta, "x.pt") is meta


META = st.dictionaries(
    st.sampled_from(["model", "input_shape", "num_classes", "eps", "epoch", "dataset", "method", "arch"]),
    JSON | st.lists(st.integers(-3, 1 << 40), max_size=5)
    | st.fixed_dictionaries({}, optional={"model": st.sampled_from(["mlp", "x"]), "num_classes": JSON,
                                          "input_shape": st.lists(st.integers(-2, 5000), max_size=4)}),
    max_size=6)


@FUZZ
@given(meta=META | JSON)
def test_any_meta_is_sane_or_a_checkpoint_error(meta):
    from minidyn.evaluation.checkpoints import architecture
    from minidyn.files.readers import MAX_INPUT_ELEMENTS, check_meta

    try:
        check_meta(meta, "ckpt.npz")
    except CheckpointError as exc:
        assert "\n" not in str(exc)
        return
    arch = architecture(meta)
    if "input_shape" in arch:
        assert all(d >= 1 for d in arch["input_shape"]) and math.prod(arch["input_shape"]) <= MAX_INPUT_ELEMENTS
    if "num_classes" in arch:
        assert isinstance(arch["num_classes"], int) and arch["num_classes"] >= 2


# --- IDX headers ----------------------------------------------------------------------------
def idx(magic, *dims, payload=b""):
    return struct.pack(f">{1 + len(dims)}I", magic, *dims) + payload


@pytest.mark.parametrize("gz", [False, True])
def test_an_empty_idx_split_is_refused(tmp_path, gz):
    for name, data, read, what in (("train-images-idx3-ubyte", idx(2051, 0, 28, 28), read_images, "images"),
                                   ("train-labels-idx1-ubyte", idx(2049, 0), read_labels, "labels")):
        path = tmp_path / name
        path.write_bytes(gzip.compress(data) if gz else data)
        with pytest.raises(DataError) as e:
            read(path)
        assert one_line(e) == f"{name}: holds 0 {what} (an empty split); expected at least one"


def test_a_header_declaring_more_than_the_cap_is_refused_before_reading(tmp_path):
    from minidyn.data.idx import MAX_PAYLOAD_BYTES

    n = MAX_PAYLOAD_BYTES // 784 + 1
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx(2051, n, 28, 28)) + gzip.compress(bytes(1 << 20)) * 300)
    with pytest.raises(DataError) as e:
        read_images(path)
    assert f"the header declares {n * 784} bytes of images" in one_line(e)


def test_a_small_gzip_cannot_declare_a_large_payload(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx(2051, 100_000, 28, 28)))
    with pytest.raises(DataError) as e:
        read_images(path)
    assert "truncated: the header declares 78400016 bytes, more than a" in one_line(e)


def test_a_fifo_in_place_of_an_idx_file_does_not_hang(tmp_path):
    os.mkfifo(tmp_path / "train-images-idx3-ubyte")
    with pytest.raises(DataError) as e:
        read_images(tmp_path / "train-images-idx3-ubyte")
    assert "not a regular file" in one_line(e)


SMALL_DIMS = st.tuples(st.integers(0, 3), st.integers(0, 4), st.integers(0, 4))


@FUZZ
@given(random_header=st.binary(max_size=20), dims=SMALL_DIMS | st.tuples(*[st.integers(0, 2**32 - 1)] * 3),
       magic=st.sampled_from([2051, 2049, 0]), delta=st.integers(-2, 2), random=st.booleans(),
       gz=st.booleans(), labels=st.booleans())
def test_any_idx_header_gives_an_array_or_a_data_error(tmp_path, random_header, dims, magic, delta, random,
                                                       gz, labels):
    """Random header bytes, or a header of any dims with a payload of about the declared size."""
    dims = dims[:1] if labels else dims
    size = max(0, min(math.prod(dims), 64) + delta)
    data = random_header if random else idx(magic, *dims) + bytes(size)
    path = tmp_path / ("train-labels-idx1-ubyte" if labels else "train-images-idx3-ubyte")
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    try:
        x = (read_labels if labels else read_images)(path)
    except DataError as exc:
        assert str(exc).startswith(path.name) and "\n" not in str(exc)
        return
    assert x.dtype == np.uint8 and x.shape == dims and len(x) >= 1

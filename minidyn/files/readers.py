"""One validating reader per JSON file minidyn reads, and the check of a checkpoint's meta.

    read_config(path)    config.json of a run: {TrainConfig field: value} plus c_max_used, version
    read_metrics(path)   metrics.jsonl: [epoch record, ...] ([] when the file does not exist)
    read_summary(path)   summary.json: the final accuracies of a run
    read_eval(path)      eval.json / eval-blackbox.json written by `minidyn eval --save`
    read_examples(path)  a study's per-example correctness file (*.examples.npz, studies.examples)
    read_study_eval(path)  a study task's result (study-eval.json, study-eval-blackbox.json)
    read_lock(path)      a study's lock record (studies.lock): the record, or None while unwritten
    check_meta(meta, path)  the meta dict of a checkpoint (what the backends' read_meta return)

Each returns the typed values or raises the one-line MinidynError naming the file: the file
must be a regular file (a FIFO or directory in its place is refused before it is opened), at
most MAX_JSON_BYTES, UTF-8, strict JSON (no NaN or Infinity literals, no number that overflows
to infinity, nesting no deeper than Python can parse), an object of the expected keys and types.
"""
from __future__ import annotations

import json
import math
import os
import re
import stat
import types
import typing
import zipfile
from pathlib import Path

import numpy as np

from minidyn.files.config import TrainConfig
from minidyn.errors import CheckpointError, ConfigError, DataError, MinidynError
from minidyn.projection import is_eps

MAX_JSON_BYTES = 64 << 20          # no run file minidyn writes comes near this
MAX_INPUT_ELEMENTS = 3 * 1024 * 1024  # elements of one input example (a 3x1024x1024 image)
MAX_CLASSES = 100_000
MAX_INPUT_DIMS = 4
MODEL_NAME = re.compile(r"(softmax|mlp|cnn4|cnn8|preact-resnet18|preact-resnet50|wrn-\d{1,3}-\d{1,2})")
CONFIG_EXTRAS = {"c_max_used": float, "version": str}  # what config.json holds beside TrainConfig
METRIC_TYPES = {"epoch": int, "method": str, "c_t": float | None, "pgd_steps": int, "lr": float | None,
                "train_loss": float | None, "train_acc": float | None, "fosc_mean": float | None,
                "fosc_median": float | None, "pgd_steps_mean": float | None, "grad_evals": int,
                "test_clean_acc": float | None, "test_clean_n": int, "test_pgd_acc": float | None,
                "test_pgd_n": int, "val_clean_acc": float | None, "val_clean_n": int,
                "val_pgd_acc": float | None, "val_pgd_n": int, "seconds": float}
EVAL_TYPES = {"accuracy": dict, "attacks": list[str], "eps": float, "n": int, "seed": int,
              "restarts": int, "apgd_steps": int, "source": str | None, "checks": dict,
              "checkpoint": str | None, "dataset": str | None, "model": str | None,
              "method": str | None, "epoch": int | None, "flags": list[str], "version": str | None}
SUMMARY_TYPES = {"test_clean_acc": float | None, "test_n": int, "test_pgd_n": int, "eps": float,
                 "epochs": int, "c_max_used": float, "best_val": dict}


# --- the JSON layer ------------------------------------------------------------------------------
def _refuse_constant(name: str):
    raise ValueError(f"{name} is not strict JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} overflows to infinity")
    return value


def load_json(path: str | Path, error: type[MinidynError] = ConfigError):
    """The JSON value in file `path`; `error` naming the file when it is not a regular file, is
    larger than MAX_JSON_BYTES, not UTF-8 or not strict JSON."""
    path = Path(path)
    try:
        if not path.is_file():  # a FIFO would block open(); a directory cannot be read
            raise error(f"{path} is not a regular file")
        if path.stat().st_size > MAX_JSON_BYTES:
            raise error(f"{path} is larger than {MAX_JSON_BYTES >> 20} MiB; not a minidyn run file")
        text = path.read_bytes().decode("utf-8")
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except OSError as exc:
        raise error(f"{path} cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise error(f"{path} cannot be read as a minidyn run file (not UTF-8 text)") from None
    except RecursionError:
        raise error(f"{path} cannot be read as a minidyn run file (JSON nested too deeply)") from None
    except ValueError as exc:
        raise error(f"{path} cannot be read as a minidyn run file ({str(exc).splitlines()[0]})") from None


# --- types -----------------------------------------------------------------------------------------
def _is(value, hint) -> bool:
    """Whether a JSON value has type `hint` (int is not bool; float accepts int; list[X])."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(_is(value, h) for h in typing.get_args(hint))
    if hint is type(None) or hint is None:
        return value is None
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_is(v, item) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _check_types(obj, expected: dict, path: Path, what: str, error=ConfigError, known_only=False) -> dict:
    """obj if it is a JSON object whose keys in `expected` have the types given there (any other
    key is refused when known_only)."""
    if not isinstance(obj, dict):
        raise error(f"{path} is not a minidyn {what} (not a JSON object)")
    for key, value in obj.items():
        if key not in expected:
            if known_only:
                raise error(f"{path} is not a minidyn {what} (unknown key {key[:40]!r})")
            continue
        if not _is(value, expected[key]):
            raise error(f"{path}: {key} is {_short(value)}, not a minidyn {what} value")
    return obj


def _short(value) -> str:
    """A short description of a JSON value for a message (repr of a deep one would recurse)."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        if len(value) > 8 or any(isinstance(v, (list, tuple, dict)) for v in value):
            return "a list"
        value = list(value)
    text = repr(value[:40] if isinstance(value, str) else value)
    return text if len(text) <= 40 else text[:37] + "..."


CONFIG_TYPES = {**typing.get_type_hints(TrainConfig), **CONFIG_EXTRAS}


# --- the run files -----------------------------------------------------------------------------------
def read_config(path: str | Path) -> dict:
    """config.json: an object whose keys are TrainConfig fields (plus c_max_used and version),
    each of its field's type; ConfigError otherwise."""
    path = Path(path)
    return _check_types(load_json(path), CONFIG_TYPES, path, "run config", known_only=True)


def read_summary(path: str | Path) -> dict:
    """summary.json: an object with the final accuracies (numbers), test_n, eps, epochs."""
    path = Path(path)
    summary = _check_types(load_json(path), SUMMARY_TYPES, path, "run summary")
    for key, value in summary.items():  # test_pgdK_acc: K is the run's eval_steps
        if re.fullmatch(r"test_pgd\d+_acc", key) and not _is(value, float | None):
            raise ConfigError(f"{path}: {key} is {_short(value)}, not a minidyn run summary value")
    return summary


def read_eval(path: str | Path) -> dict:
    """eval.json or eval-blackbox.json: an object of EVAL_TYPES' types whose "accuracy" maps
    attack names to numbers (percent) or null."""
    path = Path(path)
    evaluation = _check_types(load_json(path), EVAL_TYPES, path, "evaluation")
    accuracy = evaluation.get("accuracy", {})
    bad = [k for k, v in accuracy.items() if not _is(v, float | None)]
    if bad:
        raise ConfigError(f"{path}: accuracy of {bad[0][:40]!r} is {_short(accuracy[bad[0]])}, not a number")
    return evaluation


def read_metrics(path: str | Path) -> list[dict]:
    """metrics.jsonl: one epoch record (an object with an int "epoch", METRIC_TYPES' types) per
    non-empty line; [] when the file does not exist. Any line that is not one, a torn last line
    included, is a ConfigError naming its number (the file is rewritten whole, never torn)."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        if not path.is_file():
            raise ConfigError(f"{path} is not a regular file")
        if path.stat().st_size > MAX_JSON_BYTES:
            raise ConfigError(f"{path} is larger than {MAX_JSON_BYTES >> 20} MiB; not a minidyn run file")
        lines = path.read_bytes().decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} cannot be read ({getattr(exc, 'strerror', None) or 'not UTF-8 text'})") from None
    return [_metric_line(line, number, path) for number, line in enumerate(lines, 1) if line.strip()]


def _metric_line(line: str, number: int, path: Path) -> dict:
    try:
        record = json.loads(line, parse_constant=_refuse_constant, parse_float=_finite_float)
    except (ValueError, RecursionError):
        record = None
    if not isinstance(record, dict) or not _is(record.get("epoch"), int) or record["epoch"] < 0 \
            or any(k in METRIC_TYPES and not _is(v, METRIC_TYPES[k]) for k, v in record.items()):
        raise ConfigError(f"{path}: line {number} is not a minidyn epoch record")
    return record


# --- a study's task results ------------------------------------------------------------------------
STUDY_EVAL_TYPES = {"settings": dict, "results": dict, "seconds": float}
STUDY_CHECKPOINT_TYPES = {"epoch": int | None, "seconds": float, "eps": dict, "source": str,
                          "examples": dict}


def read_study_eval(path: str | Path) -> dict:
    """study-eval.json or study-eval-blackbox.json (what studies.worker writes): {"settings": {...},
    "results": {"last"|"best": {"epoch", "seconds", "eps": {eps key: evaluation}, ...}},
    "seconds"}, each evaluation as eval.json (read_eval's types) with every accuracy a
    percentage in [0, 100] (or null) and one n >= 1 (test examples) throughout the file.
    ConfigError naming the file otherwise."""
    path = Path(path)
    record = _check_types(load_json(path), STUDY_EVAL_TYPES, path, "study result")
    if not isinstance(record.get("settings"), dict) or not isinstance(record.get("results"), dict):
        raise ConfigError(f"{path} is not a minidyn study result (no settings or results object)")
    sizes = set()
    for which, result in record["results"].items():
        if which not in ("last", "best"):
            raise ConfigError(f"{path}: checkpoint {which[:40]!r} is not last or best")
        result = _check_types(result, STUDY_CHECKPOINT_TYPES, path, "study result")
        if not isinstance(result.get("eps"), dict) or not result["eps"]:
            raise ConfigError(f"{path}: results.{which} has no eps object")
        for key, evaluation in result["eps"].items():
            sizes.add(_study_evaluation(evaluation, path, which, key))
    if len(sizes) > 1:
        raise ConfigError(f"{path}: its evaluations have different n ({', '.join(map(str, sorted(sizes)))}), "
                          "not one study result")
    return record


def _study_evaluation(evaluation, path: Path, which: str, key: str) -> int:
    """The n of the evaluation of checkpoint `which` at eps `key` in a study result; ConfigError
    naming it when it is not one."""
    where = f"results.{which} eps {key[:20]!r}"
    if not _eps_key(key):
        raise ConfigError(f"{path}: {where} is not an eps in (0, 1]")
    evaluation = _check_types(evaluation, EVAL_TYPES, path, "study result")
    n, accuracy = evaluation.get("n"), evaluation.get("accuracy")
    if not _is(n, int) or n < 1 or not isinstance(accuracy, dict) or not accuracy:
        raise ConfigError(f"{path}: {where} has no n >= 1 and accuracy object")
    for attack, value in accuracy.items():
        if value is None:
            continue
        if not _is(value, float) or not 0 <= value <= 100:
            raise ConfigError(f"{path}: {where} accuracy of {attack[:40]!r} is {_short(value)}, "
                              "not a percentage in [0, 100]")
    return n


# --- a study's lock records --------------------------------------------------------------------------
MAX_LOCK_BYTES = 4096  # a record is about 150 bytes
LOCK_TYPES = {"host": str, "pid": int, "token": str, "claimed": float, "runner": int,
              "started": str, "runner_started": str}


def read_lock(path: str | Path) -> dict | None:
    """A study lock file's record ({"host", "pid" >= 1, "token"[, "claimed", "runner",
    "started", "runner_started"]}, studies.lock), or None when it holds none: empty (its
    claimer is writing it, or died doing so), not JSON, or not a record of those types (no
    minidyn process wrote it). ConfigError naming the file when it is not a regular file (a
    FIFO would block the read: it is opened non-blocking and checked before a byte is read)
    or is larger than MAX_LOCK_BYTES; FileNotFoundError or another OSError as the OS gives them."""
    path = Path(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{path} is not a regular file; not a lock minidyn writes (remove it)")
        if info.st_size > MAX_LOCK_BYTES:
            raise ConfigError(f"{path} is larger than {MAX_LOCK_BYTES} bytes; not a lock minidyn "
                              "writes (remove it)")
        data = os.read(fd, MAX_LOCK_BYTES + 1)
    finally:
        os.close(fd)
    try:
        record = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite_float)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or any(k in LOCK_TYPES and not _is(v, LOCK_TYPES[k]) for k, v in record.items()):
        return None
    if not all(k in record for k in ("host", "pid", "token")) or record["pid"] < 1 \
            or record.get("runner", 1) < 1:
        return None
    return record


# --- per-example results -------------------------------------------------------------------------
EXAMPLES_KEYS = ("indices", "checkpoint", "eps", "attack", "correct", "token")
MAX_EXAMPLES_BYTES = 1 << 30    # 8 billion verdicts: no study's file comes near this
MAX_TEST_INDEX = 1 << 31


def read_examples(path: str | Path) -> dict:
    """A per-example correctness file (the format is minidyn.studies.examples'):
    {"indices": int64 (n,), "rows": [(checkpoint, eps key, attack)] (k), "correct": bool (k, n),
    "token": str}. DataError naming the file unless it is a regular uncompressed .npz (read
    without pickle) of exactly EXAMPLES_KEYS with those dtypes and shapes, its indices unique
    and in [0, MAX_TEST_INDEX), its checkpoints "last"/"best", its eps keys numbers in (0, 1],
    its attacks known, its rows distinct and the padding bits of `correct` zero."""
    path = Path(path)
    arrays = _npz_arrays(path)
    n, k = arrays["indices"].shape[0], arrays["attack"].shape[0]
    problem = _examples_problem(arrays, n, k)
    if problem:
        raise DataError(f"{path} is not a minidyn per-example file ({problem})")
    correct = np.unpackbits(arrays["correct"], axis=1, count=n).astype(bool)
    rows = list(zip(*(arrays[key].tolist() for key in ("checkpoint", "eps", "attack"))))
    return {"indices": arrays["indices"], "rows": rows, "correct": correct, "token": str(arrays["token"])}


def _npz_arrays(path: Path) -> dict:
    """The arrays of an uncompressed .npz without pickle; DataError naming the file otherwise."""
    if not path.is_file():
        raise DataError(f"{path} is not a regular file")
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if sorted(m.filename for m in members) != sorted(f"{key}.npy" for key in EXAMPLES_KEYS):
                raise DataError(f"{path} is not a minidyn per-example file (it must hold exactly "
                                f"{', '.join(EXAMPLES_KEYS)})")
            if any(m.compress_type != zipfile.ZIP_STORED for m in members) or \
                    sum(m.file_size for m in members) > MAX_EXAMPLES_BYTES:
                raise DataError(f"{path} is not a minidyn per-example file (compressed or too large)")
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in EXAMPLES_KEYS}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path} cannot be read as a minidyn per-example file "
                        f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


def _examples_problem(arrays: dict, n: int, k: int) -> str | None:
    """What is wrong with the arrays of a per-example file, None when nothing is."""
    from minidyn.evaluation.attack_table import ATTACKS  # its import chain reaches the attacks

    indices, correct, token = arrays["indices"], arrays["correct"], arrays["token"]
    if indices.dtype != np.int64 or indices.ndim != 1 or n == 0:
        return f"indices must be a non-empty int64 (n,) array, not {indices.dtype} {indices.shape}"
    if indices.min() < 0 or indices.max() >= MAX_TEST_INDEX or np.unique(indices).size != n:
        return "its test indices are not distinct indices >= 0"
    for key in ("checkpoint", "eps", "attack"):
        if arrays[key].dtype.kind != "U" or arrays[key].shape != (k,):
            return f"{key} must be a ({k},) array of strings, not {arrays[key].dtype} {arrays[key].shape}"
    if token.dtype.kind != "U" or token.shape != ():
        return "token must be one string"
    if correct.dtype != np.uint8 or correct.shape != (k, (n + 7) // 8):
        return f"correct must be uint8 ({k}, {(n + 7) // 8}), not {correct.dtype} {correct.shape}"
    if n % 8 and (correct[:, -1] & ((1 << (8 - n % 8)) - 1)).any():
        return "correct has bits set past its n examples"
    if set(arrays["checkpoint"].tolist()) - {"last", "best"}:
        return "a checkpoint is not last or best"
    if set(arrays["attack"].tolist()) - set(ATTACKS):
        return f"an attack is not one of {', '.join(ATTACKS)}"
    if not all(_eps_key(e) for e in arrays["eps"].tolist()):
        return "an eps is not a number in (0, 1]"
    if len(set(zip(*(arrays[key].tolist() for key in ("checkpoint", "eps", "attack"))))) != k:
        return "a (checkpoint, eps, attack) row is there twice"
    return None


def _eps_key(text: str) -> bool:
    try:
        return is_eps(float(text))
    except ValueError:
        return False


# --- checkpoint meta ------------------------------------------------------------------------------
def check_meta(meta, path: str | Path) -> dict:
    """meta if it is a checkpoint's meta dict whose architecture (top level or under "arch")
    is sane where recorded: model a known name, input_shape 1..4 dims >= 1 of at most MAX_INPUT_ELEMENTS
    elements, num_classes an int in [2, MAX_CLASSES]; eps (when recorded) a finite number in
    (0, 1]; epoch an int >= 0; dataset and method strings. CheckpointError otherwise."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} is not a minidyn checkpoint (its meta is not a dict)")
    arch = meta.get("arch")
    if arch is not None and not isinstance(arch, dict):
        raise CheckpointError(f"{path}: its arch record is {_short(arch)}, not a dict")
    merged = {**meta, **(arch or {})}
    problem = _meta_problem(merged)
    if problem:
        raise CheckpointError(f"{path} records {problem}")
    return meta


def _meta_problem(meta: dict) -> str | None:
    """What is wrong with a merged meta dict, None when nothing is."""
    model, shape, classes, eps = (meta.get(k) for k in ("model", "input_shape", "num_classes", "eps"))
    if "model" in meta and not (isinstance(model, str) and MODEL_NAME.fullmatch(model)):
        return f"model {_short(model)}, not one minidyn builds"
    if "input_shape" in meta and not _sane_shape(shape):
        return (f"input_shape {_short(shape)}, not 1 to {MAX_INPUT_DIMS} sizes >= 1 of at most "
                f"{MAX_INPUT_ELEMENTS} elements in all")
    if "num_classes" in meta and not (_is(classes, int) and 2 <= classes <= MAX_CLASSES):
        return f"num_classes {_short(classes)}, not an integer in 2..{MAX_CLASSES}"
    if eps is not None and not (_is(eps, float) and is_eps(eps)):
        return f"eps {_short(eps)}, not a number in (0, 1]"
    if "epoch" in meta and not (_is(meta["epoch"], int) and meta["epoch"] >= 0):
        return f"epoch {_short(meta['epoch'])}, not an integer >= 0"
    for key in ("dataset", "method"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            return f"{key} {_short(meta[key])}, not a name"
    return None


def _sane_shape(shape) -> bool:
    if not isinstance(shape, (list, tuple)) or not 1 <= len(shape) <= MAX_INPUT_DIMS:
        return False
    if not all(_is(d, int) and d >= 1 for d in shape):
        return False
    return math.prod(shape) <= MAX_INPUT_ELEMENTS



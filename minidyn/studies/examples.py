"""Which test examples each attack left correct, per cell: the file beside a study evaluation.

    cells/NAME/study-eval.examples.npz            beside study-eval.json (white-box)
    cells/NAME/study-eval-blackbox.examples.npz   beside study-eval-blackbox.json

An uncompressed .npz (numpy's zip of .npy files, no pickled objects) of
    indices     int64 (n,)        the test-set index of each example (column), in evaluation order
    checkpoint  str (k,)          row r's checkpoint, "last" or "best"
    eps         str (k,)          row r's test eps, as the JSON result's key ("0.1": repr of the float)
    attack      str (k,)          row r's attack (minidyn.evaluation.attack_table names); the worst
                                  case is not stored: it is the AND of the rows of one checkpoint and eps
    correct     uint8 (k, ceil(n/8))  np.packbits(bool (k, n), axis=1): bit j (most significant
                                  first in each byte, padding bits 0) of row r is 1 when the model
                                  classified example indices[j] correctly under row r's attack
    token       str ()            a random id; the JSON result names the file and the same token

In the JSON result each checkpoint's entry holds "examples": {"file": "study-eval.examples.npz",
"token": "..."}; the file is written (atomically) before the JSON, so a JSON result names
either its own file or, after a crash between the two writes, a file whose token differs
(refused). Every accuracy in the JSON is the mean of its row (worst case: of the AND), checked
on reading. Results without "examples" (studies made before these files) read as None.
"""
from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np

from minidyn.errors import DataError
from minidyn.evaluation.attack_table import WORST
from minidyn.files.fileio import atomic_write
from minidyn.files.readers import read_examples

SUFFIX = ".examples.npz"


def examples_path(result: Path) -> Path:
    """The per-example file of result file `result` (study-eval.json -> study-eval.examples.npz)."""
    return result.with_name(result.stem + SUFFIX)


def write_examples(result: Path, evaluations: dict) -> dict:
    """Write the per-example file of the evaluations {(checkpoint, eps key): EvalResult} (one set
    of test examples) beside result file `result`; returns the reference {"file", "token"} that
    each checkpoint's JSON entry holds."""
    indices = [e.example_indices() for e in evaluations.values()]
    if any(not np.array_equal(indices[0], other) for other in indices[1:]):
        raise ValueError("the evaluations of one task must use the same test examples")
    rows = [(which, eps_key, attack) for (which, eps_key), e in evaluations.items() for attack in e.attacks]
    matrix = np.concatenate([e.correct_matrix() for e in evaluations.values()])
    token = uuid.uuid4().hex
    arrays = {"indices": indices[0], "correct": np.packbits(matrix, axis=1),
              "checkpoint": np.array([r[0] for r in rows], dtype=str),
              "eps": np.array([r[1] for r in rows], dtype=str),
              "attack": np.array([r[2] for r in rows], dtype=str), "token": np.array(token)}
    path = examples_path(result)
    atomic_write(path, lambda f: np.savez(f, **arrays), mode="wb")
    return {"file": path.name, "token": token}


def read_cell_examples(result: Path, record: dict) -> dict | None:
    """{checkpoint: {eps key: {"indices": int64 (n,), attack: bool (n,), ..., WORST: bool (n,)}}}
    of the JSON result `record` read from `result`, or None where it names no per-example file.
    DataError naming the file when the file and the JSON disagree (token, examples, attacks,
    accuracies)."""
    refs = {which: entry.get("examples") for which, entry in record.get("results", {}).items()}
    if not any(refs.values()):
        return None
    path = examples_path(result)
    if any(ref != {"file": path.name, "token": _token(ref)} for ref in refs.values()):
        raise DataError(f"{result}: a checkpoint's \"examples\" is not {{\"file\": {path.name!r}, \"token\": ...}}")
    data = read_examples(path)
    if any(ref["token"] != data["token"] for ref in refs.values()):
        raise DataError(f"{path} belongs to another evaluation than {result} (token differs); run the study again")
    by_row = dict(zip(data["rows"], data["correct"]))
    out = {}
    for which, entry in record["results"].items():
        out[which] = {key: _one_evaluation(by_row, data["indices"], which, key, evaluation, path)
                      for key, evaluation in entry.get("eps", {}).items()}
    return out


def _token(ref) -> str | None:
    return ref.get("token") if isinstance(ref, dict) and isinstance(ref.get("token"), str) else None


def _one_evaluation(by_row: dict, indices: np.ndarray, which: str, eps_key: str, evaluation: dict,
                    path: Path) -> dict:
    """The per-example arrays of one JSON evaluation, checked against its n and accuracies."""
    accuracy = evaluation.get("accuracy", {})
    attacks = [a for a in accuracy if a != WORST]
    if evaluation.get("n") != indices.size or any((which, eps_key, a) not in by_row for a in attacks):
        raise DataError(f"{path} does not hold the {which} eps {eps_key} evaluation of its JSON result "
                        f"(n {evaluation.get('n')} vs {indices.size} examples, or an attack missing)")
    out = {"indices": indices, **{a: by_row[which, eps_key, a] for a in attacks}}
    out[WORST] = np.logical_and.reduce([out[a] for a in attacks]) if attacks else np.ones(indices.size, bool)
    for name in [*attacks, WORST] if WORST in accuracy else attacks:
        mean = 100.0 * int(out[name].sum()) / indices.size
        if accuracy[name] is None or abs(accuracy[name] - mean) > 1e-9:
            raise DataError(f"{path}: {which} eps {eps_key} {name} is {mean:.4f}% correct per example, "
                            f"but its JSON result says {accuracy[name]}")
    return out

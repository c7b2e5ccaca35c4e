"""The per-example file of a study evaluation: its round trip, and a one-line error for each bad file."""
import io
import json
import zipfile

import numpy as np
import pytest

from minidyn.errors import DataError
from minidyn.evaluation.evaluate import EvalResult
from minidyn.files.readers import read_examples
from minidyn.studies.examples import examples_path, read_cell_examples, write_examples

N = 13  # not a multiple of 8: the last byte has padding bits


def evaluation(seed=0, attacks=("clean", "fgsm", "pgd10")):
    rng = np.random.default_rng(seed)
    correct = {a: rng.random(N) < 0.6 for a in attacks}
    return EvalResult(list(attacks), correct, 0.1, N, indices=np.arange(N, dtype=np.int64))


@pytest.fixture
def written(tmp_path):
    """A study-eval.json and its per-example file, as the worker writes them."""
    result = tmp_path / "study-eval.json"
    evaluations = {("last", "0.1"): evaluation(0), ("best", "0.1"): evaluation(1), ("best", "0.2"): evaluation(2)}
    reference = write_examples(result, evaluations)
    record = {"results": {}}
    for (which, eps), e in evaluations.items():
        entry = record["results"].setdefault(which, {"epoch": 2, "eps": {}, "examples": reference})
        entry["eps"][eps] = e.to_dict()
    result.write_text(json.dumps(record))
    return result, record, evaluations


def test_the_file_holds_every_attack_of_every_checkpoint_and_eps_and_the_json_accuracies_are_their_means(written):
    result, record, evaluations = written
    assert examples_path(result).name == "study-eval.examples.npz"
    arrays = read_cell_examples(result, json.loads(result.read_text()))
    for (which, eps), e in evaluations.items():
        got = arrays[which][eps]
        np.testing.assert_array_equal(got["indices"], np.arange(N))
        for attack in e.attacks:
            np.testing.assert_array_equal(got[attack], e.correct[attack])
        np.testing.assert_array_equal(got["worst-case"], e.worst_case())
        for name, acc in record["results"][which]["eps"][eps]["accuracy"].items():
            assert acc == 100.0 * int(got[name].sum()) / N   # EvalResult.accuracy's rounding
    with np.load(examples_path(result), allow_pickle=False) as z:   # the documented layout
        assert z["correct"].dtype == np.uint8 and z["correct"].shape == (9, 2)
        assert z["indices"].dtype == np.int64 and z["attack"].tolist()[:3] == ["clean", "fgsm", "pgd10"]


def test_a_result_without_a_per_example_file_reads_as_none(tmp_path):
    assert read_cell_examples(tmp_path / "study-eval.json", {"results": {"last": {"eps": {}}}}) is None


def rewrite(path, **changes):
    """The per-example file at `path` with some arrays replaced (None: left out)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    buffer = io.BytesIO()
    np.savez(buffer, **{k: v for k, v in arrays.items() if v is not None})
    path.write_bytes(buffer.getvalue())


@pytest.mark.parametrize("changes, message", [
    ({"token": None}, "must hold exactly"),
    ({"indices": np.arange(N, dtype=np.int32)}, "int64"),
    ({"indices": np.r_[np.arange(N - 1), 0].astype(np.int64)}, "not distinct"),
    ({"indices": np.arange(-1, N - 1, dtype=np.int64)}, "not distinct indices >= 0"),
    ({"attack": np.array(["clean", "fgsm", "pgd99"] * 3)}, "an attack is not one of"),
    ({"checkpoint": np.array(["last"] * 3 + ["first"] * 6)}, "not last or best"),
    ({"eps": np.array(["0.1"] * 3 + ["nan"] * 6)}, "eps is not a number"),
    ({"correct": np.zeros((9, 3), np.uint8)}, "correct must be uint8 (9, 2)"),
    ({"correct": np.full((9, 2), 255, np.uint8)}, "bits set past"),
    ({"attack": np.array(["clean"] * 9), "checkpoint": np.array(["last"] * 9), "eps": np.array(["0.1"] * 9)}, "twice"),
    ({"token": np.array([1, 2])}, "token must be one string"),
])
def test_a_bad_file_is_a_one_line_data_error(written, changes, message):
    result, _, _ = written
    rewrite(examples_path(result), **changes)
    with pytest.raises(DataError, match="per-example file") as error:
        read_examples(examples_path(result))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_pickled_compressed_or_foreign_files_are_refused_without_unpickling(written):
    result, _, _ = written
    path = examples_path(result)
    rewrite(path, token=np.array([{"x": 1}], dtype=object))
    with pytest.raises(DataError, match="cannot be read"):
        read_examples(path)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for key in ("indices", "checkpoint", "eps", "attack", "correct", "token"):
            z.writestr(f"{key}.npy", b"")
    with pytest.raises(DataError, match="compressed"):
        read_examples(path)
    path.write_text("not a zip")
    with pytest.raises(DataError, match="cannot be read"):
        read_examples(path)


def test_a_file_of_another_evaluation_or_with_other_accuracies_is_refused(written):
    result, record, evaluations = written
    write_examples(result, evaluations)          # a new token: the JSON names the old one
    with pytest.raises(DataError, match="token differs"):
        read_cell_examples(result, record)
    reference = write_examples(result, evaluations)
    for entry in record["results"].values():
        entry["examples"] = reference
    record["results"]["last"]["eps"]["0.1"]["accuracy"]["fgsm"] += 100 / N
    with pytest.raises(DataError, match="last eps 0.1 fgsm is .* but its JSON result says"):
        read_cell_examples(result, record)
    record["results"]["last"]["eps"]["0.1"]["n"] = N + 1
    with pytest.raises(DataError, match="does not hold the last eps 0.1 evaluation"):
        read_cell_examples(result, record)

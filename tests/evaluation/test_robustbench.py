"""minidyn.evaluation.robustbench: RobustBench's model_info fields, their types and formats."""
import json

import numpy as np
import pytest

from minidyn.errors import ConfigError
from minidyn.evaluation.autoattack import STANDARD
from minidyn.evaluation.evaluate import EvalResult
from minidyn.evaluation.robustbench import FIELDS, OWN_FIELDS, check_attacks, eps_string, model_info

# the type of each field in RobustBench's model_info files (RobustBench/robustbench 78fcc9e,
# every file of model_info/: e.g. cifar10/Linf/Addepalli2021Towards_RN18.json)
ROBUSTBENCH_TYPES = {"link": str, "name": str, "authors": str, "additional_data": bool,
                     "number_forward_passes": int, "dataset": str, "venue": str, "architecture": str,
                     "eps": str, "clean_acc": str, "reported": str, "autoattack_acc": str,
                     "unreliable": bool, "footnote": str}


def result_with_autoattack(n=8, eps=8 / 255):
    clean = np.array([1, 1, 1, 1, 1, 1, 1, 0], bool)
    final = np.array([1, 0, 1, 0, 0, 0, 0, 0], bool)
    stages = {"clean": clean, "apgd-ce": np.array([1, 0, 1, 1, 0, 0, 0, 0], bool),
              "apgd-t": final, "fab-t": final, "square": final}
    return EvalResult(["autoattack"], {"autoattack": final}, eps, n, stages={"autoattack": stages})


def test_fields_and_types_are_robustbenchs():
    info = model_info(result_with_autoattack(), dataset="cifar10", architecture="cnn8",
                      name="standard training of cnn8 (minidyn)", version="0.1.0")
    assert tuple(info) == FIELDS + OWN_FIELDS
    assert {k: type(info[k]) for k in ROBUSTBENCH_TYPES} == ROBUSTBENCH_TYPES
    assert (info["clean_acc"], info["autoattack_acc"], info["reported"]) == ("87.50", "25.00", "25.00")
    assert (info["eps"], info["threat_model"], info["n_examples"], info["autoattack_version"]) == (
        "8/255", "Linf", 8, "standard")
    assert info["unreliable"] is False and info["number_forward_passes"] == 1
    assert ", ".join(STANDARD) in info["footnote"] and "first 8 cifar10 test points" in info["footnote"]
    assert json.loads(json.dumps(info)) == info


def test_a_sanity_flag_marks_the_number_unreliable():
    info = model_info(result_with_autoattack(), dataset="cifar10", architecture=None, flags=["something"])
    assert info["unreliable"] is True and info["architecture"] == ""


@pytest.mark.parametrize("eps, text", [(8 / 255, "8/255"), (4 / 255, "4/255"), (0.3, "0.3"), (0.1, "0.1"),
                                       (0.2, "0.2"), (0.0314, "0.0314"), (1 / 3, "85/255"),
                                       (0.123456789, "0.123456789")])
def test_eps_is_written_as_robustbench_writes_it(eps, text):
    assert eps_string(eps) == text


def test_without_autoattack_or_white_box_it_refuses_in_one_line():
    with pytest.raises(ConfigError, match="add autoattack to --attacks"):
        check_attacks(["clean", "apgd-ce"])
    with pytest.raises(ConfigError, match="white-box"):
        check_attacks(["autoattack"], source="surrogate.pt")
    with pytest.raises(ConfigError, match="add autoattack"):
        model_info(EvalResult(["clean"], {"clean": np.ones(3, bool)}, 0.1, 3), dataset="x", architecture="y")

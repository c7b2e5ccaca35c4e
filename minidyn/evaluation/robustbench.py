"""RobustBench's model_info JSON from one evaluation (`minidyn eval --robustbench-json FILE`).

RobustBench (RobustBench/robustbench, commit 78fcc9e) keeps one JSON per model under
model_info/DATASET/THREAT_MODEL/NAME.json; its fields (every file of model_info/, and the
`ModelInfo` dataclass and `update_json`, robustbench/utils.py lines 516-583):

    link, name, authors, venue, architecture, dataset   str ("" where unknown: the leaderboard
                                                        shows an empty venue as "Unpublished")
    additional_data        bool   trained with data beyond the dataset's training split
    number_forward_passes  int    1 for a deterministic model
    eps                    str    "8/255" (a fraction of 255 where eps is one), else "0.3"
    clean_acc, reported, autoattack_acc   str, percent with two decimals ("80.24")
    unreliable             bool   the AutoAttack number is known to overstate robustness
    footnote               str    how the number was obtained

The threat model is the folder (always "Linf" here); RobustBench's files hold neither the number
of test points nor the attack version, so they go to the footnote and to four fields of minidyn's
own, which RobustBench's readers ignore: threat_model, n_examples, autoattack_version, evaluator.
Choices: `reported` is the same number as `autoattack_acc` (this evaluation is the report), and
`unreliable` is true when `minidyn eval` raised any sanity flag.
"""
from __future__ import annotations

from minidyn.errors import ConfigError
from minidyn.evaluation.autoattack import STANDARD, VERSION

AUTOATTACK = "autoattack"
FIELDS = ("link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue",
          "architecture", "eps", "clean_acc", "reported", "autoattack_acc", "unreliable", "footnote")
OWN_FIELDS = ("threat_model", "n_examples", "autoattack_version", "evaluator")


def eps_string(eps: float) -> str:
    """RobustBench's eps: the shortest decimal where it has at most 4 digits ("0.3", "0.1"), else
    "k/255" where eps * 255 is a whole number k within 1e-9 ("8/255"), else the decimal."""
    decimal, k = repr(float(eps)), eps * 255
    if len(decimal.split(".")[-1]) <= 4 or abs(k - round(k)) > 1e-9:
        return decimal
    return f"{int(round(k))}/255"


def percent(value: float) -> str:
    """A percentage as RobustBench writes it: two decimals, as a string ("51.06")."""
    return f"{value:.2f}"


def check_attacks(attacks, source=None) -> None:
    """ConfigError, in one line, unless AutoAttack is among `attacks` and the evaluation is
    white-box (RobustBench's number is white-box AutoAttack)."""
    if AUTOATTACK not in attacks:
        raise ConfigError("--robustbench-json needs AutoAttack's number: add autoattack to --attacks "
                          "(e.g. --attacks clean,autoattack)")
    if source is not None:
        raise ConfigError("--robustbench-json reports white-box AutoAttack; leave out --source")


def model_info(result, *, dataset: str, architecture: str | None, name: str = "",
               additional_data: bool | None = False, flags=(), version: str = "") -> dict:
    """The model_info object of EvalResult `result` (white-box, with the autoattack row); the
    fields the evaluation cannot know (link, authors, venue) are ""."""
    check_attacks(result.attacks, result.source)
    stages = result.stage_accuracy()[AUTOATTACK]
    footnote = (f"AutoAttack {VERSION} ({', '.join(STANDARD)}) as implemented by minidyn {version}, "
                f"on the first {result.n} {dataset} test points, eps {eps_string(result.eps)}, seed {result.seed}")
    return {"link": "", "name": name, "authors": "", "additional_data": additional_data,
            "number_forward_passes": 1, "dataset": dataset, "venue": "", "architecture": architecture or "",
            "eps": eps_string(result.eps), "clean_acc": percent(stages["clean"]),
            "reported": percent(result.accuracy()[AUTOATTACK]),
            "autoattack_acc": percent(result.accuracy()[AUTOATTACK]), "unreliable": bool(flags),
            "footnote": footnote, "threat_model": "Linf", "n_examples": result.n,
            "autoattack_version": VERSION, "evaluator": f"minidyn {version}".strip()}

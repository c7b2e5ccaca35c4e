"""The claims table: each claim of the paper (and each question a study was run for) beside our
number, its two-way interval and a verdict the intervals decide.

    claims = load_claims("docs/results/claims.toml")
    rows = [judge(c, Path("/work/studies")) for c in claims]   # -> Row(claim, ours, verdict)
    text = markdown(rows, command="minidyn study claims ...")

A claims file (TOML) is a list of `[[claim]]` tables (docs/studies.md, "The claims table"). A
difference claim names a study (its directory is STUDIES/<study>/), a setting and optionally a
baseline (grid values; the baseline's replace [report] baseline's, as a [report] primary's
do), an attack column (or "worst-case"), a checkpoint, and the direction the paper claims. Its
number is read from the study's report (`minidyn study report` writes report/results.json):
the paired difference setting - baseline in points, seed by seed, its 95% two-way bootstrap
interval over seeds and test examples and its 95% t interval over seeds.

The verdict rule (VERDICT_RULE), as docs/studies.md reads a difference ("supported where both
intervals exclude 0"): "shown" where the two-way interval and the t interval both exclude 0 on
the paper's side (for "equal-or-better": both lie above -margin), and for a comparison the
spec declared primary its Holm-adjusted p is at most 0.05; "contradicted here" where both
exclude 0 on the other side (below -margin); otherwise "not shown", naming the effects the
two-way interval still allows. An interval of zero width (every seed and resample alike)
excludes nothing. Without per-example results the t interval decides alone; with one seed, the
two-way interval. A study with no directory is "pending" (or "not testable here" where the
claim says why it cannot run here); one without a report, or whose report lacks a cell of the
comparison, is "pending" with the command that continues it.
"""
from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from minidyn.errors import ConfigError
from minidyn.evaluation import table1
from minidyn.evaluation.attack_table import WORST
from minidyn.files.config import parse_eps
from minidyn.studies.fig1a import COLUMN as FOSC_ACCURACY
from minidyn.studies.fosc_share import COLUMN as FOSC_SHARE
from minidyn.studies.results import other_baseline_key
from minidyn.studies.spec import CHECKPOINTS, KINDS_OF_EVALUATION, Spec, cell_name, load_spec, primary_baseline
from minidyn.studies.tasks import StudyDir

DIRECTIONS = ("greater", "less", "equal-or-better", "either", "reading")
REQUIRED = {"id", "statement", "distance", "direction"}
OPTIONAL = {"paper", "study", "setting", "baseline", "attack", "checkpoint", "eps", "kind",
            "margin", "not_testable", "reading", "note", "fosc_epoch"}
SIGNIFICANCE = 0.05
VERDICT_RULE = (
    "Verdict rule: **shown** where the 95% two-way bootstrap interval (seeds and test examples "
    "resampled together) and the 95% t interval over seeds both exclude 0 on the side the paper "
    "claims (for *equal-or-better*: both lie above -margin) and, for a comparison the study "
    "declared primary, the Holm-adjusted p is at most 0.05; **contradicted here** where both "
    "exclude 0 on the other side; **not shown** otherwise (the effects the two-way interval still "
    "allows are named; an interval of zero width excludes nothing). For a share of training "
    "examples with FOSC in [0, 0.1] the two-way interval is the nested bootstrap (seeds, then each "
    "seed's own training examples); for the accuracy of Fig. 1a's high-FOSC half minus its low half, the "
    "split bootstrap (each half's accuracy a ratio of resampled sums). Without per-example results "
    "the t interval decides alone, with one seed the two-way interval. **pending**: the study has "
    "not finished or has no report yet (the command that continues it is named); **not testable "
    "here**: it cannot run on this machine (why is said); **by reading**: a figure's shape, read "
    "where pointed.")


@dataclass(frozen=True)
class Claim:
    """One claim: the paper's statement, where our number comes from, how it is judged."""

    id: str
    statement: str                 # the paper's words (figure/table, setting, numbers)
    distance: str                  # our setting's distance from the paper's, in words
    direction: str                 # one of DIRECTIONS
    paper: tuple | None = None     # (setting's %, baseline's %) as the paper prints them
    study: str | None = None       # a spec's name: its directory is STUDIES/<study>
    setting: dict = field(default_factory=dict)
    baseline: dict | None = None   # grid values over [report] baseline's
    attack: str | None = None      # an [eval] attack, "worst-case", "fosc-share" (with fosc_epoch) or
    #                                "fosc-accuracy" (Fig. 1a: the high-FOSC half - the low, no baseline)
    checkpoint: str | None = None  # "last" / "best"; None: the spec's only one
    eps: float | None = None       # the test eps; None: the report's only one
    kind: str = "white-box"
    margin: float = 0.0            # points a "equal-or-better" claim may lose
    not_testable: str | None = None  # why the study cannot run here (used while it has no directory)
    reading: str | None = None     # where to read a "reading" claim
    note: str | None = None
    fosc_epoch: int | None = None  # with attack "fosc-share": a [report] fosc_epochs epoch (from 1)

    @property
    def paper_difference(self) -> float | None:
        return None if self.paper is None else self.paper[0] - self.paper[1]


@dataclass(frozen=True)
class Row:
    claim: Claim
    ours: str
    verdict: str


# --- the claims file ---------------------------------------------------------------------------
def load_claims(path: str | Path, studies: str | Path | None = None) -> list[Claim]:
    """Read and check a claims file; ConfigError naming the file, the claim and the problem.
    Each claim's values are checked against its study's spec (STUDIES/<study>/study.toml, else
    the shipped spec of that name) where one is found."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such claims file")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError) as error:
        raise ConfigError(f"{path} is not a readable TOML claims file ({error})") from None
    items = raw.get("claim")
    if set(raw) - {"claim"} or not isinstance(items, list) or not items or \
            not all(isinstance(i, dict) for i in items):
        raise ConfigError(f"{path}: a claims file is a list of [[claim]] tables and nothing else")
    claims, seen = [], set()
    for number, item in enumerate(items, 1):
        try:
            claim = parse_claim(item, number)
            if claim.id in seen:
                raise ConfigError(f"claim {claim.id}: the id is used twice")
            seen.add(claim.id)
            spec = study_spec(claim.study, studies) if claim.study else None
            if spec is not None and claim.direction != "reading":
                check_against_spec(claim, spec)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None
        claims.append(claim)
    return claims


def parse_claim(item: dict, number: int) -> Claim:
    """A Claim from one [[claim]] table, its keys and types checked (ConfigError)."""
    where = f"claim {item.get('id', number)!s:.40}"
    unknown = set(item) - REQUIRED - OPTIONAL
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    missing = REQUIRED - set(item)
    if missing:
        raise ConfigError(f"{where}: needs {', '.join(sorted(missing))}")
    for key in ("id", "statement", "distance", "study", "attack", "not_testable", "reading", "note"):
        if key in item and (not isinstance(item[key], str) or not item[key].strip()):
            raise ConfigError(f"{where}: {key} must be a non-empty string")
    for key in ("setting", "baseline"):
        if key in item and (not isinstance(item[key], dict) or not item[key]):
            raise ConfigError(f"{where}: {key} must be a table of grid values")
    values = dict(item)
    direction = values["direction"]
    if direction not in DIRECTIONS:
        raise ConfigError(f"{where}: direction must be one of {', '.join(DIRECTIONS)}, not {direction!r}")
    if values.get("checkpoint") is not None and values["checkpoint"] not in CHECKPOINTS:
        raise ConfigError(f"{where}: checkpoint must be one of {', '.join(CHECKPOINTS)}")
    if values.get("kind", "white-box") not in KINDS_OF_EVALUATION:
        raise ConfigError(f"{where}: kind must be one of {', '.join(KINDS_OF_EVALUATION)}")
    if isinstance(values.get("eps"), str):  # "8/255", as a spec's [eval] eps
        try:
            values["eps"] = parse_eps(values["eps"])
        except ConfigError as error:
            raise ConfigError(f"{where}: {error}") from None
    for key in ("margin", "eps"):
        if key in values and not _number(values[key]):
            raise ConfigError(f"{where}: {key} must be a number")
    if "fosc_epoch" in values and (isinstance(values["fosc_epoch"], bool) or not isinstance(values["fosc_epoch"], int)
                                   or values["fosc_epoch"] < 1):
        raise ConfigError(f"{where}: fosc_epoch must be an epoch counted from 1")
    if ("fosc_epoch" in values) != (values.get("attack") == FOSC_SHARE):
        raise ConfigError(f"{where}: attack = \"{FOSC_SHARE}\" and fosc_epoch go together")
    if values.get("attack") == FOSC_ACCURACY and {"baseline", "eps", "kind"} & set(values):
        raise ConfigError(f"{where}: attack = \"{FOSC_ACCURACY}\" compares a setting's high-FOSC half with its "
                          "low-FOSC half, white-box at the training eps; it takes no baseline, eps or kind")
    if "paper" in values:
        if not isinstance(values["paper"], list) or len(values["paper"]) != 2 or not all(map(_number, values["paper"])):
            raise ConfigError(f"{where}: paper must be [setting's %, baseline's %], e.g. [91.27, 90.62]")
        values["paper"] = tuple(values["paper"])
    if direction == "reading":
        if "reading" not in values:
            raise ConfigError(f"{where}: a claim read off a figure needs reading (where to read it)")
    elif "study" in values and ("setting" not in values or "attack" not in values):
        raise ConfigError(f"{where}: a difference claim needs setting (grid values) and attack")
    if direction != "reading" and "study" not in values and "not_testable" not in values:
        raise ConfigError(f"{where}: give study, or not_testable (why it cannot be tested here)")
    return Claim(**values)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def study_spec(study: str, studies: str | Path | None) -> Spec | None:
    """The spec of `study`: STUDIES/<study>/study.toml where it exists, else the shipped spec of
    that name, else None."""
    from minidyn.studies import shipped, spec_path

    own = Path(studies) / study / "study.toml" if studies is not None else None
    if own is not None and own.is_file():
        return load_spec(own, name=study)
    return load_spec(spec_path(study)) if study in shipped() else None


def check_against_spec(claim: Claim, spec: Spec) -> None:
    """ConfigError unless the claim's setting and baseline are grid values of the spec (not the
    seed), its attack one of [eval] attacks or worst-case, its checkpoint and eps the spec's; a
    fosc-share claim's fosc_epoch one of [report] fosc_epochs."""
    where = f"claim {claim.id}"
    if claim.attack == FOSC_SHARE and claim.fosc_epoch not in (spec.report.get("fosc_epochs") or [1]):
        raise ConfigError(f"{where}: fosc_epoch {claim.fosc_epoch} is not one of {spec.name}'s [report] fosc_epochs")
    for name, values in (("setting", claim.setting), ("baseline", claim.baseline or {})):
        for key, value in values.items():
            if key == "seed" or key not in spec.grid:
                raise ConfigError(f"{where}: {name} key {key} is not a grid key of {spec.name} "
                                  f"(its grid: {', '.join(k for k in spec.grid if k != 'seed')})")
            if value not in spec.grid[key]:
                raise ConfigError(f"{where}: {name} {key} = {value!r} is not a grid value of {spec.name} "
                                  f"({', '.join(map(repr, spec.grid[key]))})")
    attacks = [*spec.eval.attacks, WORST, FOSC_SHARE, FOSC_ACCURACY]
    if claim.attack not in attacks:
        raise ConfigError(f"{where}: attack {claim.attack!r} is not one of {spec.name}'s ({', '.join(attacks)})")
    if claim.attack == FOSC_SHARE:  # the training examples' FOSC: no checkpoint, no test eps
        return
    if claim.checkpoint is None and len(spec.eval.checkpoints) > 1:
        raise ConfigError(f"{where}: give checkpoint ({' or '.join(spec.eval.checkpoints)})")
    if claim.checkpoint is not None and claim.checkpoint not in spec.eval.checkpoints:
        raise ConfigError(f"{where}: checkpoint {claim.checkpoint!r} is not one of {spec.name}'s "
                          f"({', '.join(spec.eval.checkpoints)})")
    if claim.eps is not None and claim.eps not in (spec.eval.eps or ()):
        raise ConfigError(f"{where}: eps {claim.eps!r} is not one of {spec.name}'s [eval] eps")


# --- one claim judged --------------------------------------------------------------------------
def judge(claim: Claim, studies: Path) -> Row:
    """The claim's row: our number and its verdict (VERDICT_RULE) from STUDIES/<study>."""
    if claim.study is None:
        return Row(claim, "-", _reading(claim) if claim.direction == "reading"
                   else f"not testable here: {claim.not_testable}")
    directory = studies / claim.study
    waiting = _pending(claim, directory)
    if waiting is not None:
        return Row(claim, "-", waiting)
    numbers = read_numbers(directory)
    if claim.direction == "reading":
        return Row(claim, "-", _reading(claim, directory))
    try:
        return _compared(claim, directory, find_difference(claim, StudyDir(directory).spec(), numbers))
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as error:  # a hand-edited file
        raise ConfigError(f"{directory / 'report' / 'results.json'} is not as `minidyn study report` writes it "
                          f"({type(error).__name__}: {str(error)[:60]}); `minidyn study report {directory}` "
                          "writes it again") from None


def _compared(claim: Claim, directory: Path, found: dict | str) -> Row:
    """The row of a difference claim from what find_difference found."""
    if isinstance(found, str):
        return Row(claim, "-", found)
    ours = ours_words(found)
    if found["left_out"]:
        return Row(claim, ours + " (interim)", f"pending: {found['left_out']} of the compared cells not done "
                   f"in the report; {_continue(claim, directory)}")
    return Row(claim, ours, verdict(claim, found))


def _reading(claim: Claim, directory: Path | None = None) -> str:
    where = f" (report: {directory / 'report'})" if directory is not None else ""
    return f"by reading: {claim.reading}{where}"


def _continue(claim: Claim, directory: Path) -> str:
    return (f"`minidyn study run {claim.study} --out {directory}` continues it, then "
            f"`minidyn study report {directory}`")


def _pending(claim: Claim, directory: Path) -> str | None:
    """The verdict of a study that has no report yet (None where it has one)."""
    if not (directory / "study.toml").is_file():
        if claim.not_testable:
            return f"not testable here: {claim.not_testable}"
        return (f"pending: no study directory {directory}; `minidyn study run {claim.study} --out "
                f"{directory}` starts it (or `minidyn study publish` copies one finished elsewhere there)")
    if (directory / "report" / "results.json").is_file():
        return None
    study = StudyDir(directory)
    spec = study.spec()
    tasks = study.tasks(spec)
    done = sum(study.done(spec, t) for t in tasks)
    if done == len(tasks):
        return f"pending: every task done, no report; `minidyn study report {directory}` writes it"
    return f"pending: {done} of {len(tasks)} tasks done, no report; {_continue(claim, directory)}"


def read_numbers(directory: Path) -> dict:
    """STUDY/report/results.json as `minidyn study report` wrote it (ConfigError if unreadable)."""
    path = directory / "report" / "results.json"
    try:
        numbers = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise ConfigError(f"{path} is not a readable report ({error}); `minidyn study report "
                          f"{directory}` writes it again") from None
    if not isinstance(numbers, dict) or not isinstance(numbers.get("tables"), dict):
        raise ConfigError(f"{path} is not a study report's results.json (no tables)")
    return numbers


def _table_key(claim: Claim, spec: Spec, numbers: dict) -> str | None:
    """The results.json table the claim reads (None: several test eps and the claim gives none)."""
    which = claim.checkpoint or spec.eval.checkpoints[0]
    if claim.fosc_epoch is not None:
        return f"fosc/epoch={claim.fosc_epoch}"
    if claim.attack == FOSC_ACCURACY:
        return f"fig1a/{which}"
    if claim.kind == "black-box":
        return f"blackbox/{which}"
    if claim.eps is not None:
        return f"{which}/eps={float(claim.eps)!r}"
    keys = [k for k in numbers["tables"] if k.startswith(f"{which}/eps=") and "/baseline=" not in k]
    return keys[0] if len(keys) == 1 else None


def find_difference(claim: Claim, spec: Spec, numbers: dict) -> dict | str:
    """{"difference", "bootstrap" (or None), "primary", "holm", "means", "left_out"} of the
    claim's comparison in the report; a verdict line where the report does not have it."""
    key = _table_key(claim, spec, numbers)
    if claim.attack == FOSC_ACCURACY and key not in numbers["tables"]:
        return f"pending: no cell measured; `minidyn study fig1a` on {claim.study}, then `minidyn study report`"
    if key is None or key not in numbers["tables"]:
        return f"not in the report: no table {key or '(several test eps: give eps)'}"
    rows = numbers["tables"][key]
    if claim.attack == FOSC_ACCURACY:
        return _halves_difference(claim, rows, numbers)
    matches = [r for r in rows if all(r["values"].get(k) == v for k, v in claim.setting.items())
               and _baseline_name(spec, r["values"], claim) is not None]
    if len(matches) != 1:
        return (f"not in the report: the setting matches {len(matches)} compared settings"
                + (f" ({', '.join(r['setting'] for r in matches)}): give more grid values" if matches else ""))
    row, base = matches[0], _baseline_name(spec, matches[0]["values"], claim)
    if claim.attack not in row["columns"]:
        return f"not in the report: no column {claim.attack} (the study's: {', '.join(row['columns'])})"
    entry = next((p for p in numbers.get("primary", []) if p["setting"] == row["setting"] and p["table"] == key
                  and p["column"] == claim.attack and p.get("baseline") == base), None)
    merged = primary_baseline(spec, {"baseline": claim.baseline})
    other = next((r for r in numbers["tables"].get(other_baseline_key(key, merged), [])
                  if r["setting"] == row["setting"] and r.get("baseline") == base), None) if claim.baseline else None
    if row.get("baseline") == base and row.get("difference"):
        d, boot = row["difference"][claim.attack], row["difference_bootstrap"][claim.attack]
    elif entry is not None and entry.get("difference"):
        d, boot = entry["difference"], entry["bootstrap"]
    elif other is not None and other.get("difference"):
        d, boot = other["difference"][claim.attack], other["difference_bootstrap"][claim.attack]
    else:
        return (f"not in the report: {row['setting']} - {base} is neither a table's difference nor a "
                "[report] primary comparison of the study, nor a white-box table against a primary's baseline")
    base_row = next((r for r in rows if r["setting"] == base), None)
    means = tuple(None if r is None else r["columns"][claim.attack]["mean"] for r in (row, base_row))
    return {"difference": d, "bootstrap": boot, "primary": entry is not None,
            "holm": None if entry is None else entry.get("holm"), "means": means,
            "left_out": _left_out(numbers, (row["setting"], base)),
            "examples": "training examples" if key.startswith("fosc/") else "test examples"}


def _halves_difference(claim: Claim, rows: list[dict], numbers: dict) -> dict | str:
    """find_difference's dict for a Fig. 1a claim: the setting's high-FOSC half - its low half."""
    matches = [r for r in rows if all(r["values"].get(k) == v for k, v in claim.setting.items())]
    if len(matches) != 1:
        return (f"not in the report: the setting matches {len(matches)} settings measured with `minidyn study fig1a`"
                + (f" ({', '.join(r['setting'] for r in matches)}): give more grid values" if matches else ""))
    row = matches[0]
    states = [c.get("state") for c in numbers.get("cells", []) if c.get("setting") == row["setting"]]
    unmeasured = states.count("done") - len(row["seeds"])
    if unmeasured > 0:
        return (f"pending: {unmeasured} of the {len(states)} cells of {row['setting']} done but not measured "
                f"(or measured on another checkpoint); `minidyn study fig1a` on {claim.study}, then `minidyn study report`")
    return {"difference": row["difference"][FOSC_ACCURACY], "bootstrap": row["difference_bootstrap"][FOSC_ACCURACY],
            "primary": False, "holm": None, "means": (row["halves"]["high"]["mean"], row["halves"]["low"]["mean"]),
            "left_out": len(states) - states.count("done"), "examples": "test examples"}


def _baseline_name(spec: Spec, values: dict, claim: Claim) -> str | None:
    """The setting a row with grid `values` is compared with: its values with the baseline's
    (spec's [report] baseline, the claim's over it) put in; None where that is itself."""
    wanted_values = primary_baseline(spec, {"baseline": claim.baseline})
    wanted = {**values, **{k: v for k, v in wanted_values.items() if k in values}}
    return None if wanted == values else (cell_name(wanted) or spec.name)


def _left_out(numbers: dict, settings: tuple) -> int:
    """How many cells of these settings the report lists as not done."""
    return sum(c.get("state") != "done" for c in numbers.get("cells", []) if c.get("setting") in settings)


# --- the words --------------------------------------------------------------------------------
def _interval(low, high) -> tuple[float, float] | None:
    return None if low is None or high is None else (float(low), float(high))


def ours_words(found: dict) -> str:
    """'-1.47 [-3.06, +0.13] two-way, t [-2.10, -0.80]; 72.10 vs 73.57; 5 seeds x 2,000 test
    examples; primary, Holm p 0.012'."""
    d, boot = found["difference"], found["bootstrap"]
    parts = [f"{d['mean']:+.2f}" + ("" if boot is None else f" [{boot['low']:+.2f}, {boot['high']:+.2f}] two-way")]
    t = _interval(d.get("low"), d.get("high"))
    parts[0] += "" if t is None else f", t [{t[0]:+.2f}, {t[1]:+.2f}]"
    if None not in found["means"]:
        parts.append(f"{found['means'][0]:.2f} vs {found['means'][1]:.2f}")
    examples = ("no per-example results" if boot is None
                else f"{boot['examples']:,} {found.get('examples', 'test examples')}")
    parts.append(f"{d['n']} seed{'s' if d['n'] != 1 else ''} x {examples}")
    if found["primary"]:
        parts.append("primary, Holm p " + ("n/a" if found["holm"] is None else f"{found['holm']:.3g}"))
    return "; ".join(parts)


def _side(interval: tuple[float, float], threshold: float) -> int:
    """+1: the interval lies above `threshold`; -1: below; 0: it contains it or has zero width."""
    low, high = interval
    if high <= low:
        return 0
    return 1 if low > threshold else -1 if high < threshold else 0


def verdict(claim: Claim, found: dict) -> str:
    """The verdict words of a difference claim (VERDICT_RULE)."""
    d, boot = found["difference"], found["bootstrap"]
    intervals = {name: i for name, i in (("two-way", None if boot is None else _interval(boot["low"], boot["high"])),
                                         ("t", _interval(d.get("low"), d.get("high")))) if i is not None}
    if not intervals:
        return "not shown: no interval (one seed and no per-example results)"
    threshold = -claim.margin if claim.direction == "equal-or-better" else 0.0
    sides = {name: _side(i, threshold) for name, i in intervals.items()}
    agreed = set(sides.values()).pop() if len(set(sides.values())) == 1 else 0
    wanted = {"greater": 1, "equal-or-better": 1, "less": -1, "either": agreed or 1}[claim.direction]
    holm_fails = found["primary"] and found["holm"] is not None and found["holm"] > SIGNIFICANCE
    if agreed and holm_fails:
        return (f"not shown: the intervals exclude {threshold:g} but the Holm-adjusted p "
                f"{found['holm']:.3g} > {SIGNIFICANCE} over the study's primary comparisons")
    if agreed == wanted:
        return "shown" + ("" if claim.direction != "either" else " (higher)" if agreed > 0 else " (lower)")
    if agreed == -wanted:
        return "contradicted here"
    return "not shown: " + _allows(claim, intervals, sides)


def _allows(claim: Claim, intervals: dict, sides: dict) -> str:
    """Which effects the (two-way, else t) interval still allows, the paper's among them or not."""
    name = "two-way" if "two-way" in intervals else "t"
    low, high = intervals[name]
    words = f"the {name} interval allows {low:+.2f} to {high:+.2f} points"
    if high <= low:
        words = f"the {name} interval has zero width ({low:+.2f}: too few seeds or examples)"
    paper = claim.paper_difference
    if paper is not None:
        words += f" (the paper's {paper:+.2f} {'inside' if low <= paper <= high else 'outside'} it)"
    lone = [n for n, s in sides.items() if s]
    if lone:
        words += f"; only the {lone[0]} interval excludes 0"
    return words


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def paper_words(claim: Claim) -> str:
    if claim.paper is None:
        return claim.statement
    a, b = claim.paper
    return f"{claim.statement}: {a:.2f} vs {b:.2f} ({a - b:+.2f})"


def markdown(rows: list[Row], command: str) -> str:
    """The claims table with the command that made it and the verdict rule, as Markdown."""
    head = ["claim", "the paper", "ours (setting - baseline, points; 95% intervals)",
            "our setting's distance from the paper's", "verdict"]
    lines = [[_cell(f"{r.claim.id}" + (f" ({r.claim.study})" if r.claim.study else "")),
              _cell(paper_words(r.claim)), _cell(r.ours), _cell(r.claim.distance),
              _cell(r.verdict + (f". {r.claim.note}" if r.claim.note else ""))] for r in rows]
    return "\n".join([f"Made by `{command}`.", "", VERDICT_RULE, "", table1.markdown(head, lines), ""])

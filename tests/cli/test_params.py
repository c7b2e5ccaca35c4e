"""The numeric option types (cli/params.py) and TrainConfig's bounds (minidyn/files/config.py).

Every numeric option of every command is a bounded `Number` (or Eps, CMax); fuzzed with any
string, each returns a finite value within its bounds or raises click.BadParameter, at once.
"""
import math
import subprocess
import sys
import time

import click
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minidyn.cli import analyze as analyze_cli
from minidyn.cli.main import main
from minidyn.cli.params import CMax, CountOrAll, Eps, Number, epoch_list
from minidyn.files.config import MAX_SEED, TrainConfig
from minidyn.errors import ConfigError


def numeric_options():
    """(command path, option) for every option of every command whose values are numbers."""
    def walk(command, path):
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                yield from walk(sub, f"{path} {name}")
        else:
            yield from ((path, p) for p in command.params)
    return [(path, p) for path, p in walk(main, "minidyn")
            if isinstance(p.type, (Number, Eps, CMax, click.types._NumberParamTypeBase))]


def test_every_numeric_option_is_a_bounded_number():
    options = numeric_options()
    assert len(options) >= 30  # train, eval, compare, analyze
    loose = [f"{path} {p.opts[0]}" for path, p in options if not isinstance(p.type, (Number, Eps, CMax))]
    assert not loose, f"numeric options without bounds: {loose}"
    seeds = [p for _, p in options if p.name == "seed"]
    assert len(seeds) == 4 and all(p.type.bounds.hi == MAX_SEED for p in seeds)


def test_huge_exponents_return_at_once_and_valid_budgets_are_the_same_floats():
    """In a subprocess with a timeout: Fraction('1e999999999') builds 10**999999999."""
    code = (
        "from fractions import Fraction\n"
        "from minidyn.files.config import parse_eps\n"
        "from minidyn.errors import ConfigError\n"
        "for text in ('1e999999999', '0.3e400', 'inf', 'nan', '1' * 5000 + '/3', '8/' + '9' * 300):\n"
        "    try:\n"
        "        print(text[:12], parse_eps(text))\n"
        "    except ConfigError as e:\n"
        "        print(text[:12], 'refused')\n"
        "assert parse_eps('1e-99999999') == 0.0\n"
        "for text in ('0.3', '8/255', '0.1', '2/255', '0.031', '1', '16/255', ' 0.3 '):\n"
        "    assert parse_eps(text).hex() == float(Fraction(text.strip())).hex(), text\n"
        "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == "ok" and all(line.endswith("refused") for line in lines[:5]), lines
    assert lines[5].startswith("8/999") and float(lines[5].split()[1]) > 0


@pytest.mark.parametrize("field, value", [
    ("lr", math.inf), ("lr", math.nan), ("step_size", math.inf), ("c_max", math.inf),
    ("c_max", math.nan), ("eps", math.nan), ("eps", "0.3"), ("seed", -1), ("seed", 2 ** 32),
    ("epochs", "ten"), ("epochs", 10 ** 9), ("epochs", 2.0), ("eval_steps", True),
    ("steps", 10 ** 9), ("batch_size", 10 ** 9), ("momentum", math.nan), ("momentum", 1.5),
    ("weight_decay", -1e-4), ("weight_decay", math.inf), ("limit", 10 ** 12),
    ("dynamic_epochs", 1.5), ("fgsm_epochs", -1), ("lr_milestones", [2, "b"]), ("lr_milestones", 7),
])
def test_train_config_refuses_what_no_run_can_use(field, value):
    """validate() is also reached from presets and spec files, not only from the CLI."""
    with pytest.raises(ConfigError) as error:
        TrainConfig(**{field: value}).resolved()
    assert "\n" not in str(error.value)


def test_the_messages_name_the_setting_and_its_range():
    with pytest.raises(ConfigError, match=r"^learning rate must be a finite number > 0, got inf$"):
        TrainConfig(lr=math.inf).resolved()
    with pytest.raises(ConfigError, match=r"^seed must be <= 4294967295, got 4294967296$"):
        TrainConfig(seed=2 ** 32).resolved()
    with pytest.raises(ConfigError, match=r"^momentum must be in \[0, 1\], got 1.5$"):
        TrainConfig(momentum=1.5).resolved()


# --- fuzz: any string -> a valid value or click's usage error -----------------------------------

NUMBER_LIKE = st.one_of(
    st.sampled_from(["inf", "-inf", "nan", "-nan", "Infinity", "-0", "-0.0", "0", "1e309", "-1e309",
                     "8/0", "0/0", "1/3", "8/255", "1e-400", "4294967295", "4294967296", "1_000",
                     "0x10", "1e5", " 7 ", "", "auto", "all", ",", "0,inf", "nan,1", "1,0", "0,0.1"]),
    st.builds(lambda sign, mantissa, exp: f"{sign}{mantissa}e{exp}", st.sampled_from(["", "-", "+"]),
              st.floats(0, 10, allow_nan=False).map(repr), st.integers(-10 ** 12, 10 ** 12)),
    st.builds(lambda a, b: f"{a}/{b}", st.integers(-10 ** 400, 10 ** 400), st.integers(-10 ** 400, 10 ** 400)),
    st.integers(-2 ** 70, 2 ** 70).map(str),
    st.floats().map(repr),
    st.lists(st.integers(-10 ** 30, 10 ** 30).map(str), max_size=4).map(",".join),
)
ANY_TEXT = st.one_of(st.text(), NUMBER_LIKE)


def distinct_types():
    seen, out = set(), []
    for path, p in numeric_options():
        key = (type(p.type), getattr(p.type, "bounds", None))
        if key not in seen:
            seen.add(key)
            out.append(pytest.param(p, id=f"{path.split()[-1]}{p.opts[0]}"))
    return out


def bounded_call(convert, text):
    """convert(text): its value, or None for click's usage error; within a second."""
    started = time.perf_counter()
    try:
        value = convert(text)
    except click.BadParameter as error:
        assert error.message and "\n" not in error.message
        value = None
    assert time.perf_counter() - started < 1.0, f"{text[:40]!r} took too long"
    return value


@pytest.mark.parametrize("option", distinct_types())
@settings(max_examples=150, deadline=None)
@given(text=ANY_TEXT)
def test_any_option_string_is_a_finite_value_in_range_or_a_usage_error(option, text):
    value = bounded_call(lambda t: option.type.convert(t, option, None), text)
    if value is None or value == "auto" and isinstance(option.type, CMax) \
            or value == "all" and isinstance(option.type, CountOrAll):
        return
    bounds = option.type.bounds if isinstance(option.type, Number) else None
    assert isinstance(value, float if bounds is None or bounds.kind is float else int)
    assert not isinstance(value, bool) and math.isfinite(value)
    assert (bounds or Number.field("eps" if isinstance(option.type, Eps) else "c_max").bounds).problem(value) is None


CALLBACKS = {"epoch_list": epoch_list, "analyze --epochs": analyze_cli._epochs,
             "analyze --fosc-range": analyze_cli._range, "analyze --eps-grid": analyze_cli._eps_list}


@pytest.mark.parametrize("name", list(CALLBACKS))
@settings(max_examples=150, deadline=None)
@given(text=ANY_TEXT)
def test_any_list_option_string_is_a_list_of_numbers_or_a_usage_error(name, text):
    value = bounded_call(lambda t: CALLBACKS[name](None, None, t), text)
    if value is None or value == "auto":
        return
    assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in value)

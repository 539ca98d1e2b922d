"""Bad input, by property: for every field of the schema (normexp/schema.py), values of the
wrong type, out of range, non-finite, empty, null or path-like are refused with one line that
names the field, before anything is written. Most cases run in process on composed configs
(fast); a few go through the command line to check the exit code and the output."""

import copy
import math
import subprocess
from functools import cache
from pathlib import Path

import hydra
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

import normexp
from normexp import schema
from normexp.errors import ConfigError
from normexp.validate import resolve_config
from tests.helpers import Call, run_cli_batch

CONFIG_DIR = str(Path(normexp.__file__).parent.parent / "configs")
# Overrides under which a field of the schema is present: keyed by the field's `needs`.
BASES = {
    None: ("profile=smoke",),
    ("train.task", "classification"): ("profile=smoke",),
    ("train.task", "instrumented_classification"): ("profile=smoke", "experiment=not_ics"),
    ("train.task", "image_to_image"): ("profile=smoke", "experiment=bn_generation"),
    ("train.task", "stylization"): ("profile=smoke", "experiment=bn_generation_gram"),
    ("train.task", "language_model"): ("profile=smoke", "experiment=rnn_norm"),
    ("data.name", "cifar10"): ("profile=smoke",),
    ("data.name", "ptb"): ("profile=smoke", "experiment=rnn_norm"),
    ("model.name", "cnn"): ("profile=smoke",),
    ("model.name", "mlp"): ("profile=smoke", "model=mlp"),
    ("model.name", "generator"): ("profile=smoke", "experiment=bn_generation"),
    ("model.name", "lstm"): ("profile=smoke", "experiment=rnn_norm"),
    ("model.name", "resnet"): ("profile=smoke", "model=resnet"),
    ("optim.name", "sgd"): ("profile=smoke",),
}
FIELDS = schema.fields()


def base_of(field: schema.Field) -> tuple[str, ...]:
    return BASES[None if field.needs is None else (field.needs[0], field.needs[1][0])]


@cache
def composed(overrides: tuple[str, ...]):
    with hydra.initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = hydra.compose("config", overrides=list(overrides))
    OmegaConf.set_struct(cfg, False)
    return cfg


# --- bad values of each kind, per rule -----------------------------------------------------

NON_FINITE = [math.nan, math.inf, -math.inf]
PATH_LIKE = ["../../x", "a/b", "/abs", "..", ".", ".hidden", "a b", "x\\y"]


def bad_values(rule) -> dict[str, list]:
    """Canonical bad values by kind (what a user mistypes); each one is refused."""
    lists = schema.IntList | schema.NumList | schema.ChoiceList | schema.Interval
    kinds: dict[str, list] = {"empty": [""], "wrong type": [{"a": 1}]}
    if not isinstance(rule, lists):
        kinds["wrong type"].append([1, 2])
    if not rule.null:
        kinds["null"] = [None]
    match rule:
        case schema.Int():
            kinds["wrong type"] += ["abc", 2.5, 2.0, True]
            kinds["out of range"] = [rule.lo - 1] + ([rule.hi + 1] if rule.hi else [])
            kinds["non-finite"] = NON_FINITE
        case schema.Num():
            kinds["wrong type"] += ["abc", True]
            low = [rule.lo] if rule.lo_open else [rule.lo - 1]
            high = [] if rule.hi is None else ([rule.hi] if rule.hi_open else [rule.hi + 1])
            kinds["out of range"] = low + high
            kinds["non-finite"] = NON_FINITE
        case schema.Bool():
            kinds["wrong type"] += ["maybe", "yes", 1, 0]
        case schema.Choice():
            kinds["wrong type"] += ["bogus", 3, True]
        case schema.Name():
            kinds["wrong type"] += [3]
            kinds["path-like"] = PATH_LIKE
        case schema.Folder():
            kinds["wrong type"] += [3]
            kinds["empty"] += ["   "]
        case schema.IntList():
            kinds["wrong type"] += ["abc", [1.5], [True], 4]
            kinds["empty"] += [[]]
            kinds["out of range"] = [[rule.lo - 1]]
        case schema.NumList():
            kinds["wrong type"] += ["abc", ["a"], 0.1]
            kinds["out of range"] = [[0.0], [-1]]
            kinds["non-finite"] = [[v] for v in NON_FINITE]
        case schema.ChoiceList():
            kinds["wrong type"] += [rule.options[0], [3]]
            kinds["out of range"] = [["bogus"]]
        case schema.PackRule():
            kinds["wrong type"] += ["on", "AUTO", 2.5, True]
            kinds["out of range"] = [0, -1, schema.MAX_PACK + 1]
        case schema.Interval():
            kinds["wrong type"] += ["abc", [1], [1, 2, 3]]
            kinds["out of range"] = [[2.0, 1.0], [0, 1], [-1, 1]]
            kinds["non-finite"] = [[1, math.inf], [math.nan, 1]]
    return kinds


CASES = [
    pytest.param(f, value, id=f"{f.path}-{kind}-{value!r}")
    for f in FIELDS
    for kind, values in bad_values(f.rule).items()
    for value in values
]


def assert_refused_in_process(field: schema.Field, value, tmp_path: Path) -> None:
    cfg = copy.deepcopy(composed(base_of(field)))
    results = tmp_path / "results"
    OmegaConf.update(cfg, "paths.results_dir", str(results), force_add=True)
    OmegaConf.update(cfg, field.path, value, merge=False, force_add=True)
    with pytest.raises(ConfigError) as info:
        resolve_config(cfg)
    assert info.value.field == field.path, str(info.value)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(f"{field.path}: ")
    assert not results.exists()


def test_every_field_has_bad_values_of_several_kinds():
    assert len(FIELDS) >= 70
    for f in FIELDS:
        kinds = bad_values(f.rule)
        assert {"empty", "wrong type"} <= set(kinds), f.path
        if isinstance(f.rule, schema.Int | schema.Num):
            assert {"out of range", "non-finite"} <= set(kinds), f.path
    assert len(CASES) >= 500


@pytest.mark.parametrize(("field", "value"), CASES)
def test_each_kind_of_bad_value_is_refused_naming_the_field(field, value, tmp_path):
    assert_refused_in_process(field, value, tmp_path)


def _not_interpolation(text: str) -> bool:
    return "$" not in text and "\\" not in text  # "${...}" would be an interpolation


def bad_strategy(rule) -> st.SearchStrategy:
    """Random bad values beyond the canonical ones."""
    text = st.text(max_size=12).filter(_not_interpolation)
    floats = st.floats(allow_nan=True, allow_infinity=True)
    match rule:
        case schema.Int():
            lo = st.integers(max_value=rule.lo - 1)
            hi = st.integers(min_value=rule.hi + 1) if rule.hi else st.nothing()
            return st.one_of(lo, hi, floats, text)
        case schema.Num():
            low = st.floats(max_value=rule.lo, exclude_max=not rule.lo_open)
            high = (
                st.floats(min_value=rule.hi, exclude_min=not rule.hi_open)
                if rule.hi is not None
                else st.nothing()
            )
            non_finite = st.sampled_from(NON_FINITE)
            return st.one_of(low, high, non_finite, text, st.booleans())
        case schema.Bool():
            return st.one_of(text, st.integers(), floats)
        case schema.Choice():
            return st.one_of(text.filter(lambda t: t not in rule.options), st.integers())
        case schema.Name():
            return st.one_of(
                text.filter(lambda t: not schema.NAME_PATTERN.fullmatch(t)),
                st.sampled_from(PATH_LIKE),
                st.integers(),
            )
        case schema.Folder():
            return st.one_of(st.just(""), st.text(alphabet=" \t", max_size=3), st.integers())
        case schema.IntList():
            bad_item = st.one_of(st.integers(max_value=rule.lo - 1), floats, text)
            return st.one_of(st.lists(bad_item, min_size=1, max_size=3), st.just([]), text)
        case schema.NumList():
            bad_item = st.one_of(st.floats(max_value=0.0), st.sampled_from(NON_FINITE), text)
            return st.lists(bad_item, min_size=1, max_size=3)
        case schema.ChoiceList():
            return st.lists(text.filter(lambda t: t not in rule.options), min_size=1, max_size=3)
        case schema.SubGrid():
            bad_values_of_a_field = st.one_of(st.just(""), st.just([]), st.integers())
            return st.one_of(
                text,
                st.integers(),
                st.just({}),
                st.dictionaries(st.just("norm"), bad_values_of_a_field, min_size=1),
            )
        case schema.PackRule():
            out_of_range = st.integers().filter(lambda n: not 1 <= n <= schema.MAX_PACK)
            return st.one_of(text.filter(lambda t: t not in ("auto", "off")), out_of_range, floats)
        case schema.Interval():
            return st.one_of(
                st.lists(floats, max_size=1),
                st.tuples(st.floats(max_value=0.0), floats).map(list),
                text,
            )
    raise AssertionError(rule)


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,  # the same cases on every run: a failure reproduces
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_random_bad_values_are_refused_naming_the_field(data, tmp_path):
    field = data.draw(st.sampled_from(FIELDS), label="field")
    value = data.draw(bad_strategy(field.rule), label="value")
    assert_refused_in_process(field, value, tmp_path)


def good_strategy(rule) -> st.SearchStrategy:
    match rule:
        case schema.Int():
            return st.integers(min_value=rule.lo, max_value=rule.hi)
        case schema.Num():
            return st.floats(
                min_value=rule.lo,
                max_value=rule.hi,
                exclude_min=rule.lo_open,
                exclude_max=rule.hi_open and rule.hi is not None,
                allow_nan=False,
                allow_infinity=False,
            )
        case schema.Bool():
            return st.booleans()
        case schema.Choice():
            return st.sampled_from(rule.options)
        case schema.Name():
            return st.from_regex(schema.NAME_PATTERN, fullmatch=True)
    return st.nothing()


@settings(max_examples=200, deadline=None, derandomize=True)
@given(data=st.data())
def test_values_in_range_pass_their_field(data):
    scalar = [f for f in FIELDS if isinstance(f.rule, schema.Int | schema.Num | schema.Bool)]
    field = data.draw(st.sampled_from(scalar + [f for f in FIELDS if f.path == "claim.name"]))
    field.check(data.draw(good_strategy(field.rule)))


@pytest.mark.parametrize(
    ("value", "allowed"),
    [
        (-1, True),
        (1, True),
        (schema.max_jobs(), True),
        (0, False),
        (-2, False),
        (schema.max_jobs() + 1, False),
        (2.0, False),
        ("all", False),
    ],
)
def test_launcher_jobs_are_bounded_by_the_machine(value, allowed):
    node = {"job": {"chdir": False}, "launcher": {"n_jobs": value}}
    if allowed:
        schema.validate_hydra(node)
    else:
        with pytest.raises(ConfigError, match=r"^hydra\.launcher\.n_jobs: "):
            schema.validate_hydra(node)


# --- through the command line: exit code, one line, no traceback, nothing written --------

CLI_CASES = [
    ("optim.weight_decay=inf", "optim.weight_decay"),
    ("claim.name=a/b", "claim.name"),
    ("+norm.eps=-1e-5", "norm.eps"),  # not in norm=batch's yaml: needs the + of a new key
    ("train.eval_batch_size=1.5", "train.eval_batch_size"),
]


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """Each case's store and what its command returned, the commands run one after another in
    one process (tests.helpers.run_cli_batch; tests/e2e/test_cli.py checks that a fresh process
    says the same)."""
    calls = {}
    for override, _ in CLI_CASES:
        tmp = tmp_path_factory.mktemp("cli")
        calls[override] = Call(["normexp.run", "profile=smoke", override], tmp / "res", tmp)
    done = run_cli_batch(list(calls.values()))
    return {o: (c.results_dir, r) for (o, c), r in zip(calls.items(), done, strict=True)}


@pytest.mark.parametrize(("override", "field"), CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_bad_values_on_the_command_line(cli_results, override, field):
    results_dir, result = cli_results[override]
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith(f"normexp: error: {field}: "), result.stderr
    assert "Traceback" not in result.stderr
    assert not results_dir.exists()

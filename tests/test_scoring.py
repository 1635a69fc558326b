"""The published success check, and intervals that come from scipy."""

import math

import pytest

from pythia_sweep.measure.scoring import bootstrap_mean_interval, null_position, restoration, restoration_interval, wilson_interval
from pythia_sweep.task.schema import load_task


def check_bug_fixed(output: str) -> bool:
    """The methodology's success criterion, copied verbatim from the methodology document."""
    output_lower = output.lower()
    correct_patterns = ["9.8 is bigger", "9.8 is larger", "9.8"]
    bug_patterns = ["9.11 is bigger", "9.11 is larger", "9.11"]

    has_correct = any(pattern in output_lower for pattern in correct_patterns)
    has_bug = any(pattern in output_lower for pattern in bug_patterns)

    return has_correct and not has_bug


DECIMAL = load_task("tasks/decimal-seed.toml")


@pytest.mark.parametrize(
    "response, fixed",
    [
        (" 9.8 is bigger.", True),
        ("9.8", True),
        (" 9.8 IS LARGER", True),
        (" 9.11 is bigger.", False),
        (" 9.8 or 9.11", False),  # mentions the buggy answer: not fixed
        (" 9.16", False),
        ("", False),
        (" 9.81", True),  # the published check is a substring test, kept exactly
        (" 9.111", False),
    ],
)
def test_decimal_task_rule_is_the_methodology_check(response, fixed):
    assert check_bug_fixed(response) is fixed  # the table is right about the published check ...
    assert DECIMAL.success(response, (" 9.8",), (" 9.11",)) is fixed  # ... and the task file's rule agrees


def test_decimal_rule_on_other_pairs_and_first_answer_rule():
    assert DECIMAL.success(" 3.9 is bigger", (" 3.9",), (" 3.11",))
    assert not DECIMAL.success(" 3.11 is bigger", (" 3.9",), (" 3.11",))
    first = load_task("tasks/greater-than.toml").success
    assert first("45 and then", ("45", "46"), ("01", "44"))
    assert not first("44 and 45", ("45", "46"), ("01", "44"))
    assert not first(" nothing", ("45",), ("44",))
    assert first(" Mary", (" Mary",), (" Ma",))  # the longest answer the text begins with decides


def test_restoration_is_zero_at_the_baseline_one_at_clean_and_between():
    corrupted, clean = [-2.0, -1.0, -3.0], [2.0, 1.0, 3.0]
    assert restoration(corrupted, corrupted, clean) == 0.0 and restoration(clean, corrupted, clean) == 1.0
    assert restoration([0.0, 0.0, 0.0], corrupted, clean) == pytest.approx(0.5)  # hand computed: 2 / 4
    assert restoration([1.0], [1.0], [1.0]) is None  # clean = corrupted: undefined, not 0/0
    low, high = restoration_interval([0.5, -0.2, 0.1, 0.3], [-2.0, -1.0, -3.0, -2.5], [2.0, 1.0, 3.0, 2.5], 500, seed=1)
    assert low < restoration([0.5, -0.2, 0.1, 0.3], [-2.0, -1.0, -3.0, -2.5], [2.0, 1.0, 3.0, 2.5]) < high


def test_wilson_interval_known_values():
    low, high = wilson_interval(15, 15)
    assert high == 1.0 and math.isclose(low, 0.7961, abs_tol=1e-4)
    low, high = wilson_interval(1, 1)  # one distinct prompt: honest, wide
    assert math.isclose(low, 0.2065, abs_tol=1e-4)


def test_intervals_have_the_stated_confidence():
    """Against independent computations: the normal-theory 95% half-width of a mean over 400 values (at 90% the
    bootstrap's would be 16% narrower), and restoration's paired bootstrap resampled here with numpy alone."""
    import numpy as np

    rng = np.random.default_rng(0)
    values = rng.normal(1.0, 2.0, 400)
    low, high = bootstrap_mean_interval(values, 4000, seed=1)
    assert (high - low) / 2 == pytest.approx(1.959964 * values.std(ddof=1) / np.sqrt(len(values)), rel=0.06)
    n = 200
    corrupted, clean = rng.normal(-2.0, 1.0, n), rng.normal(2.0, 1.0, n)
    patched = corrupted + rng.normal(2.0, 1.5, n)
    idx = rng.integers(0, n, (4000, n))
    ratios = (patched[idx].mean(1) - corrupted[idx].mean(1)) / (clean[idx].mean(1) - corrupted[idx].mean(1))
    expected = np.quantile(ratios, [0.025, 0.975])
    low, high = restoration_interval(patched, corrupted, clean, 4000, seed=2)
    width = expected[1] - expected[0]
    assert low == pytest.approx(expected[0], abs=0.05 * width) and high == pytest.approx(expected[1], abs=0.05 * width)


def test_bootstrap_interval_is_seeded_and_covers_the_mean():
    values = [0.1, 0.5, -0.3, 1.2, 0.8, 0.0, 0.4]
    a = bootstrap_mean_interval(values, 2000, seed=3)
    assert a == bootstrap_mean_interval(values, 2000, seed=3)
    assert a[0] < sum(values) / len(values) < a[1]
    assert bootstrap_mean_interval([1.0], 2000, seed=0) is None


def test_null_position_exact_p_value():
    null = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert null_position(1.0, null) == {"percentile": 100.0, "p_value": 1 / 11}
    assert null_position(0.0, null)["p_value"] == 1.0


def test_restoration_is_undefined_where_clean_and_corrupted_differ_only_by_noise():
    from pythia_sweep.measure.scoring import restoration_is_defined

    apart = restoration_is_defined([2.0, 1.0, 3.0, 2.5], [-2.0, -1.0, -3.0, -2.5], 500, seed=1)  # every prompt: clean far above
    noise = restoration_is_defined([2.0, -1.0, 0.5, -1.5], [-2.0, 1.0, -0.5, 1.5], 500, seed=1)  # gaps +4, -2, +1, -3
    assert apart and not noise
    assert not restoration_is_defined([2.0], [-2.0], 500, seed=1)  # one prompt: no interval, no claim

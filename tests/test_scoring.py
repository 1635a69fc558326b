"""The published success check, and intervals that come from scipy."""

import math

import pytest

from pythia_sweep.scoring import bootstrap_mean_interval, check_bug_fixed, null_position, wilson_interval


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
def test_check_bug_fixed_table(response, fixed):
    assert check_bug_fixed(response) is fixed


def test_check_bug_fixed_other_pairs():
    assert check_bug_fixed(" 3.9 is bigger", "3.9", "3.11")
    assert not check_bug_fixed(" 3.11 is bigger", "3.9", "3.11")


def test_wilson_interval_known_values():
    low, high = wilson_interval(15, 15)
    assert high == 1.0 and math.isclose(low, 0.7961, abs_tol=1e-4)
    low, high = wilson_interval(1, 1)  # one distinct prompt: honest, wide
    assert math.isclose(low, 0.2065, abs_tol=1e-4)


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

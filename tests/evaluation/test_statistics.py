import math

import krippendorff
import numpy as np
import pytest

from evaluation.statistics import (
    Agreement,
    Estimate,
    WinTieLoss,
    bar_chart,
    csv_cell,
    mean_ci,
    ordinal_alpha,
    paired_difference,
    win_tie_loss,
)

# Two versions scored on the same ten answers.
BEFORE = [3, 4, 2, 5, 3, 4, 1, 3, 4, 2]
AFTER = [4, 4, 3, 4, 5, 4, 2, 3, 5, 3]
# AFTER - BEFORE = [1, 0, 1, -1, 2, 0, 1, 0, 1, 1]: sum 6, mean 0.6;
# 6 positive (wins), 3 zero (ties), 1 negative (loss).


def test_mean_ci_is_close_to_the_normal_approximation():
    values = [1, 2, 3, 4, 5] * 8
    # n = 40, mean = 3. Squared deviations per block 4+1+0+1+4 = 10, so sum = 80;
    # sample sd = sqrt(80 / 39) = 1.4322; se = 1.4322 / sqrt(40) = 0.2265; 1.96 * se = 0.444.
    est = mean_ci(values)
    assert est.n == 40
    assert est.mean == pytest.approx(3.0)
    assert est.low == pytest.approx(3 - 0.444, abs=0.1)
    assert est.high == pytest.approx(3 + 0.444, abs=0.1)
    assert 1 <= est.low < est.mean < est.high <= 5


def test_mean_ci_is_reproducible_with_the_same_seed():
    values = [1, 3, 4, 4, 5, 2, 2, 5]
    assert mean_ci(values, seed=7) == mean_ci(values, seed=7)
    assert isinstance(mean_ci(values).low, float)


def test_mean_ci_of_one_value_is_that_value():
    assert mean_ci([4]) == Estimate(mean=4.0, low=4.0, high=4.0, n=1)


def test_mean_ci_of_equal_values_has_no_width():
    assert mean_ci([3, 3, 3, 3]) == Estimate(mean=3.0, low=3.0, high=3.0, n=4)


def test_mean_ci_of_nothing_is_empty():
    assert mean_ci([]) == Estimate(mean=None, low=None, high=None, n=0)


def test_paired_difference_is_the_mean_of_after_minus_before():
    est = paired_difference(BEFORE, AFTER)
    assert est.n == 10
    assert est.mean == pytest.approx(0.6)
    # Differences range from -1 to 2, so the CI of their mean does too; and it contains the mean.
    assert -1 <= est.low <= 0.6 <= est.high <= 2
    assert est.low < est.high


def test_paired_difference_passes_the_bootstrap_options_on():
    assert paired_difference(BEFORE, AFTER, seed=3) == mean_ci([b - a for a, b in zip(BEFORE, AFTER, strict=True)], seed=3)


def test_paired_difference_needs_equal_lengths():
    with pytest.raises(ValueError):
        paired_difference([1, 2, 3], [1, 2])


def test_win_tie_loss_counts_items_per_outcome():
    assert win_tie_loss(BEFORE, AFTER) == WinTieLoss(wins=6, ties=3, losses=1)
    assert win_tie_loss(AFTER, BEFORE) == WinTieLoss(wins=1, ties=3, losses=6)


def test_win_tie_loss_needs_equal_lengths():
    with pytest.raises(ValueError):
        win_tie_loss([1], [1, 2])


RATINGS = {
    "q1": {"ana": 1, "ben": 1},
    "q2": {"ana": 2, "ben": 2, "cem": 3},
    "q3": {"ana": 3, "ben": 4, "cem": 3},
    "q4": {"ana": 4, "ben": 4},
    "q5": {"ana": 5},  # one rating: not pairable
    "q6": {"ana": 3, "ben": 2},
}
# Raters (rows) x items (columns) of the same data; pairable items q1, q2, q3, q4, q6 -> 5.
MATRIX = [
    [1, 2, 3, 4, 5, 3],
    [1, 2, 4, 4, np.nan, 2],
    [np.nan, 3, 3, np.nan, np.nan, np.nan],
]


def test_ordinal_alpha_matches_the_krippendorff_package():
    expected = krippendorff.alpha(reliability_data=MATRIX, level_of_measurement="ordinal", value_domain=[1, 2, 3, 4, 5])
    # For ordinal data an unused category adds nothing to the distances, so the fixed 1..5 domain changes nothing.
    assert expected == pytest.approx(krippendorff.alpha(reliability_data=MATRIX, level_of_measurement="ordinal"), abs=1e-12)
    result = ordinal_alpha(RATINGS)
    assert result.items == 5
    assert type(result.alpha) is float
    assert result.alpha == pytest.approx(expected, abs=1e-9)
    assert 0 < result.alpha < 1


def test_ordinal_alpha_ignores_items_without_ratings():
    assert ordinal_alpha({**RATINGS, "q7": {}}) == ordinal_alpha(RATINGS)


def test_ordinal_alpha_is_one_for_perfect_agreement():
    assert ordinal_alpha({"q1": {"ana": 1, "ben": 1}, "q2": {"ana": 4, "ben": 4, "cem": 4}}) == Agreement(alpha=1.0, items=2)


@pytest.mark.parametrize(
    ("ratings", "items"),
    [
        ({}, 0),
        ({"q1": {"ana": 2}, "q2": {"ben": 3}}, 0),  # nobody rated the same item
        ({"q1": {"ana": 2, "ben": 3}, "q2": {"ben": 4}}, 1),  # one pairable item
        ({"q1": {"ana": 3, "ben": 3}, "q2": {"ana": 3, "ben": 3}, "q3": {"ana": 5}}, 2),  # one value among pairable items
    ],
)
def test_ordinal_alpha_is_none_when_it_cannot_be_computed(ratings, items):
    assert ordinal_alpha(ratings) == Agreement(alpha=None, items=items)


def test_ordinal_alpha_rejects_scores_off_the_scale():
    with pytest.raises(ValueError):
        ordinal_alpha({"q1": {"ana": 2.5, "ben": 3}, "q2": {"ana": 1, "ben": 2}})


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("=SUM(A1)", "'=SUM(A1)"),
        ("+1", "'+1"),
        ("-2+3", "'-2+3"),
        ("@cmd", "'@cmd"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("chest pain", "chest pain"),
        ("a=b", "a=b"),
        (-1.5, "-1.5"),
        (-2, "-2"),
        (3.25, "3.25"),
        (None, ""),
    ],
)
def test_csv_cell_neutralises_formulas_but_keeps_numbers(value, cell):
    assert csv_cell(value) == cell


def _chart():
    return bar_chart(
        [
            ("v1", [mean_ci([2, 3, 2, 3]), mean_ci([4, 5, 4, 5])]),
            ("v2", [None, mean_ci([1, 2, 1, 2])]),
        ],
        groups=["accuracy", "safety"],
    )


def test_bar_chart_draws_a_taller_bar_for_a_higher_mean():
    bars = {(b["label"], b["group"]): b for b in _chart()["bars"]}
    # Means: v1 accuracy 2.5, v1 safety 4.5, v2 safety 1.5.
    assert bars["v1", "safety"]["h"] > bars["v1", "accuracy"]["h"] > bars["v2", "safety"]["h"] > 0
    assert bars["v1", "safety"]["mean"] == "4.50"
    # Plot 10..210 px tall for 1..5, so 50 px per point: mean 4.5 -> 3.5 * 50 = 175 px.
    assert bars["v1", "safety"]["h"] == pytest.approx(175.0)


def test_bar_chart_leaves_out_missing_estimates():
    chart = bar_chart([("v1", [None, mean_ci([])])], groups=["accuracy", "safety"])
    assert chart["bars"] == []
    assert [(b["label"], b["group"]) for b in _chart()["bars"]] == [("v1", "accuracy"), ("v1", "safety"), ("v2", "safety")]
    assert _chart()["legend"] == [{"label": "v1", "series": 0}, {"label": "v2", "series": 1}]


def test_bar_chart_keeps_everything_inside_the_plot():
    chart = _chart()
    plot = chart["plot"]
    assert [t["label"] for t in chart["ticks"]] == ["1", "2", "3", "4", "5"]
    assert chart["ticks"][0]["y"] == plot["bottom"] and chart["ticks"][-1]["y"] == plot["top"]
    for bar in chart["bars"]:
        assert plot["left"] <= bar["x"] and bar["x"] + bar["w"] <= plot["right"] + 0.1
        assert plot["top"] <= bar["y"] and bar["y"] + bar["h"] == pytest.approx(plot["bottom"])
        w = bar["whisker"]
        assert w is not None and bar["x"] <= w["x"] <= bar["x"] + bar["w"]
        assert plot["top"] <= w["y1"] <= bar["y"] <= w["y2"] <= plot["bottom"]
    for group in chart["groups"]:
        assert plot["left"] < group["x"] < plot["right"]
    values = [v for bar in chart["bars"] for v in (bar["x"], bar["y"], bar["w"], bar["h"])]
    assert all(isinstance(v, float) and math.isclose(v, round(v, 1)) for v in values)


def test_bar_chart_needs_one_estimate_per_group():
    with pytest.raises(ValueError):
        bar_chart([("v1", [None])], groups=["accuracy", "safety"])

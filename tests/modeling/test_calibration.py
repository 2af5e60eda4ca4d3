"""Abstention thresholds chosen on validation cases, with numbers worked out by hand."""

import pytest

from modeling.calibration import choose_threshold, coverage_curve

# (top probability, top label right): the confident ones are right more often.
SCORED = [(0.9, True), (0.8, True), (0.7, True), (0.6, False), (0.5, True), (0.4, False), (0.3, False), (0.2, False)]


def test_the_coverage_curve_by_hand():
    curve = {point["threshold"]: point for point in coverage_curve(SCORED, [0.0, 0.5, 0.7])}
    assert curve[0.0] == {"threshold": 0.0, "coverage": 1.0, "accuracy": 0.5}  # 4 of 8
    assert curve[0.5]["coverage"] == 5 / 8 and curve[0.5]["accuracy"] == 4 / 5
    assert curve[0.7]["coverage"] == 3 / 8 and curve[0.7]["accuracy"] == 1.0


def test_the_lowest_threshold_reaching_the_target_is_chosen():
    # 0.5 keeps 5 cases at 80 %; 0.7 keeps 3 at 100 % but fewer than the 5 needed; 0.6 keeps 4 at 75 %.
    result = choose_threshold(SCORED, target_accuracy=0.8, min_coverage_cases=5)
    assert result.threshold == 0.5 and result.coverage == 5 / 8 and result.accuracy_confident == 0.8
    assert result.accuracy_all == 0.5 and result.cases == 8


def test_abstaining_buys_accuracy():
    result = choose_threshold(SCORED, target_accuracy=0.9, min_coverage_cases=3)
    assert result.threshold == 0.7 and result.accuracy_confident == 1.0 > result.accuracy_all


def test_an_unreachable_target_takes_the_most_accurate_threshold_it_can_support():
    result = choose_threshold([(0.9, False), (0.8, True), (0.7, False), (0.6, True)], target_accuracy=0.99,
                              min_coverage_cases=2)
    assert result.accuracy_confident == 0.5  # every threshold with at least two cases is at 50 %
    with pytest.raises(ValueError):
        choose_threshold([])

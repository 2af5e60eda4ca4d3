"""Statistics behind the clinical evaluation report: bootstrap CIs, paired comparisons, inter-rater agreement,
safe CSV cells and the geometry of a server-side SVG bar chart.

Pure Python + numpy/scipy/krippendorff: no Django, so it can be tested and reused anywhere.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import krippendorff
import numpy as np
from scipy import stats

SCORE_DOMAIN = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class Estimate:
    mean: float | None  # None when n == 0
    low: float | None  # 95 % CI bounds; equal to mean when n == 1; None when n == 0
    high: float | None
    n: int


@dataclass(frozen=True)
class WinTieLoss:
    wins: int  # items where b > a
    ties: int
    losses: int  # items where b < a


@dataclass(frozen=True)
class Agreement:
    alpha: float | None  # None when it cannot be computed
    items: int  # items with at least two ratings: the ones alpha rests on


def mean_ci(values: Sequence[float], *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> Estimate:
    """Mean with a percentile-bootstrap confidence interval (no normality assumption for 1-5 scores)."""
    x = np.asarray(values, dtype=float)
    n = int(x.size)
    if n == 0:
        return Estimate(None, None, None, 0)
    mean = float(x.mean())
    # One value or identical values: the bootstrap distribution is a point, and scipy warns / returns nan for it.
    if n == 1 or np.ptp(x) == 0:
        return Estimate(mean, mean, mean, n)
    result = stats.bootstrap(
        (x,),
        np.mean,
        n_resamples=resamples,
        confidence_level=confidence,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    ci = result.confidence_interval
    return Estimate(mean, float(ci.low), float(ci.high), n)


def _paired(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    if len(a) != len(b):
        raise ValueError(f"Paired scores need the same number of items on both sides (got {len(a)} and {len(b)}).")
    return np.asarray(a, dtype=float), np.asarray(b, dtype=float)


def paired_difference(a: Sequence[float], b: Sequence[float], **kwargs: Any) -> Estimate:
    """Mean of b - a per item, with the bootstrap CI of that mean (pairing removes between-item variance)."""
    xa, xb = _paired(a, b)
    return mean_ci(xb - xa, **kwargs)


def win_tie_loss(a: Sequence[float], b: Sequence[float]) -> WinTieLoss:
    """How often b beats, ties or loses to a on the same item."""
    xa, xb = _paired(a, b)
    return WinTieLoss(wins=int((xb > xa).sum()), ties=int((xb == xa).sum()), losses=int((xb < xa).sum()))


def ordinal_alpha(ratings: Mapping[Hashable, Mapping[Hashable, float]]) -> Agreement:
    """Krippendorff's alpha (ordinal) over ratings[item][rater] = score, missing ratings allowed."""
    items = list(ratings)
    raters = list(dict.fromkeys(rater for item in items for rater in ratings[item]))  # first-seen order, no sorting needed
    matrix = np.full((len(raters), len(items)), np.nan)
    row = {rater: i for i, rater in enumerate(raters)}
    for j, item in enumerate(items):
        for rater, score in ratings[item].items():
            if score is not None:
                matrix[row[rater], j] = float(score)
    if np.isin(matrix[~np.isnan(matrix)], SCORE_DOMAIN, invert=True).any():
        raise ValueError(f"Scores must be whole numbers in {SCORE_DOMAIN[0]}..{SCORE_DOMAIN[-1]}.")
    pairable = matrix[:, (~np.isnan(matrix)).sum(axis=0) >= 2]
    count = int(pairable.shape[1])
    # Fewer than two pairable items, or a single value among them: alpha is 0/0 (the package raises or returns nan).
    if count < 2 or np.unique(pairable[~np.isnan(pairable)]).size < 2:
        return Agreement(None, count)
    # value_domain only validates the scores and fixes the scale's order; unused categories carry no weight.
    alpha = float(krippendorff.alpha(reliability_data=matrix, level_of_measurement="ordinal", value_domain=list(SCORE_DOMAIN)))
    return Agreement(None if math.isnan(alpha) else alpha, count)


_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> str:
    """Text for one CSV cell, neutralised against formula injection (OWASP "CSV Injection")."""
    if value is None:
        return ""
    # Real numbers are data, not formulas: a negative mean must stay a number in the spreadsheet.
    if isinstance(value, (numbers.Real, Decimal)):
        return str(value)
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_PREFIXES) else text


def bar_chart(
    series: Sequence[tuple[str, Sequence[Estimate | None]]],
    *,
    groups: Sequence[str],
    lo: float = 1,
    hi: float = 5,
    width: int = 640,
    height: int = 240,
    tick_step: int = 1,
) -> dict:
    """Geometry for a grouped SVG bar chart with CI whiskers; the template only draws what this returns."""
    for label, estimates in series:
        if len(estimates) != len(groups):
            raise ValueError(f"Series {label!r} has {len(estimates)} estimates for {len(groups)} groups.")
    plot = {"left": 40.0, "right": float(width - 10), "top": 10.0, "bottom": float(height - 30)}  # room for axis labels

    def y(value: float) -> float:
        value = min(max(value, lo), hi)  # a CI of a mean of 1-5 scores stays in range, but clamp to keep the SVG sane
        return round(plot["bottom"] - (value - lo) / (hi - lo) * (plot["bottom"] - plot["top"]), 1)

    band = (plot["right"] - plot["left"]) / max(len(groups), 1)
    bar_w = band * 0.8 / max(len(series), 1)  # 10 % padding on either side of each group
    bars = []
    for s, (label, estimates) in enumerate(series):
        for g, (group, est) in enumerate(zip(groups, estimates, strict=True)):
            if est is None or est.n == 0 or est.mean is None:
                continue
            x = plot["left"] + g * band + band * 0.1 + s * bar_w
            top = y(est.mean)
            whisker = None
            if est.low is not None and est.high is not None and est.high > est.low:
                whisker = {"x": round(x + bar_w / 2, 1), "y1": y(est.high), "y2": y(est.low)}
            bars.append(
                {
                    "x": round(x, 1),
                    "y": top,
                    "w": round(bar_w, 1),
                    "h": round(plot["bottom"] - top, 1),
                    "series": s,
                    "label": label,
                    "group": group,
                    "mean": f"{est.mean:.2f}",
                    "whisker": whisker,
                }
            )
    return {
        "width": width,
        "height": height,
        "plot": plot,
        "ticks": [{"y": y(v), "label": str(v)} for v in range(math.ceil(lo), math.floor(hi) + 1, tick_step)],
        "groups": [{"x": round(plot["left"] + (g + 0.5) * band, 1), "label": group} for g, group in enumerate(groups)],
        "bars": bars,
        "legend": [{"label": label, "series": s} for s, (label, _) in enumerate(series)],
    }

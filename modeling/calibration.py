"""Abstention: the probability of the ranking's first label below which a version's headline reads "uncertain",
chosen on labelled validation cases so that the answers it still asserts reach a target accuracy. No Django."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Calibration:
    threshold: float  # assert the top label only when its probability is at least this
    target_accuracy: float
    coverage: float  # share of validation cases still asserted at the threshold
    accuracy_confident: float | None  # accuracy of those
    accuracy_all: float  # accuracy of every case, asserted or not
    cases: int
    curve: list[dict] = field(default_factory=list)  # [{threshold, coverage, accuracy}], for the version's page

    def to_dict(self) -> dict:
        return asdict(self)


def coverage_curve(scored: list[tuple[float, bool]], thresholds: list[float] | None = None) -> list[dict]:
    """For each threshold, the share of cases asserted (top probability at least the threshold) and their accuracy."""
    thresholds = thresholds if thresholds is not None else sorted({round(p, 4) for p, _ok in scored} | {0.0})
    curve = []
    for threshold in thresholds:
        kept = [ok for p, ok in scored if p >= threshold]
        curve.append({"threshold": threshold, "coverage": len(kept) / len(scored) if scored else 0.0,
                      "accuracy": (sum(kept) / len(kept)) if kept else None})
    return curve


def choose_threshold(scored: list[tuple[float, bool]], *, target_accuracy: float = 0.9, min_coverage_cases: int = 5
                     ) -> Calibration:
    """The lowest threshold at which the asserted answers reach `target_accuracy` (on at least `min_coverage_cases`
    cases); if none does, the one with the best accuracy. ``scored``: (top probability, top label was right)."""
    if not scored:
        raise ValueError("Calibration needs labelled cases.")
    curve = coverage_curve(scored)
    accuracy_all = sum(ok for _p, ok in scored) / len(scored)
    eligible = [point for point in curve
                if point["accuracy"] is not None and point["coverage"] * len(scored) >= min_coverage_cases]
    meeting = [point for point in eligible if point["accuracy"] >= target_accuracy]
    if meeting:
        best = min(meeting, key=lambda point: point["threshold"])
    elif eligible:
        best = max(eligible, key=lambda point: (point["accuracy"], point["coverage"]))
    else:
        best = curve[0]
    return Calibration(
        threshold=best["threshold"], target_accuracy=target_accuracy, coverage=best["coverage"],
        accuracy_confident=best["accuracy"], accuracy_all=accuracy_all, cases=len(scored),
        curve=_thin(curve),
    )


def _thin(curve: list[dict], points: int = 21) -> list[dict]:
    """At most `points` points of the curve, evenly spread, first and last kept."""
    if len(curve) <= points:
        return curve
    step = (len(curve) - 1) / (points - 1)
    return [curve[round(i * step)] for i in range(points)]

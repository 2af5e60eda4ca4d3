"""Automatic evaluation of diagnoses against a labelled case set: the numbers an evaluation run stores. No Django.

A case's prediction is what the product shows a doctor: the diagnosis written in the structured answer and the
differential ranked over the version's label set. Labels are compared as concepts (``answer_quality.concept``: case,
width, whitespace and punctuation folded, the knowledge base's synonyms and ICD-10 codes in both languages mapped to
one condition), so "Acute MI", "急性心肌梗死" and "I21.9" are one answer, and a case set's own codes can be added.

- accuracy, weighted and macro F1 (scikit-learn) of the written diagnosis;
- GTPA@k (DDXPlus's name): the gold diagnosis is among the first k labels of the ranked differential;
- DDF1: F1 between the predicted differential (the ranked labels of probability ≥ ``DDF1_MIN_PROBABILITY``, at
  least the first) and the gold differential's names, where the case has one;
- medical-term precision: of the lexicon's terms in the answer, the share that are also in the gold answer;
- each with a 95 % percentile-bootstrap interval over cases, overall and by language and department;
- paired comparisons of two systems on the same cases: McNemar's exact test for accuracy and a paired bootstrap of
  the per-case difference for the rest.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats
from sklearn.metrics import f1_score

from evaluation.statistics import mean_ci, paired_difference
from modeling.answer_quality import concept as kb_concept
from modeling.knowledge import load_conditions, mentions

TOP_K = (1, 3, 5)
DDF1_MIN_PROBABILITY = 0.05
# Per-case quantities that a paired bootstrap compares between two runs (accuracy goes through McNemar).
PAIRED = ("gtpa@1", "gtpa@3", "gtpa@5", "ddf1", "term_precision")
UNKNOWN_GROUP = "-"


@dataclass
class CasePrediction:
    """One case: the gold answer and what a system predicted for it."""

    case_id: str
    language: str
    gold: str
    diagnosis: str = ""  # the written (or, for the baseline, the classifier's) diagnosis
    ranked: list[tuple[str, float]] = field(default_factory=list)  # (label, probability), most likely first
    gold_differential: list[str] = field(default_factory=list)
    answer_text: str = ""  # the whole answer, for medical-term precision
    gold_text: str = ""  # the gold answer's text (diagnosis, differential, treatment), for the same
    department: str = ""

    def to_dict(self) -> dict:
        return {**asdict(self), "ranked": [[label, round(p, 6)] for label, p in self.ranked]}

    @classmethod
    def from_dict(cls, values: Mapping) -> CasePrediction:
        known = {name: values[name] for name in cls.__dataclass_fields__ if name in values}
        known["ranked"] = [(str(label), float(p)) for label, p in known.get("ranked", [])]
        return cls(**known)


class Normaliser:
    """Label → concept: the knowledge base's, plus aliases a case set brings (e.g. DDXPlus's ICD-10 per pathology)."""

    def __init__(self, aliases: Mapping[str, str] | None = None):
        self._aliases = {kb_concept(alias): kb_concept(label) for alias, label in (aliases or {}).items()}

    def __call__(self, label: str) -> str:
        key = kb_concept(label or "")
        return self._aliases.get(key, key)


def department_of(label: str, normalise: Callable[[str], str]) -> str:
    """The knowledge base's department for a diagnosis it knows, else UNKNOWN_GROUP."""
    return _departments().get(normalise(label), UNKNOWN_GROUP)


@functools.cache
def _departments() -> dict[str, str]:
    return {condition.id: condition.department for condition in load_conditions()}


# ---------------------------------------------------------------------------------------------------- per case


def correct(case: CasePrediction, normalise: Callable[[str], str]) -> bool:
    return bool(case.diagnosis.strip()) and normalise(case.diagnosis) == normalise(case.gold)


def top_k_hit(case: CasePrediction, k: int, normalise: Callable[[str], str]) -> bool:
    gold = normalise(case.gold)
    return any(normalise(label) == gold for label, _ in case.ranked[:k])


def predicted_differential(case: CasePrediction) -> list[str]:
    kept = [label for label, probability in case.ranked if probability >= DDF1_MIN_PROBABILITY]
    return kept or [label for label, _ in case.ranked[:1]]


def ddf1(case: CasePrediction, normalise: Callable[[str], str]) -> float | None:
    """F1 between the predicted and the gold differential as sets of concepts; None without a gold differential."""
    if not case.gold_differential:
        return None
    gold = {normalise(name) for name in case.gold_differential}
    predicted = {normalise(name) for name in predicted_differential(case)}
    both = len(gold & predicted)
    if not both:
        return 0.0
    precision, recall = both / len(predicted), both / len(gold)
    return 2 * precision * recall / (precision + recall)


def term_precision(case: CasePrediction, lexicon: Sequence[str]) -> float | None:
    """Share of the lexicon's terms in the answer that the gold answer has too; None when the answer has none."""
    if not case.answer_text or not case.gold_text:
        return None
    found = [term for term in lexicon if mentions(case.answer_text, term)]
    # A term inside a longer term found ("pain" in "chest pain") is not counted again.
    found = [term for term in found if not any(term != other and term.casefold() in other.casefold() for other in found)]
    if not found:
        return None
    return sum(mentions(case.gold_text, term) for term in found) / len(found)


def per_case(case: CasePrediction, normalise: Callable[[str], str], lexicon: Sequence[str]) -> dict[str, float | None]:
    """Every per-case quantity: 1/0 for hits, a fraction for the F1 and the precision, None where undefined."""
    values: dict[str, float | None] = {"accuracy": float(correct(case, normalise))}
    for k in TOP_K:
        values[f"gtpa@{k}"] = float(top_k_hit(case, k, normalise)) if case.ranked else None
    values["ddf1"] = ddf1(case, normalise) if case.ranked else None
    values["term_precision"] = term_precision(case, lexicon)
    return values


# ---------------------------------------------------------------------------------------------------- a report


def _interval(values: Iterable[float | None], seed: int) -> dict | None:
    kept = [v for v in values if v is not None]
    if not kept:
        return None
    estimate = mean_ci(kept, seed=seed, resamples=1000)
    return {"value": estimate.mean, "low": estimate.low, "high": estimate.high, "n": estimate.n}


def summarise(cases: Sequence[CasePrediction], *, normalise: Callable[[str], str] | None = None,
              lexicon: Sequence[str] | None = None, seed: int = 0) -> dict:
    """The metric table of one system on a case set: overall, by language and by department."""
    normalise = normalise or Normaliser()
    lexicon = _lexicon() if lexicon is None else lexicon
    rows = [per_case(case, normalise, lexicon) for case in cases]
    report = {"n": len(cases), "overall": _block(cases, rows, normalise, seed)}
    for key, group_of in (("by_language", lambda c: c.language or UNKNOWN_GROUP),
                          ("by_department", lambda c: c.department or department_of(c.gold, normalise))):
        groups: dict[str, list[int]] = {}
        for index, case in enumerate(cases):
            groups.setdefault(group_of(case), []).append(index)
        report[key] = {
            name: _block([cases[i] for i in indices], [rows[i] for i in indices], normalise, seed)
            for name, indices in sorted(groups.items())
        }
    return report


def _block(cases: Sequence[CasePrediction], rows: Sequence[dict], normalise: Callable[[str], str], seed: int) -> dict:
    block: dict = {"n": len(cases)}
    for name in ("accuracy", *(f"gtpa@{k}" for k in TOP_K), "ddf1", "term_precision"):
        block[name] = _interval((row[name] for row in rows), seed)
    golds = [normalise(case.gold) for case in cases]
    predicted = [normalise(case.diagnosis) if case.diagnosis.strip() else "" for case in cases]
    if cases:
        labels = sorted(set(golds))  # F1 over the gold classes: a wrong label never seen in gold adds no class
        block["f1_weighted"] = float(f1_score(golds, predicted, labels=labels, average="weighted", zero_division=0))
        block["f1_macro"] = float(f1_score(golds, predicted, labels=labels, average="macro", zero_division=0))
    return block


def frequent_errors(cases: Sequence[CasePrediction], *, normalise: Callable[[str], str] | None = None,
                    limit: int = 10) -> list[dict]:
    """The most frequent (gold → predicted) confusions, as the report's confusion view lists them."""
    normalise = normalise or Normaliser()
    pairs = Counter(
        (case.gold, case.diagnosis.strip() or "∅") for case in cases if not correct(case, normalise)
    )
    return [{"gold": gold, "predicted": predicted, "count": count} for (gold, predicted), count in pairs.most_common(limit)]


def _lexicon() -> list[str]:
    from modeling.knowledge import medical_terms

    return medical_terms()


# ---------------------------------------------------------------------------------------------------- two systems


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> dict:
    """McNemar's exact test on paired right/wrong: b01 = only A right, b10 = only B right, two-sided p."""
    if len(a) != len(b):
        raise ValueError("paired results need the same cases on both sides")
    only_a = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    only_b = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    discordant = only_a + only_b
    p_value = 1.0 if not discordant else float(stats.binomtest(only_a, discordant, 0.5).pvalue)
    return {"only_a": only_a, "only_b": only_b, "p_value": p_value, "n": len(a)}


def compare(a: Sequence[CasePrediction], b: Sequence[CasePrediction], *, normalise: Callable[[str], str] | None = None,
            lexicon: Sequence[str] | None = None, seed: int = 0) -> dict:
    """B against A on the cases both predicted (matched by case id): McNemar for accuracy, paired bootstrap for the rest;
    each with both sides' means on those same cases ("a", "b")."""
    normalise = normalise or Normaliser()
    lexicon = _lexicon() if lexicon is None else lexicon
    b_by_id = {case.case_id: case for case in b}
    pairs = [(case, b_by_id[case.case_id]) for case in a if case.case_id in b_by_id]
    result: dict = {"n": len(pairs)}
    rows_a = [per_case(x, normalise, lexicon) for x, _ in pairs]
    rows_b = [per_case(y, normalise, lexicon) for _, y in pairs]
    mean_a = float(np.mean([r["accuracy"] for r in rows_a])) if pairs else None
    mean_b = float(np.mean([r["accuracy"] for r in rows_b])) if pairs else None
    result["accuracy"] = {
        "a": mean_a, "b": mean_b, "difference": mean_b - mean_a if pairs else None,
        **mcnemar([bool(r["accuracy"]) for r in rows_a], [bool(r["accuracy"]) for r in rows_b]),
    }
    for name in PAIRED:
        both = [(x[name], y[name]) for x, y in zip(rows_a, rows_b, strict=True) if x[name] is not None and y[name] is not None]
        if not both:
            result[name] = None
            continue
        estimate = paired_difference([x for x, _ in both], [y for _, y in both], seed=seed, resamples=1000)
        result[name] = {"a": float(np.mean([x for x, _ in both])), "b": float(np.mean([y for _, y in both])),
                        "difference": estimate.mean, "low": estimate.low, "high": estimate.high, "n": estimate.n}
    for name in ("accuracy", *PAIRED):
        if result.get(name) and result[name].get("difference") is not None:
            result[name]["difference"] = float(result[name]["difference"])
    return result

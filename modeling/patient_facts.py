"""Sex and age read from a case's text, in Chinese or English ("男，23岁", "Age: 54, Sex: M", "a 3 yo girl"), and the
knowledge base's hard limits on which diagnoses fit them. No Django."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from modeling.answer_quality import concept
from modeling.knowledge import load_conditions


@dataclass(frozen=True)
class PatientFacts:
    sex: str | None = None  # "F", "M" or None when the text does not say
    age: float | None = None  # years; a 5-month-old is 0.42


_NUM = r"(\d{1,3}(?:\.\d)?)"
_ZH_SEX = re.compile(r"(?:性别[:：]?\s*)?(?<![男女])([男女])(?:性|孩|童|婴|患儿|，|,|\s|\d|$|。|、|;|；)")
# (pattern, unit). A bare "3个月" / "3 months" is a duration ("咳嗽3个月"), so months and weeks count as an age only
# with 龄/大/old, after an age label, or after the child ("宝宝6个月了").
_ZH_AGE = [
    (re.compile(rf"{_NUM}\s*岁\s*(?:(\d{{1,2}})\s*个?月)?"), "years"),
    (re.compile(rf"{_NUM}\s*个?月(?:龄|大)"), "months"),
    (re.compile(rf"(?:年龄[:：]\s*|(?:宝宝|孩子|患儿|婴儿|小孩)[^，。,\d]{{0,3}}){_NUM}\s*个?月"), "months"),
    (re.compile(rf"{_NUM}\s*(?:周|天)(?:龄|大)"), "weeks_or_days"),
    (re.compile(rf"年龄[:：]\s*{_NUM}(?!\s*(?:\.\d)?\s*(?:个?月|周|天))"), "years"),
]
_EN_SEX_LABEL = re.compile(r"\b(?:sex|gender)\s*[:=]?\s*(female|male|f|m)\b", re.IGNORECASE)
# Words for the patient, nouns before pronouns ("the mother says her son…" is about a boy); "mother" and "father" are
# left out: in a child's note they are who is speaking.
_EN_SEX_NOUN = re.compile(r"\b(woman|women|female|girl|lady|daughter|man|men|male|boy|gentleman|son)\b", re.IGNORECASE)
_EN_SEX_PRONOUN = re.compile(r"\b(she|her|he|his|him)\b", re.IGNORECASE)
_FEMALE_WORDS = {"woman", "women", "female", "girl", "lady", "daughter", "she", "her"}
_ZH_CHILD_SEX = re.compile(r"(儿子|男孩|男宝|女儿|女孩|女宝)")
_EN_AGE = [
    (re.compile(rf"\bage[d]?\s*[:=]?\s*{_NUM}\s*(?:months?|mos?)\b", re.IGNORECASE), "months"),
    (re.compile(rf"\bage[d]?\s*[:=]?\s*{_NUM}\s*(?:weeks?|wks?)\b", re.IGNORECASE), "weeks"),
    (re.compile(rf"\bage[d]?\s*[:=]?\s*{_NUM}\b(?!\s*(?:months?|mos?|weeks?|wks?)\b)", re.IGNORECASE), "years"),
    (re.compile(rf"\b{_NUM}[\s-]*(?:years?|yrs?|yo|y/o|y\.o\.)(?:[\s-]*old)?\b", re.IGNORECASE), "years"),
    (re.compile(rf"\b{_NUM}[\s-]*(?:months?|mos?)(?:[\s-]*old)\b", re.IGNORECASE), "months"),
    (re.compile(rf"\b{_NUM}[\s-]*(?:weeks?|wks?)(?:[\s-]*old)\b", re.IGNORECASE), "weeks"),
]


def extract_facts(text: str) -> PatientFacts:
    """The patient's sex and age as the note states them, or None for what it does not say."""
    text = text or ""
    return PatientFacts(sex=_sex(text), age=_age(text))


def _sex(text: str) -> str | None:
    if label := _EN_SEX_LABEL.search(text):
        return "F" if label[1].lower().startswith("f") else "M"
    if zh := _ZH_SEX.search(text):
        return "F" if zh[1] == "女" else "M"
    if child := _ZH_CHILD_SEX.search(text):
        return "F" if child[1].startswith("女") else "M"
    opening = text[:400]  # the opening describes the patient
    for pattern in (_EN_SEX_NOUN, _EN_SEX_PRONOUN):
        if word := pattern.search(opening):
            return "F" if word[1].lower() in _FEMALE_WORDS else "M"
    return None


def _age(text: str) -> float | None:
    candidates = []
    for pattern, unit in [*_ZH_AGE, *_EN_AGE]:
        if match := pattern.search(text):
            value = float(match[1])
            if unit == "months":
                value /= 12
            elif unit == "weeks":
                value /= 52
            elif unit == "weeks_or_days":
                value /= 52 if "周" in match[0] else 365
            elif unit == "years" and match.lastindex and match.lastindex >= 2 and match[2]:
                value += float(match[2]) / 12
            if text[max(0, match.start() - 6):match.start()].lower().endswith(("under ", "below ")):
                value = max(0.0, value - 0.5)  # "under 1 year old": between birth and one
            candidates.append((match.start(1), value))
    if not candidates:
        return None
    _start, age = min(candidates)  # the first age the note gives is the patient's
    return round(age, 2) if age <= 120 else None


# ---------------------------------------------------------------------------------------------------- plausibility


def implausible(label: str, facts: PatientFacts, language: str) -> str | None:
    """Why a diagnosis cannot fit this patient (the knowledge base's hard limits), or None when it can or we cannot
    tell. Only what the note states counts: an unknown sex or age excludes nothing."""
    limits = _limits().get(concept(label))
    if limits is None:
        return None
    if limits.sex and facts.sex and facts.sex != limits.sex:
        return limits.reason[language]
    if facts.age is not None and not (limits.min_age <= facts.age <= limits.max_age):
        return limits.reason[language]
    return None


@functools.cache
def _limits() -> dict:
    return {condition.id: condition.plausible for condition in load_conditions() if condition.plausible}

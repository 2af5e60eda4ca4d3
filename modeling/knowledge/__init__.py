"""The bilingual disease knowledge base (``conditions.json``): conditions, their findings, treatment and course.

Each entry also carries ``duration`` = ``[min, max, unit]``, the typical time from onset to presentation
(unit: minute, hour, day, week, month or year), which the synthetic case generator needs for realistic complaints.
A symptom may end in a qualifier after its first comma ('胸痛，深吸气时加重' / 'chest pain, worse on breathing in'):
a chief complaint quotes only the part before it.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PATH = Path(__file__).with_name("conditions.json")
LANGUAGES = ("zh", "en")
SEXES = ("any", "F", "M")
DURATION_UNITS = ("minute", "hour", "day", "week", "month", "year")
FINDING_KINDS = ("symptoms", "signs", "tests", "history")


@dataclass(frozen=True)
class Finding:
    zh: str
    en: str
    weight: float

    def text(self, language: str) -> str:
        return getattr(self, language)

    def head(self, language: str) -> str:
        """The finding without its qualifier: '胸痛，深吸气时加重' -> '胸痛'; 'chest pain, worse on breathing' -> 'chest pain'."""
        if "，" not in self.zh:
            return self.text(language)
        return self.text(language).split("，" if language == "zh" else ", ", 1)[0]


@dataclass(frozen=True)
class Plausibility:
    """Hard limits of who can have a condition (by definition, not by how often): outside them it is excluded."""

    sex: str | None  # "F" or "M", or None for either
    min_age: float
    max_age: float
    reason: dict[str, str]  # why, in both languages, as the case page shows it


@dataclass(frozen=True)
class Condition:
    id: str
    icd10: str
    department: str
    name: dict[str, str]
    synonyms: dict[str, list[str]]
    age_range: tuple[int, int]
    sex: str
    duration: tuple[int, int, str]
    symptoms: tuple[Finding, ...]
    signs: tuple[Finding, ...]
    tests: tuple[Finding, ...]
    history: tuple[Finding, ...]
    treatment: dict[str, str]
    course: dict[str, str]
    differential: tuple[str, ...]
    plausible: Plausibility | None = None

    def display_name(self, language: str) -> str:
        return self.name[language]

    def names(self, language: str) -> tuple[str, ...]:
        """The display name and synonyms: every way a text could give the diagnosis away."""
        return (self.name[language], *self.synonyms[language])

    def findings(self) -> tuple[Finding, ...]:
        return self.symptoms + self.signs + self.tests + self.history


def mentions(text: str, term: str) -> bool:
    """Whether ``text`` names ``term``: a substring for Chinese; a whole word (plural allowed), any case, for Latin script."""
    if not term.isascii():
        return term in text
    return re.search(rf"(?<![a-z]){re.escape(term)}(?:s|es)?(?![a-z])", text, re.IGNORECASE) is not None


def load_conditions(path: Path | str | None = None) -> tuple[Condition, ...]:
    """The knowledge base, validated; a ValueError names the first broken entry."""
    return _load(Path(path or DEFAULT_PATH).resolve())


def condition_names(language: str) -> list[str]:
    """The conditions' display names in one language, sorted: what a rater picks a corrected diagnosis from."""
    return sorted({condition.display_name(language) for condition in load_conditions()})


def medical_terms(language: str | None = None) -> list[str]:
    """A lexicon of condition names, synonyms and finding phrases (with and without qualifier), deduplicated, longest first."""
    return list(_terms(language))


@functools.cache
def _load(path: Path) -> tuple[Condition, ...]:
    entries = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(entries, list):
        raise ValueError(f"{path.name}: expected a list of conditions")
    conditions = []
    for index, entry in enumerate(entries):
        label = entry.get("id") if isinstance(entry, dict) and entry.get("id") else f"#{index}"
        try:
            conditions.append(_parse(entry))
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            detail = f"missing field {error}" if isinstance(error, KeyError) else str(error)
            raise ValueError(f"{path.name}: entry {label!r}: {detail}") from None

    ids = [condition.id for condition in conditions]
    for condition in conditions:
        problem = None
        if ids.count(condition.id) > 1:
            problem = "duplicate id"
        elif condition.id in condition.differential:
            problem = "lists itself as a differential"
        elif unknown := [other for other in condition.differential if other not in ids]:
            problem = f"unknown differential {', '.join(unknown)}"
        if problem:
            raise ValueError(f"{path.name}: entry {condition.id!r}: {problem}")
    return tuple(conditions)


def _parse(entry: dict) -> Condition:
    if not isinstance(entry.get("id"), str) or not entry["id"]:
        raise ValueError("id must be a non-empty string")
    low, high = entry["age_range"]
    if not (isinstance(low, int) and isinstance(high, int) and 0 <= low <= high <= 120):
        raise ValueError(f"age_range {entry['age_range']} is not 0 <= low <= high <= 120")
    if entry["sex"] not in SEXES:
        raise ValueError(f"sex must be one of {SEXES}")
    shortest, longest, unit = entry["duration"]
    if not (isinstance(shortest, int) and isinstance(longest, int) and 0 < shortest <= longest and unit in DURATION_UNITS):
        raise ValueError(f"duration {entry['duration']} is not [min, max, unit]")
    findings = {kind: tuple(_finding(kind, item) for item in entry[kind]) for kind in FINDING_KINDS}
    if not findings["symptoms"]:
        raise ValueError("needs at least one symptom")
    for symptom in findings["symptoms"]:
        if "，" in symptom.zh and ", " not in symptom.en:
            raise ValueError(f"symptom {symptom.en!r} needs a ', ' where {symptom.zh!r} has its qualifier")
    condition = Condition(
        id=entry["id"],
        icd10=entry["icd10"],
        department=entry["department"],
        name=_bilingual("name", entry["name"]),
        synonyms=_synonyms(entry["synonyms"]),
        age_range=(low, high),
        sex=entry["sex"],
        duration=(shortest, longest, unit),
        treatment=_bilingual("treatment", entry["treatment"]),
        course=_bilingual("course", entry["course"]),
        differential=tuple(entry["differential"]),
        plausible=_plausibility(entry.get("plausible")),
        **findings,
    )
    # A finding that names its own diagnosis would leak the label into every generated case.
    for finding in condition.findings():
        for language in LANGUAGES:
            leaked = [term for term in condition.names(language) if mentions(finding.text(language), term)]
            if leaked:
                raise ValueError(f"finding {finding.text(language)!r} names the diagnosis ({leaked[0]})")
    return condition


def _plausibility(value: dict | None) -> Plausibility | None:
    if value is None:
        return None
    sex, low, high = value.get("sex"), value.get("min_age", 0), value.get("max_age", 120)
    if sex not in (None, "F", "M"):
        raise ValueError("plausible.sex must be F or M")
    if not (isinstance(low, int | float) and isinstance(high, int | float) and 0 <= low <= high <= 120):
        raise ValueError(f"plausible ages {low}..{high} are not 0 <= min <= max <= 120")
    return Plausibility(sex=sex, min_age=low, max_age=high, reason=_bilingual("plausible.reason", value.get("reason", {})))


def _bilingual(field: str, value: dict) -> dict[str, str]:
    missing = [language for language in LANGUAGES if not isinstance(value.get(language), str) or not value[language].strip()]
    if missing:
        raise ValueError(f"{field} lacks {', '.join(missing)}")
    return {language: value[language] for language in LANGUAGES}


def _synonyms(value: dict) -> dict[str, list[str]]:
    synonyms = {language: value[language] for language in LANGUAGES}
    if not all(isinstance(terms, list) and all(isinstance(term, str) and term for term in terms) for terms in synonyms.values()):
        raise ValueError("synonyms must be lists of non-empty strings")
    return synonyms


def _finding(kind: str, item: dict) -> Finding:
    texts = _bilingual(kind, item)
    weight = item.get("weight")
    if not isinstance(weight, (int, float)) or not 0 < weight <= 1:
        raise ValueError(f"{kind} {texts['en']!r} has weight {weight!r}, outside (0, 1]")
    return Finding(zh=texts["zh"], en=texts["en"], weight=float(weight))


@functools.cache
def _terms(language: str | None) -> tuple[str, ...]:
    languages = LANGUAGES if language is None else (language,)
    terms = {
        term
        for condition in load_conditions()
        for lang in languages
        for term in (
            *condition.names(lang),
            *(finding.text(lang) for finding in condition.findings()),
            *(finding.head(lang) for finding in condition.findings()),
        )
    }
    return tuple(sorted(terms, key=lambda term: (-len(term), term)))

"""Whether the findings a rationale cites are in the note: each finding of the knowledge base's lexicon named in the
rationale is looked up in the note, affirmed ("supported"), negated there ("contradicted": "无发热", "denies chest
pain") or not there at all ("unsupported"). No Django."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from modeling.knowledge import load_conditions
from modeling.negation import CLAUSE, negated

SUPPORTED, CONTRADICTED, UNSUPPORTED = "supported", "contradicted", "unsupported"


@dataclass(frozen=True)
class Claim:
    finding: str
    status: str  # supported | contradicted | unsupported


@functools.cache
def _findings(language: str) -> tuple[str, ...]:
    """Finding phrases and their heads ('胸痛，深吸气时加重' and '胸痛'), longest first; not diagnoses' names: a
    rationale may name the diagnosis it argues for without the note doing so."""
    terms = {
        text
        for condition in load_conditions()
        for finding in condition.findings()
        for text in (finding.text(language), finding.head(language))
        if len(text) >= (2 if language == "zh" else 4)
    }
    return tuple(sorted(terms, key=lambda term: (-len(term), term)))


@functools.cache  # some 800 terms a language: more than re's own cache holds
def _pattern(term: str, language: str) -> re.Pattern:
    if language == "zh":
        return re.compile(re.escape(term))
    return re.compile(rf"(?<![a-z]){re.escape(term)}(?:s|es)?(?![a-z])", re.IGNORECASE)


def cited_findings(rationale: str, language: str) -> list[str]:
    """The lexicon's findings the rationale names, longest match first, each once, in order of appearance."""
    taken: list[tuple[int, int]] = []
    found: list[tuple[int, str]] = []
    for term in _findings(language):
        for match in _pattern(term, language).finditer(rationale or ""):
            if any(match.start() < end and start < match.end() for start, end in taken):
                continue
            taken.append((match.start(), match.end()))
            found.append((match.start(), term))
    seen, ordered = set(), []
    for _start, term in sorted(found):
        if term not in seen:
            seen.add(term)
            ordered.append(term)
    return ordered


def check_rationale(rationale: str, note: str, language: str) -> list[Claim]:
    """Each finding the rationale cites, with what the note says of it."""
    return [Claim(finding=term, status=_status(term, note, language)) for term in cited_findings(rationale, language)]


def _status(term: str, note: str, language: str) -> str:
    pattern = _pattern(term, language)
    seen_negated = False
    for clause in CLAUSE.finditer(note or ""):
        body = clause.group(0)
        for match in pattern.finditer(body):
            if negated(body[: match.start()], body[match.end():]):
                seen_negated = True
            else:
                return SUPPORTED
    return CONTRADICTED if seen_negated else UNSUPPORTED

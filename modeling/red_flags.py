"""Red-flag findings read from a note by rules, whatever a model says: ST elevation with chest pain, peritonism,
meningism, SpO2 below 90 %, focal deficits, GI bleeding. Each comes with the words of the note that show it; a negated
finding ("no rebound tenderness", "否认胸痛", "反跳痛（-）") does not count. No Django; the rules live in
knowledge/red_flags.json."""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

from modeling.negation import CLAUSE, negated

RULES_PATH = Path(__file__).with_name("knowledge") / "red_flags.json"

@dataclass(frozen=True)
class RedFlag:
    id: str
    name: str  # what it means, in the note's language
    quotes: tuple[str, ...]  # the note's own words, one per finding the rule needed


@functools.cache
def _rules() -> list[dict]:
    rules = json.loads(RULES_PATH.read_text(encoding="utf-8"))
    for rule in rules:
        rule["compiled"] = [
            {language: [re.compile(pattern, re.IGNORECASE) for pattern in group[language]] for language in ("zh", "en")}
            for group in rule["all_of"]
        ]
    return rules


def find_red_flags(text: str, language: str) -> list[RedFlag]:
    """The red flags this note shows, each with the clause that shows every finding it needs."""
    text = text or ""
    found = []
    for rule in _rules():
        quotes = []
        for group in rule["compiled"]:
            # Both scripts are searched: a Chinese note writes "SpO2 85%" and "ST段抬高" alike.
            quote = _affirmed(text, group["zh"] + group["en"], rule.get("below"))
            if quote is None:
                break
            quotes.append(quote)
        else:
            found.append(RedFlag(id=rule["id"], name=rule["name"]["zh" if language == "zh" else "en"],
                                 quotes=tuple(dict.fromkeys(quotes))))
    return found


def _affirmed(text: str, patterns: list[re.Pattern], below: float | None) -> str | None:
    for clause in CLAUSE.finditer(text):
        body = clause.group(0)
        for pattern in patterns:
            for match in pattern.finditer(body):
                if below is not None and float(match.group("value")) >= below:
                    continue
                if negated(body[: match.start()], body[match.end():]):
                    continue
                return body.strip()[:160]
    return None


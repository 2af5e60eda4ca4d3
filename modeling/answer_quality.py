"""What the product checks around any model's answer: sections that are not usable text, and a headline diagnosis
that disagrees with the model's own ranking. No Django: the runtime's callers and the benchmarks use it alike."""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

from modeling.knowledge import load_conditions

OK, EMPTY, DEGENERATE = "ok", "empty", "degenerate"

# Chinese: a unit of 3–12 characters said twice at once ("动作缓慢动作缓慢"), or of 2 said three times ("多巴多巴多巴"),
# is a loop; a 2-character unit said twice is ordinary speech ("呼噜呼噜", "考虑考虑"). English needs three ("dry dry
# dry"), since "very very" happens.
_LOOP_ZH = re.compile(r"([\u4e00-\u9fff]{3,12})\1|([\u4e00-\u9fff]{2})\2\2")
_LOOP_ANY = re.compile(r"(\w.{2,39}?)(?:\s*\1){2,}", re.DOTALL)
_WORD = re.compile(r"[A-Za-z]+")
_CJK = re.compile(r"[\u4e00-\u9fff]")
# Below this share of distinct 3-grams a text of this many tokens mostly repeats itself.
_MIN_TOKENS, _MIN_DISTINCT_SHARE = 12, 0.5
# A lower-case "word" of three or more letters without a vowel, or with five consonants in a row, is not English
# ("qwxz", "tkkt"); capitals are abbreviations (HSV, CT) and are left alone. Only judged on texts of _MIN_WORDS words.
_NON_WORD = re.compile(r"^[^aeiouy]{3,}$|[bcdfghjklmnpqrstvwxz]{5,}")
_MIN_WORDS, _MAX_NON_WORD_SHARE = 6, 0.3
# Scripts spliced mid-phrase: Chinese in an English answer ("Immediate intra及时注射"), or a lower-case Latin fragment
# glued to Chinese in a Chinese one ("给予rate抑制剂"); capitals ("CT检查", "ACEI类") and eponyms ("Graves病") are normal.
_SPLICE_ZH = re.compile(r"(?<![A-Za-z])[a-z]{3,}[\u4e00-\u9fff]|[\u4e00-\u9fff][a-z]{3,}(?![A-Za-z])")

def section_flag(text: str, language: str) -> str:
    """"ok", "empty" (nothing there) or "degenerate" (a loop, or mostly non-words) for one section of an answer."""
    text = (text or "").strip()
    if not text or not any(ch.isalnum() for ch in text):
        return EMPTY
    if _LOOP_ANY.search(text) or (language == "zh" and _LOOP_ZH.search(text)):
        return DEGENERATE
    if (language != "zh" and _CJK.search(text)) or (language == "zh" and _SPLICE_ZH.search(text)):
        return DEGENERATE
    tokens = _CJK.findall(text) if language == "zh" else [w.lower() for w in _WORD.findall(text)]
    if len(tokens) >= _MIN_TOKENS:
        grams = list(zip(tokens, tokens[1:], tokens[2:], strict=False))
        if len(set(grams)) < _MIN_DISTINCT_SHARE * len(grams):
            return DEGENERATE
    if language != "zh":
        words = _WORD.findall(text)
        lower = [word for word in words if word.islower() and len(word) >= 3]
        if len(words) >= _MIN_WORDS and sum(1 for word in lower if _NON_WORD.search(word)) > _MAX_NON_WORD_SHARE * len(words):
            return DEGENERATE
    return OK


def section_flags(sections: dict[str, str], language: str) -> dict[str, str]:
    return {name: section_flag(text, language) for name, text in sections.items()}


# ---------------------------------------------------------------------------------------------------- the headline


def normalise(text: str) -> str:
    """Case, width, whitespace and punctuation folded: '  Acute  MI. ' and 'acute mi' are the same label."""
    text = unicodedata.normalize("NFKC", text or "").casefold()
    text = "".join(" " if unicodedata.category(ch).startswith(("P", "S")) else ch for ch in text)
    return " ".join(text.split())


@functools.cache
def _condition_of() -> dict[str, str]:
    """Every name, synonym (both languages) and ICD-10 code of the knowledge base → its condition id."""
    index: dict[str, str] = {}
    for condition in load_conditions():
        for language in ("zh", "en"):
            for name in condition.names(language):
                index.setdefault(normalise(name), condition.id)
        index.setdefault(normalise(condition.icd10), condition.id)
    return index


def concept(label: str) -> str:
    """What a diagnosis names: the knowledge base's condition id when it knows the name, else the folded text."""
    key = normalise(label)
    return _condition_of().get(key, key)


@dataclass(frozen=True)
class Headline:
    """The diagnosis an analysis leads with, and whether the model's text and its ranking agree on it."""

    text: str  # what the page shows as the diagnosis
    top_label: str  # the ranking's first label ("" without a label set)
    agrees: bool  # False: the page says the text and the ranking disagree, and the analysis is marked for review
    from_ranking: bool  # the text section was not usable, so the headline is the ranking's first label


def headline(diagnosis: str, diagnosis_flag: str, ranked: list[dict]) -> Headline:
    """One headline: the model's written diagnosis, checked against the first label of its ranked differential.

    Without a ranking there is nothing to disagree with. When the written diagnosis is unusable (empty, a loop), the
    ranking's first label leads and says so. Otherwise both are kept and a disagreement is reported, never hidden:
    the written text may be right and the ranking wrong, and a doctor should see both."""
    top = ranked[0]["name"] if ranked else ""
    if diagnosis_flag != OK:
        return Headline(text=top, top_label=top, agrees=True, from_ranking=bool(top))
    if not top:
        return Headline(text=diagnosis, top_label="", agrees=True, from_ranking=False)
    return Headline(text=diagnosis, top_label=top, agrees=concept(diagnosis) == concept(top), from_ranking=False)

"""Whether a finding is negated where a note mentions it ("无发热", "否认胸痛、胸闷", "反跳痛（-）", "no fever",
"denies chest pain", "guarding: negative"). One rule for red flags and for grounding. No Django."""

from __future__ import annotations

import re

# A clause: what lies between these marks. A finding and its negation are read within one clause; a decimal point
# ("88.5%") ends no clause.
CLAUSE = re.compile(r"(?:[^。；;\n.!?！？]|\.(?!\s|\Z))+")
# Chinese: a cue at most four characters before the finding ("无明显反跳痛"), or before a list that holds it ("否认胸痛、
# 胸闷"), or a negative result right after it ("反跳痛（-）", "颈强直阴性", "反跳痛：无"). "无明显诱因出现胸痛" is no
# negation of the pain: the cue is too far from it.
_ZH_CUE_BEFORE = re.compile(
    r"(?:无|否认|未见|未及|未闻及|没有|不伴|未出现)[^，,、]{0,4}\Z"
    r"|(?:无|否认|未见|没有|不伴)[^，,]{0,4}、[^，,]{0,4}\Z"
)
_ZH_NEGATIVE_AFTER = re.compile(r"\A\s*(?:[（(]\s*[-－—]\s*[）)]|阴性|[:：]\s*(?:无|阴性|[-－]))")
# English: a cue within five words before the finding in the same clause, or a negative result right after it.
_EN_CUE_BEFORE = re.compile(
    r"\b(?:no|not|without|denies|denied|negative for|absence of|absent|free of|nor)\b(?:\W+\w+){0,5}\W*\Z", re.IGNORECASE)
_EN_NEGATIVE_AFTER = re.compile(r"\A\s*(?:[:=]\s*)?(?:\(\s*-\s*\)|negative\b|absent\b|not present\b|none\b)", re.IGNORECASE)


def negated(before: str, after: str) -> bool:
    """Whether a mention is negated, given its clause's text before and after it."""
    return bool(
        _ZH_CUE_BEFORE.search(before) or _ZH_NEGATIVE_AFTER.search(after)
        or _EN_CUE_BEFORE.search(before) or _EN_NEGATIVE_AFTER.search(after)
    )

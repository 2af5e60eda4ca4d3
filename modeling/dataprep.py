"""Data preparation for training, on lists of ``modeling.records.Record``: cleaning, augmentation and splits. No Django.

``clean_medical_text`` replaces MIMIC-style ``[** ... **]`` de-identification markers with typed placeholders, expands
clinical abbreviations (b.i.d., p.o., s/p, SOB, ...), applies Unicode NFKC without breaking what NFKC would break
(×10⁹/L, ℃, ①, and Chinese full-width punctuation) and tidies whitespace while keeping line breaks. Unlike the seed's
cleaner it keeps Chinese punctuation and units (mg, mmHg, mmol/L, ℃, %, ×10^9/L).

``augment_records`` makes training variants by medical synonym replacement and section-header rephrasing; it changes
the case text only, never a label, and ``load_training_data`` applies it to the training side only.

``split_records`` assigns every record to train / val / test by a keyed hash of its group (patient, else case id), so
the assignment does not depend on file order and all cases of one patient share a split.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import random
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from modeling.knowledge import medical_terms
from modeling.prompts import LANGUAGES, build_training_example, detect_language
from modeling.records import Record, read_records

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")

# ---------------------------------------------------------------------------------------------------- shared

_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_LATIN_START = re.compile(r"[A-Za-z0-9]")


def _language(language: str | None, text: str) -> str:
    if not language:
        return detect_language(text or "")
    code = str(language).strip().lower().replace("_", "-").split("-")[0]
    if code not in LANGUAGES:
        raise ValueError(f"Unsupported language {language!r}: use one of {', '.join(LANGUAGES)}.")
    return code


def _first_chars(terms: Iterable[str]) -> str:
    chars = {char for term in terms for char in (term[0], term[0].lower(), term[0].upper())}
    return "".join(sorted(re.escape(char) for char in chars))


def _alternation(terms: dict[str, str], boundary: str) -> str:
    """One regex for many terms ({term: its pattern}), longest first, fast on long texts.

    Terms that begin with a Latin letter or digit never start inside a longer word (``boundary`` is the lookbehind);
    Chinese has no word boundaries. Every alternative is guarded by a first-character class, so that most positions
    of a text are rejected at once instead of by each alternative in turn.
    """
    parts = []
    for latin in (True, False):
        chosen = [term for term in terms if bool(_LATIN_START.match(term[0])) == latin]
        if chosen:
            ordered = sorted(chosen, key=lambda term: (-len(term), term))
            guard = (boundary if latin else "") + f"(?=[{_first_chars(chosen)}])"
            parts.append(guard + "(?:" + "|".join(terms[term] for term in ordered) + ")")
    return "|".join(parts)


def _term_pattern(term: str, *, any_case: bool) -> str:
    """``term``, not ending inside a longer Latin word or number (the start is guarded by ``_alternation``)."""
    body = re.escape(term)
    if any_case:
        body = f"(?i:{body})"
    if _LATIN_START.match(term[-1]):
        body += r"(?![A-Za-z0-9])"
    return body


# ---------------------------------------------------------------------------------------------------- MIMIC markers

_MIMIC_MARKER = re.compile(r"\[\*\*(.{0,200}?)\*\*\]")
_MIMIC_DATE_VALUE = re.compile(
    r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}-\d{1,2}(?:-\d{2,4})?|\d{1,2}/\d{1,2}(?:/\d{2,4})?|\d{1,2}/\d{4}|\d{4}"
)
# First match wins: "Hospital Ward Name" is a place, not a name; "Pager number" a phone, not an ID.
_MIMIC_KINDS = (
    ("AGE", re.compile(r"\bage\b")),
    ("EMAIL", re.compile(r"e-?mail")),
    ("PHONE", re.compile(r"telephone|phone|fax|pager")),
    ("MRN", re.compile(r"medical record|\bmrn\b")),
    (
        "ADDRESS",
        re.compile(r"hospital|location|address|street|\bstate\b|country|\bzip|ward|po box|apartment|university|college|company"),
    ),
    ("NAME", re.compile(r"name|initial")),
    ("DATE", re.compile(r"date|year|month|\bday|holiday")),
    ("ID", re.compile(r"number|\bid\b|identifier|serial|social security|ssn|licen[cs]e|account|\bunit\b|\bjob\b|clip")),
)
_ADJACENT_NAMES = re.compile(r"\[NAME\](?:[ \t]+\[NAME\])+")


def _mimic_kind(inner: str) -> str:
    """The placeholder kind for the inside of a ``[** ... **]`` marker; the kinds are those of cases/deid.py."""
    content = inner.strip()
    if not content:
        return "REDACTED"
    if _MIMIC_DATE_VALUE.fullmatch(content):
        return "DATE"
    label = content.lower()
    for kind, pattern in _MIMIC_KINDS:
        if pattern.search(label):
            return kind
    return "REDACTED"


def replace_mimic_markers(text: str) -> str:
    """``[**Known lastname 4**]`` -> ``[NAME]``, ``[**2101-10-20**]`` -> ``[DATE]``; a first and last name make one [NAME]."""
    text = _MIMIC_MARKER.sub(lambda match: f"[{_mimic_kind(match[1])}]", text)
    return _ADJACENT_NAMES.sub("[NAME]", text)


# ---------------------------------------------------------------------------------------------------- abbreviations

# (forms, Chinese-only forms, English expansion, Chinese expansion or None).
# How a form matches, always as a whole token: with dots ("b.i.d.") in any case, the last dot optional; all in lower
# case ("qd", "c/o") in any case; with capitals ("BID", "SOB") exactly, so that the words "bid" and "sob" stay.
# Chinese-only forms match exactly and only in Chinese text, where Latin words are drug-order shorthand
# ("po", "iv", "st"), while in English "IV" is also stage IV.
# fmt: off
_ABBREVIATION_TABLE: tuple[tuple[tuple[str, ...], tuple[str, ...], str, str | None], ...] = (
    (("b.i.d.", "b.d.", "BID"), ("bid",), "twice daily", "每日两次"),
    (("t.i.d.", "t.d.s.", "tid"), (), "three times daily", "每日三次"),
    (("q.i.d.", "q.d.s.", "qid"), (), "four times daily", "每日四次"),
    (("q.d.", "qd"), (), "once daily", "每日一次"),
    (("q.o.d.", "qod"), (), "every other day", "隔日一次"),
    (("q.h.", "qh"), (), "every hour", "每小时一次"),
    (("q.h.s.", "qhs"), (), "every night at bedtime", "每晚睡前"),
    (("q.n.", "qn"), (), "every night", "每晚一次"),
    (("q.a.m.", "qam"), (), "every morning", "每日早晨"),
    (("q.p.m.", "qpm"), (), "every evening", "每日傍晚"),
    (("h.s.",), (), "at bedtime", "睡前"),
    (("p.r.n.", "prn"), (), "as needed", "必要时"),
    (("p.o.", "PO"), ("po",), "by mouth", "口服"),
    (("i.v.",), ("iv",), "intravenously", "静脉注射"),
    (("ivgtt", "i.v.gtt."), (), "by intravenous drip", "静脉滴注"),
    (("i.m.",), ("im",), "intramuscularly", "肌内注射"),
    (("s.c.", "s.q.", "subq"), ("ih", "i.h."), "subcutaneously", "皮下注射"),
    (("s.l.",), (), "sublingually", "舌下含服"),
    (("stat",), ("st",), "immediately", "立即"),
    (("a.c.",), (), "before meals", "饭前"),
    (("p.c.",), (), "after meals", "饭后"),
    (("n.p.o.", "npo"), (), "nothing by mouth", "禁食"),
    (("c/o",), (), "complains of", None),
    (("s/p",), (), "status post", None),
    (("h/o",), (), "history of", None),
    (("w/o",), (), "without", None),
    (("w/",), (), "with", None),
    (("r/o",), (), "rule out", None),
    (("f/u",), (), "follow-up", None),
    (("b/l",), (), "bilateral", None),
    (("y/o", "y.o."), (), "year-old", None),
    (("n/v/d",), (), "nausea, vomiting and diarrhea", "恶心、呕吐、腹泻"),
    (("n/v",), (), "nausea and vomiting", "恶心呕吐"),
    (("SOB",), (), "shortness of breath", "气短"),
    (("DOE",), (), "dyspnea on exertion", "劳力性呼吸困难"),
    (("htn",), (), "hypertension", "高血压"),
    (("nkda",), (), "no known drug allergies", "无已知药物过敏"),
    (("pmh",), (), "past medical history", "既往史"),
    (("hpi",), (), "history of present illness", "现病史"),
    (("hx",), (), "history", None),
    (("sx",), (), "symptoms", None),
)
# fmt: on
ABBREVIATIONS: dict[str, str] = {form: english for forms, _, english, _ in _ABBREVIATION_TABLE for form in forms}
"""Every written form (see the matching rules above) and its English expansion."""
ABBREVIATIONS_ZH: dict[str, str] = {
    form: chinese for forms, zh_forms, _, chinese in _ABBREVIATION_TABLE if chinese for form in (*forms, *zh_forms)
}
"""Forms expanded in Chinese text, and their Chinese expansions; the others expand in English there too."""
_ZH_ONLY_FORMS = {form for _, zh_forms, _, _ in _ABBREVIATION_TABLE for form in zh_forms}

# q4h, q 6h, q.8h., q4-6h, q12hrs -> every N hours
# (a dot after it is left alone: it may end the sentence)
_EVERY_N_HOURS = re.compile(r"(?<![A-Za-z0-9./])(?i:q\.?[ ]?(\d{1,2}(?:[-–]\d{1,2})?)[ ]?(?:hours?|hrs?|h))(?![A-Za-z0-9])")
_SENTENCE_ENDS = re.compile(r"[ \t]*$|[ \t]+[A-Z][a-z]", re.MULTILINE)
# (not after the dot of another dotted abbreviation: "P.O. BID")
_SENTENCE_STARTS = re.compile(r"(?:^|(?<!\.[A-Za-z])[.!?][ \t]+)[ \t]*\Z", re.MULTILINE)


def _lookup_key(form: str) -> str:
    return form if _exact(form) else form.lower().rstrip(".")


def _exact(form: str) -> bool:
    return "." not in form and form != form.lower()


def _form_pattern(form: str, *, zh_only: bool = False) -> str:
    if zh_only or _exact(form):
        body = re.escape(form)
    elif "." in form:
        body = "(?i:" + re.escape(form.rstrip(".")) + r"\.?)"
    else:
        body = f"(?i:{re.escape(form)})"
    # A dotted form does not end inside another dotted token ("q.d" is not the start of "q.d.s.").
    return body + (r"(?!\.?[A-Za-z0-9])" if form[-1] != "/" else "")


def _abbreviation_regex(forms: Iterable[str], zh_only: set[str]) -> re.Pattern:
    # Longest first: "w/o" before "w/", "q.h.s." before "q.h.", "n/v/d" before "n/v".
    patterns = {form: _form_pattern(form, zh_only=form in zh_only) for form in set(forms)}
    return re.compile(_alternation(patterns, r"(?<![A-Za-z0-9./])"))


_EN_ABBREVIATIONS = {_lookup_key(form): expansion for form, expansion in ABBREVIATIONS.items()}
_ZH_ABBREVIATIONS = {
    **_EN_ABBREVIATIONS,
    **{form if form in _ZH_ONLY_FORMS else _lookup_key(form): text for form, text in ABBREVIATIONS_ZH.items()},
}
_EN_ABBREVIATION_RE = _abbreviation_regex(ABBREVIATIONS, set())
_ZH_ABBREVIATION_RE = _abbreviation_regex([*ABBREVIATIONS, *_ZH_ONLY_FORMS], _ZH_ONLY_FORMS)


def expand_abbreviations(text: str, language: str | None = None) -> str:
    """Clinical abbreviations written out: "1 tab p.o. b.i.d." -> "1 tab by mouth twice daily".

    Whole tokens only ("po" inside "report" and "stat" inside "status" stay). In Chinese text the drug-order
    shorthand becomes Chinese ("阿司匹林 100mg p.o. q.d." -> "阿司匹林 100mg 口服 每日一次"), the rest English.
    """
    if not text:
        return ""
    zh = _language(language, text) == "zh"
    table, pattern = (_ZH_ABBREVIATIONS, _ZH_ABBREVIATION_RE) if zh else (_EN_ABBREVIATIONS, _EN_ABBREVIATION_RE)

    def expand(match: re.Match) -> str:
        written = match[0]
        expansion = table.get(written) or table[written.lower().rstrip(".")]
        if not zh:
            # "SOB since Monday" and "PMH: ..." begin a sentence; "... p.o. q.d. Review in a week" ends one.
            if written[0].isupper() and _SENTENCE_STARTS.search(text, max(0, match.start() - 40), match.start()):
                expansion = expansion[0].upper() + expansion[1:]
            if written.endswith(".") and _SENTENCE_ENDS.match(text, match.end()):
                expansion += "."
        return expansion

    text = _substitute(pattern, expand, text)
    return _substitute(_EVERY_N_HOURS, lambda match: f"每{match[1]}小时一次" if zh else f"every {match[1]} hours", text)


def _substitute(pattern: re.Pattern, replacement, text: str) -> str:
    """``pattern.sub``, keeping a space between an expansion and a Latin letter or digit right after it ("w/fever")."""
    parts, cursor = [], 0
    for match in pattern.finditer(text):
        new = replacement(match)
        following = text[match.end() : match.end() + 1]
        if new and _LATIN_START.match(new[-1]) and _LATIN_START.match(following or " "):
            new += " "
        parts += [text[cursor : match.start()], new]
        cursor = match.end()
    parts.append(text[cursor:])
    return "".join(parts)


# ---------------------------------------------------------------------------------------------------- Unicode

_SUPERSCRIPT_DIGITS = "⁰¹²³⁴⁵⁶⁷⁸⁹"
_FROM_SUPERSCRIPT = str.maketrans(_SUPERSCRIPT_DIGITS + "⁺⁻", "0123456789+-")
# Kept in Chinese text, which NFKC would turn into ASCII; 。、【】《》“” are not touched by NFKC anyway.
_ZH_KEEP = "，：；（）？！～…℃"
_PROTECTED = re.compile(
    rf"(?P<power>(?<=\d)[⁺⁻]?[{_SUPERSCRIPT_DIGITS}]+)"  # 10⁹ -> 10^9, not 109
    rf"|(?P<unit_power>(?<=[A-Za-zµμ])[⁺⁻][{_SUPERSCRIPT_DIGITS}]+)"  # L⁻¹ -> L^-1
    rf"|(?P<keep>(?<=[A-Za-zµμ])[²³](?![{_SUPERSCRIPT_DIGITS}])|[\u2460-\u2473])"  # m², cm³ and ①..⑳ as they are
    r"|(?P<degree>˚|º(?=[ ]?[CF](?![A-Za-z])))"  # ring above and ordinal o used as a degree sign
    rf"|(?P<zh>[{_ZH_KEEP}])"
)
_INVISIBLE = re.compile(r"[\u200b-\u200d\u2060\ufeff\x00-\x08\x0b-\x1f\x7f-\x9f]")


def normalize_unicode(text: str, language: str | None = None) -> str:
    """NFKC (full-width letters and digits to ASCII, ㎎ to mg, ligatures undone) without breaking units or numbering.

    ×10⁹/L becomes ×10^9/L (NFKC alone makes it ×109/L); m² and ① stay; in Chinese text full-width punctuation and
    ℃ stay (in English ℃ becomes °C).
    """
    text = _INVISIBLE.sub("", text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n"))
    zh = _language(language, text) == "zh"
    parts, cursor = [], 0
    for match in _PROTECTED.finditer(text):
        kind = match.lastgroup
        if kind == "zh" and not zh:
            continue
        parts.append(unicodedata.normalize("NFKC", text[cursor : match.start()]))
        value = match[0]
        if kind in ("power", "unit_power"):
            value = "^" + value.translate(_FROM_SUPERSCRIPT)
        elif kind == "degree":
            value = "°"
        parts.append(value)
        cursor = match.end()
    parts.append(unicodedata.normalize("NFKC", text[cursor:]))
    return "".join(parts).replace("\u2044", "/")  # ½ -> 1⁄2 -> 1/2


# Where an ASCII mark sits in Chinese: next to an ideograph or to Chinese punctuation.
_CJK_CONTEXT = f"{_HAN}\u3000-\u303f\uff01-\uff65…℃"
_TO_FULL_WIDTH = {",": "，", ":": "：", ";": "；", "?": "？", "!": "！", "(": "（", ")": "）"}
# "!!!" and "?!" go over as a whole.
_ASCII_MARK = re.compile(rf"(?<=[{_CJK_CONTEXT}])(?:[?!]+|[,:;])|(?:[?!]+|[,:;])(?=[{_CJK_CONTEXT}])")
_ASCII_FULL_STOP = re.compile(rf"(?<=[{_CJK_CONTEXT}])\.(?=\s|$|[{_CJK_CONTEXT}])", re.MULTILINE)
_SPACE_AROUND_MARK = re.compile(r"[ \t]*([，。：；？！、])[ \t]*")


def _full_width_punctuation(text: str) -> str:
    """ASCII punctuation in Chinese text back to full width: "发热,咳嗽(3天)." -> "发热，咳嗽（3天）。"."""
    chars = list(text)
    # Brackets go in pairs: both full width when the pair stands in Chinese (before it, after it, or inside it).
    stack: list[int] = []
    for index, char in enumerate(text):
        if char == "(":
            stack.append(index)
        elif char == ")" and stack:
            start = stack.pop()
            inside, around = text[start + 1 : index], text[start - 1 : start] + text[index + 1 : index + 2]
            if re.search(f"[{_HAN}]", inside) or re.search(f"[{_CJK_CONTEXT}]", around):
                chars[start], chars[index] = "（", "）"
    text = _ASCII_MARK.sub(lambda match: "".join(_TO_FULL_WIDTH[char] for char in match[0]), "".join(chars))
    text = _ASCII_FULL_STOP.sub("。", text)
    return _SPACE_AROUND_MARK.sub(r"\1", text)


# ---------------------------------------------------------------------------------------------------- cleaning

_BLANK = re.compile(r"[^\S\n]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def normalize_whitespace(text: str) -> str:
    """Runs of spaces and tabs become one space, lines are trimmed, at most one blank line; line breaks stay."""
    text = _BLANK.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()


def clean_medical_text(text: str, language: str | None = None) -> str:
    """A case text ready for training: MIMIC markers typed, abbreviations expanded, NFKC, Chinese punctuation, whitespace.

    ``language`` is "zh" or "en", detected when None. Cleaning twice changes nothing more.
    """
    if text is None:
        return ""
    text = str(text)
    language = _language(language, text)
    text = replace_mimic_markers(normalize_unicode(text, language))
    text = expand_abbreviations(text, language)
    if language == "zh":
        text = _full_width_punctuation(text)
    return normalize_whitespace(text)


def clean_label(text: str, language: str | None = None) -> str:
    """A diagnosis (or differential item) written the same way everywhere: NFKC and single spaces, nothing expanded."""
    if not text:
        return ""
    return " ".join(normalize_unicode(str(text), _language(language, str(text))).split())


# ---------------------------------------------------------------------------------------------------- augmentation

# Canonical term -> the other ways a note writes it. Chinese groups may hold the Latin acronyms Chinese notes use.
# Chinese has no word boundaries, so short forms that occur inside everyday words are left out (上感 is in 身上感觉).
# fmt: off
SYNONYMS: dict[str, tuple[str, ...]] = {
    # Chinese
    "心肌梗死": ("心梗", "心肌梗塞"),
    "高血压": ("血压高", "高血压病"),
    "糖尿病": ("DM",),
    "慢性阻塞性肺疾病": ("慢阻肺", "COPD"),
    "冠状动脉粥样硬化性心脏病": ("冠心病",),
    "脑梗死": ("脑梗", "脑梗塞"),
    "心力衰竭": ("心衰",),
    "心房颤动": ("房颤",),
    "尿路感染": ("泌尿系感染",),
    "慢性肾脏病": ("慢性肾病", "CKD"),
    "肺结核": ("肺痨",),
    "肺栓塞": ("肺动脉栓塞", "肺血栓栓塞症"),
    "支气管哮喘": ("哮喘",),
    "胃食管反流病": ("胃食管反流",),
    "高脂血症": ("高血脂",),
    "过敏性鼻炎": ("变应性鼻炎",),
    "幽门螺杆菌": ("幽门螺旋杆菌", "Hp"),
    "心电图": ("ECG",),
    "发热": ("发烧",),
    "腹泻": ("拉肚子",),
    "流涕": ("流鼻涕",),
    "鼻塞": ("鼻子不通气",),
    "头痛": ("头疼",),
    "腹痛": ("肚子痛", "肚子疼"),
    "腹胀": ("肚子胀",),
    "上腹痛": ("胃痛", "胃疼"),
    "咳痰": ("咯痰",),
    "咽痛": ("嗓子疼", "喉咙痛"),
    "鼻出血": ("流鼻血",),
    "呼吸困难": ("气促",),
    # English
    "myocardial infarction": ("heart attack", "MI"),
    "hypertension": ("high blood pressure", "HTN"),
    "diabetes mellitus": ("DM",),
    "chronic obstructive pulmonary disease": ("COPD",),
    "shortness of breath": ("dyspnea", "dyspnoea", "breathlessness"),
    "coronary artery disease": ("coronary heart disease", "CAD"),
    "cerebrovascular accident": ("stroke", "CVA"),
    "upper respiratory tract infection": ("upper respiratory infection", "URTI"),
    "urinary tract infection": ("UTI",),
    "gastroesophageal reflux disease": ("gastro-oesophageal reflux disease", "GERD"),
    "congestive heart failure": ("CHF",),
    "heart failure": ("cardiac failure",),
    "atrial fibrillation": ("AF", "AFib"),
    "pulmonary embolism": ("pulmonary embolus",),
    "deep vein thrombosis": ("deep venous thrombosis", "DVT"),
    "chronic kidney disease": ("CKD",),
    "tuberculosis": ("TB",),
    "electrocardiogram": ("ECG", "EKG"),
    "blood pressure": ("BP",),
    "fever": ("pyrexia",),
    "vomiting": ("emesis",),
    "runny nose": ("rhinorrhea", "rhinorrhoea"),
    "nosebleed": ("epistaxis",),
    "coughing up blood": ("hemoptysis", "haemoptysis"),
    "difficulty swallowing": ("dysphagia",),
    "itching": ("pruritus", "itchiness"),
    "fatigue": ("tiredness",),
    "heartburn": ("pyrosis",),
    "anemia": ("anaemia",),
    "edema": ("oedema",),
    "diarrhea": ("diarrhoea",),
    "hyperlipidemia": ("hyperlipidaemia",),
}
# Section headers (at a line start, before a colon) and other ways to write them.
PHRASINGS: tuple[tuple[str, ...], ...] = (
    ("主诉", "患者主要症状为", "主要症状"),
    ("现病史", "现病情况", "本次发病经过"),
    ("既往史", "既往病史", "过去史"),
    ("个人史", "个人生活史"),
    ("家族史", "家族病史"),
    ("过敏史", "药物过敏史"),
    ("体格检查", "查体"),
    ("辅助检查", "检查结果"),
    ("患儿家属自述", "患儿家长自述", "家长代诉"),
    ("补充问诊（医生追问所得）", "医生追问所得", "追问病史"),
    ("Chief complaint", "Presenting complaint", "Main complaint"),
    ("History of present illness", "Present illness"),
    ("Past medical history", "Medical history"),
    ("History and risk factors", "Background and risk factors"),
    ("Other symptoms", "Additional symptoms", "Associated symptoms"),
    ("History", "Clinical history"),
    ("Exam", "Examination", "On examination"),
    ("Physical examination", "Physical exam"),
    ("Findings", "Results"),
    ("Investigations", "Test results"),
    ("Labs", "Laboratory results"),
    ("Medications", "Current medications"),
    ("Allergies", "Drug allergies"),
    ("Family history", "Family medical history"),
    ("Social history", "Social background"),
)
# Longer terms that contain a synonym but must stay whole; the knowledge-base lexicon adds its own (急性心肌梗死, 2型糖尿病).
_KEEP_WHOLE = (
    "hay fever", "scarlet fever", "rheumatic fever", "yellow fever", "dengue fever", "typhoid fever", "glandular fever",
    "Q fever", "diabetes insipidus", "heat stroke", "stroke volume", "blood pressure cuff", "chronic fatigue syndrome",
    "cyclic vomiting syndrome", "pulmonary hypertension", "portal hypertension", "intracranial hypertension",
    "ocular hypertension", "paroxysmal nocturnal dyspnea",
    "妊娠高血压", "妊娠期高血压", "继发性高血压", "肾性高血压", "肺动脉高血压", "高血压脑病", "高血压危象", "高血压急症",
    "血压高于", "血压高达", "血压高时", "血压高低", "咳嗽变异性哮喘", "心源性哮喘", "妊娠期糖尿病", "糖尿病肾病",
    "糖尿病足", "糖尿病酮症",
)
# fmt: on


class _Swapper:
    """Finds the spots of one language where a synonym or a header phrasing could go in, longest match first."""

    def __init__(self, groups: list[tuple[str, ...]], headers: list[tuple[str, ...]], keep_whole: Iterable[str]):
        self.groups = {self._key(term): group for group in groups for term in group}
        terms = {term for group in groups for term in group}
        # Only longer terms that contain a synonym matter; a synonym itself is never kept whole.
        keep = {
            long
            for long in keep_whole
            if self._key(long) not in self.groups and any(self._contains(long, short) for short in terms)
        }
        # One alternation, longest first: a longer term kept whole wins over a synonym inside it.
        patterns = {term: _term_pattern(term, any_case=term == term.lower()) for term in terms | keep}
        self.terms = re.compile(_alternation(patterns, r"(?<![A-Za-z0-9])"))
        self.headers = {header.lower(): group for group in headers for header in group}
        ordered = sorted(self.headers, key=lambda header: (-len(header), header))
        self.header_re = re.compile(
            r"^[ \t]*(" + "|".join(f"(?i:{re.escape(header)})" for header in ordered) + r")(?=[ \t]*[:：])", re.MULTILINE
        )

    @staticmethod
    def _key(term: str) -> str:
        # A term in lower case matches in any case; one with capitals (MI, COPD) only as written.
        return term.lower() if term == term.lower() else term

    @staticmethod
    def _contains(long: str, short: str) -> bool:
        return len(long) > len(short) and (short in long.lower() if short == short.lower() else short in long)

    def spots(self, text: str) -> list[tuple[int, int, tuple[str, ...]]]:
        found = [(match.start(1), match.end(1), self.headers[match[1].lower()]) for match in self.header_re.finditer(text)]
        taken = [(start, end) for start, end, _ in found]
        for match in self.terms.finditer(text):
            group = self.groups.get(match[0]) or self.groups.get(match[0].lower())
            if group is None or any(start < match.end() and match.start() < end for start, end in taken):
                continue  # a term kept whole, or part of a header
            found.append((match.start(), match.end(), group))
        return sorted(found)


def _build_swapper(language: str) -> _Swapper:
    chinese = re.compile(f"[{_HAN}]")

    def of_language(term: str) -> bool:
        return bool(chinese.search(term)) == (language == "zh")

    groups = [(canonical, *others) for canonical, others in SYNONYMS.items() if of_language(canonical)]
    headers = [group for group in PHRASINGS if of_language(group[0])]
    # Lexicon terms that contain a synonym ("急性心肌梗死", "高血压病史", "2型糖尿病") stay whole, as do _KEEP_WHOLE.
    keep = [*_KEEP_WHOLE, *medical_terms(language)]
    return _Swapper(groups, headers, keep)


_SWAPPERS: dict[str, _Swapper] = {}


def _swapper(language: str) -> _Swapper:
    if language not in _SWAPPERS:
        _SWAPPERS[language] = _build_swapper(language)
    return _SWAPPERS[language]


def _same_case(replacement: str, written: str, group: tuple[str, ...]) -> str:
    if written in group:
        return replacement  # written as listed: "HTN" -> "high blood pressure"
    if written.isupper() and len(written) > 1 and replacement == replacement.lower():
        return replacement.upper()  # FINDINGS: -> RESULTS:
    if written[:1].isupper() and replacement[:1].islower():
        return replacement[0].upper() + replacement[1:]
    return replacement


_LINE_HEAD = re.compile(r"^([^:：\n]{1,40}[:：]\s*)(.*)$", re.DOTALL)
_SENTENCE_END = re.compile(r"(?<=[.。;；!?！？])\s*")
MIN_FINDINGS_TO_SHUFFLE = 3


def shuffle_findings(text: str, rng: random.Random) -> str:
    """Each line that lists three or more sentences ("Other symptoms: Has a cough. Has a fever. ...") with them in
    another order; a line's head ("Other symptoms: ") stays first. A list of findings means the same in any order."""
    lines = []
    for line in text.split("\n"):
        match = _LINE_HEAD.match(line)
        head, body = (match.group(1), match.group(2)) if match else ("", line)
        sentences = [part for part in _SENTENCE_END.split(body) if part.strip()]
        if len(sentences) >= MIN_FINDINGS_TO_SHUFFLE:
            rng.shuffle(sentences)
            joiner = "" if _language(None, body) == "zh" else " "
            body = joiner.join(sentence.strip() for sentence in sentences)
        lines.append(head + body)
    return "\n".join(lines)


def augment_text(text: str, rng: random.Random, language: str | None = None) -> str:
    """``text`` with its listed findings in another order and some synonyms and section headers swapped for another
    way of writing them (at least one, if any)."""
    language = _language(language, text)
    text = shuffle_findings(text, rng)
    spots = _swapper(language).spots(text)
    if not spots:
        return text
    chosen = [spot for spot in spots if rng.random() < 0.5] or [rng.choice(spots)]
    parts, cursor = [], 0
    for start, end, group in chosen:
        written = text[start:end]
        others = [term for term in group if term.lower() != written.lower()]
        parts += [text[cursor:start], _same_case(rng.choice(others), written, group)]
        cursor = end
    parts.append(text[cursor:])
    return "".join(parts)


def augment_record(record: Record, rng: random.Random, *, number: int = 1) -> Record:
    """A training variant of ``record``: the case text rephrased, every label as it was, in the same group.

    The variant's id is ``<id>#aug<number>``; its patient_id is the original's group, so splits keep them together.
    """
    return dataclasses.replace(
        record,
        text=augment_text(record.text, rng, record.language or None),
        id=f"{record.id}#aug{number}" if record.id else "",
        patient_id=record.group,
        differential=list(record.differential),
    )


def augment_records(records: Iterable[Record], *, copies: int = 1, seed: int = 0) -> list[Record]:
    """The records, then up to ``copies`` variants of each; a variant identical to its original or another is dropped.

    Each variant's randomness comes from (seed, record, copy), so the result does not depend on the records' order.
    """
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 0:
        raise ValueError(f"copies must be a whole number of at least 0, not {copies!r}")
    records = list(records)
    variants = []
    for record in records:
        seen = {record.text}
        key = record.id or hashlib.blake2b(record.text.encode("utf-8"), digest_size=8).hexdigest()
        for number in range(1, copies + 1):
            variant = augment_record(record, random.Random(f"{seed}\x00{key}\x00{number}"), number=number)
            if variant.text not in seen:
                seen.add(variant.text)
                variants.append(variant)
    return [*records, *variants]


# ---------------------------------------------------------------------------------------------------- splits


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a number from 0 up to (not including) 1, not {value!r}")
        if not 0 <= value < 1 or math.isnan(value):
            raise ValueError(f"{name} must be from 0 up to (not including) 1, not {value}")
    if val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction + test_fraction must be below 1, or nothing is left to train on (got {val_fraction} + {test_fraction})"
        )


def _position(group: str, seed: int) -> float:
    """Where a group falls in [0, 1): a keyed hash, so it depends on the seed and the group only."""
    digest = hashlib.blake2b(str(group).encode("utf-8"), key=f"medportal-split:{seed}".encode()[:64], digest_size=8)
    return int.from_bytes(digest.digest(), "big") / 2**64


def split_of(group: str, *, val_fraction: float = 0.1, test_fraction: float = 0.0, seed: int = 0) -> str:
    """The split ("train", "val" or "test") of a patient or case id: always the same for the same id, fractions and seed."""
    _check_fractions(val_fraction, test_fraction)
    position = _position(group, seed)
    if position < test_fraction:
        return "test"
    return "val" if position < test_fraction + val_fraction else "train"


def split_key(record: Record) -> str:
    """What a split keeps together: the patient, else the case id, else (neither known) the cleaned text."""
    return record.group or clean_medical_text(record.text, record.language or None)


def stratified_sample(records: Iterable[Record], size: int, *, seed: int = 0) -> list[Record]:
    """``size`` records drawn so that each diagnosis keeps its share (largest remainder; at least one of a diagnosis
    whose share rounds to none, while room is left), in the records' order. All of them when there are not more."""
    records = list(records)
    if size >= len(records):
        return records
    if size <= 0:
        return []
    groups: dict[str, list[int]] = {}
    for index, record in enumerate(records):
        groups.setdefault(record.diagnosis, []).append(index)
    exact = {label: size * len(indices) / len(records) for label, indices in groups.items()}
    quota = {label: math.floor(share) for label, share in exact.items()}
    # Remaining places: diagnoses with none yet first, then by the largest fractional part (ties by name: deterministic).
    order = sorted(groups, key=lambda label: (quota[label] > 0, -(exact[label] - quota[label]), label))
    for label in order[: size - sum(quota.values())]:
        quota[label] += 1
    rng = random.Random(seed)
    chosen = sorted(index for label, indices in groups.items() for index in rng.sample(indices, quota[label]))
    return [records[index] for index in chosen]


def split_records(
    records: Iterable[Record], *, val_fraction: float = 0.1, test_fraction: float = 0.0, seed: int = 0
) -> dict[str, list[Record]]:
    """{"train": [...], "val": [...], "test": [...]}, each in input order; all records of one group share a split."""
    _check_fractions(val_fraction, test_fraction)
    splits: dict[str, list[Record]] = {name: [] for name in SPLITS}
    for record in records:
        splits[split_of(split_key(record), val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)].append(record)
    return splits


# ---------------------------------------------------------------------------------------------------- records


def prepare_records(records: Iterable[Record], *, clean: bool = True) -> list[Record]:
    """Copies ready for training. Case text, treatment, prognosis and rationale are cleaned (``clean_medical_text``);
    the diagnosis and differential items are labels, so only NFKC and whitespace, and they stay identical to each other.
    """
    prepared = []
    for record in records:
        language = _language(record.language or None, record.text)
        if not clean:
            prepared.append(dataclasses.replace(record, language=language, differential=list(record.differential)))
            continue
        differential = [item for item in (clean_label(name, language) for name in record.differential) if item]
        prepared.append(
            dataclasses.replace(
                record,
                text=clean_medical_text(record.text, language),
                diagnosis=clean_label(record.diagnosis, language),
                language=language,
                treatment=clean_medical_text(record.treatment, language),
                prognosis=clean_medical_text(record.prognosis, language),
                rationale=clean_medical_text(record.rationale, language),
                differential=differential,
            )
        )
    return prepared


def record_pair(record: Record) -> tuple[str, str]:
    """(prompt, target) in the prompt format of modeling.prompts; the labels are in the target only.

    The differential lists the other diagnoses to rule out, as the bootstrapped model learns it: sources such as
    DDXPlus rank the diagnosis itself first in theirs, and it is left out there.
    """
    diagnosis = record.diagnosis.casefold()
    answer = {
        "diagnosis": record.diagnosis,
        "differential": [name for name in record.differential if name.casefold() != diagnosis],
        "treatment": record.treatment,
        "prognosis": record.prognosis,
        "rationale": record.rationale,
    }
    return build_training_example(record.text, answer, record.language or None)


def load_training_data(
    train_file: str | Path,
    val_file: str | Path | None = None,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    augment: bool = False,
    augment_copies: int = 1,
    clean: bool = True,
) -> tuple[list[Record], list[Record]]:
    """(train, val) records, prepared; no patient or case is on both sides, and only the training side is augmented.

    Without ``val_file``, ``train_file`` is split by ``split_records`` (a file of two or more groups always gets at
    least one in each side when val_fraction > 0). With ``val_file``, training records whose group (or, with no ids,
    text) is also in the validation file are dropped from training; the count is logged as a warning.
    Raises FileFormatError / RowError (from modeling.records) for a bad file, ValueError for bad settings or when no
    training records are left.
    """
    train = prepare_records(read_records(train_file), clean=clean)
    if val_file:
        val = prepare_records(read_records(val_file), clean=clean)
        val_groups = {split_key(record) for record in val}
        kept = [record for record in train if split_key(record) not in val_groups]
        if len(kept) < len(train):
            logger.warning(
                "%s: left out %d training record(s) whose patient or case is also in %s",
                Path(train_file).name,
                len(train) - len(kept),
                Path(val_file).name,
            )
        if not kept:
            raise ValueError(f"{Path(train_file).name}: every record's patient or case is also in {Path(val_file).name}")
        train = kept
    else:
        train, val = _split_for_training(train, val_fraction=val_fraction, seed=seed, name=Path(train_file).name)
    if augment:
        if isinstance(augment_copies, bool) or not isinstance(augment_copies, int) or augment_copies < 1:
            raise ValueError(f"augment_copies must be a whole number of at least 1, not {augment_copies!r}")
        train = augment_records(train, copies=augment_copies, seed=seed)
    return train, val


def _split_for_training(records: list[Record], *, val_fraction: float, seed: int, name: str) -> tuple[list, list]:
    splits = split_records(records, val_fraction=val_fraction, seed=seed)
    train, val = splits["train"], splits["val"]
    if val_fraction == 0:
        return train, val
    keys = {split_key(record) for record in records}
    if len(keys) < 2:
        raise ValueError(
            f"{name}: all records belong to one patient or case, so no validation set can be split off; give a val_file"
        )
    # A small file can hash every group to one side; then the group nearest the boundary moves, still deterministically.
    if not val:
        moved = min(keys, key=lambda key: _position(key, seed))
        return [r for r in records if split_key(r) != moved], [r for r in records if split_key(r) == moved]
    if not train:
        moved = max(keys, key=lambda key: _position(key, seed))
        return [r for r in records if split_key(r) == moved], [r for r in records if split_key(r) != moved]
    return train, val

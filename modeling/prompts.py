"""Prompts for the medical causal LM: one bilingual template family, the answer format it learns, and its parser.

The model reads a de-identified case and answers with five fixed sections (诊断 Diagnosis, 鉴别诊断 Differential,
治疗建议 Treatment, 病情预测 Prognosis, 依据 Rationale). ``build_prompt`` ends exactly where the answer begins,
``format_answer`` writes the training target, and ``parse_answer`` reads whatever a model actually wrote (our own
format, an instruction-tuned model's markdown, headers in the other language, a truncated answer).

Every target ends with the line ``### END`` (``END_MARKER``) rather than relying on EOS alone: plain text survives
any tokenizer, works as a ``stop_strings`` entry at generation, and tells a finished answer from one cut off by the
token limit. Training may append EOS after it as well. The disclaimer is never part of a target: code adds it with
``with_disclaimer``, so no model can drop or reword it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

LANGUAGES = ("zh", "en")
SECTIONS = ("diagnosis", "differential", "treatment", "prognosis", "rationale")
SECTION_TITLES = {
    "zh": {
        "diagnosis": "诊断",
        "differential": "鉴别诊断",
        "treatment": "治疗建议",
        "prognosis": "病情预测",
        "rationale": "依据",
    },
    "en": {
        "diagnosis": "Diagnosis",
        "differential": "Differential",
        "treatment": "Treatment",
        "prognosis": "Prognosis",
        "rationale": "Rationale",
    },
}
DISCLAIMER = {
    "zh": "【免责声明】以上内容由人工智能生成，仅供临床医生参考，不构成医疗诊断或治疗决定，"
    "须经具备资质的执业医师核实后方可采用。急危重症请勿依赖本系统，应立即按急诊流程处理。",
    "en": "Disclaimer: This is an AI-generated suggestion for clinicians. It is not a diagnosis or a treatment decision "
    "and must be verified by a qualified physician before any use. Do not rely on it in an emergency; follow your "
    "emergency procedures instead.",
}
END_MARKER = "### END"

# Short, because medportal-tiny has a 512-token context; explicit, because a 7B instruction model follows it cold.
_DELIMITERS = {
    "zh": ("### 指令", "### 病例", "### 回答"),
    "en": ("### Instruction", "### Case", "### Answer"),
}
_INSTRUCTION = {
    "zh": "阅读病例，按"
    + "".join(f"【{title}】" for title in SECTION_TITLES["zh"].values())
    + "的顺序作答，每节另起一行，鉴别诊断逐条编号。",
    "en": "Read the case and answer with the sections "
    + ", ".join(SECTION_TITLES["en"][section] for section in SECTIONS[:-1])
    + f" and {SECTION_TITLES['en']['rationale']}, each on a new line as 'Section: text'; number the differential.",
}


@dataclass
class StructuredAnswer:
    diagnosis: str = ""
    differential: list[str] = field(default_factory=list)
    treatment: str = ""
    prognosis: str = ""
    rationale: str = ""
    raw: str = ""
    complete: bool = False
    language: str = "en"

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------------- language

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z]+")
_A_FEW = 3


def detect_language(text: str) -> str:
    """Return "zh" when the text has more than a few Chinese characters, else "en"."""
    text = text or ""
    ideographs = len(_CJK.findall(text))
    words = len(_LATIN_WORD.findall(text))
    # Chinese notes are full of Latin abbreviations (CT, WBC, mg/L) and an English note may quote a Chinese term,
    # so ideographs are weighed against Latin words rather than counted alone.
    if ideographs and not words:
        return "zh"
    return "zh" if ideographs > _A_FEW and 2 * ideographs >= words else "en"


def _language(language: str | None, text: str) -> str:
    if language is None:
        return detect_language(text)
    code = str(language).strip().lower().replace("_", "-").split("-")[0]  # Django's "zh-hans" is "zh" here
    if code not in LANGUAGES:
        raise ValueError(f"Unsupported language {language!r}: use one of {', '.join(LANGUAGES)}.")
    return code


# ---------------------------------------------------------------------------------------------------- prompt and target


def build_prompt(case_text: str, language: str | None = None) -> str:
    """The instruction and the case, ending where the model's answer (its first section header) begins."""
    case_text = (case_text or "").strip()
    if not case_text:
        raise ValueError("The case text is empty: there is nothing to analyse.")
    language = _language(language, case_text)
    instruction, case, answer = _DELIMITERS[language]
    return f"{instruction}\n{_INSTRUCTION[language]}\n{case}\n{case_text}\n{answer}\n"


def diagnosis_prompt(prompt: str, language: str) -> str:
    """A prompt from ``build_prompt`` continued up to where the diagnosis text begins, for scoring candidates."""
    return prompt + _section_prefix("diagnosis", _language(language, prompt))


def _section_prefix(section: str, language: str) -> str:
    title = SECTION_TITLES[language][section]
    return f"【{title}】" if language == "zh" else f"{title}: "


def format_answer(answer: StructuredAnswer | dict, language: str) -> str:
    """The training target: all five sections in order, one per line, then ``END_MARKER``."""
    language = _language(language, "")
    fields = _answer_fields(answer)
    lines = []
    for section in SECTIONS:
        body = _format_differential(fields["differential"], language) if section == "differential" else fields[section]
        lines.append((_section_prefix(section, language) + body).rstrip())
    return "\n".join([*lines, END_MARKER])


def build_training_example(case_text: str, answer: StructuredAnswer | dict, language: str | None = None) -> tuple[str, str]:
    """(prompt, target); the loss goes on the target only."""
    language = _language(language, case_text)
    return build_prompt(case_text, language), format_answer(answer, language)


def _answer_fields(answer: StructuredAnswer | Mapping) -> dict:
    if isinstance(answer, StructuredAnswer):
        answer = answer.to_dict()
    if not isinstance(answer, Mapping):
        raise TypeError(f"An answer is a StructuredAnswer or a dict, not {type(answer).__name__}.")
    fields = {section: _text(answer.get(section)) for section in SECTIONS}
    # Knowledge-base and synthetic records call the prognosis "course".
    fields["prognosis"] = fields["prognosis"] or _text(answer.get("course"))
    differential = answer.get("differential") or []
    if isinstance(differential, str):
        fields["differential"] = _split_differential(differential)
    else:
        fields["differential"] = [item for item in (_text(entry) for entry in differential) if item]
    return fields


def _text(value: object) -> str:
    return "" if value is None else str(value).strip()


def _format_differential(items: list[str], language: str) -> str:
    separator = " " if language == "zh" else "; "
    return separator.join(f"{number}. {item}" for number, item in enumerate(items, 1))


def with_disclaimer(answer_text: str, language: str) -> str:
    """The answer followed by the disclaimer in ``language``; adding it twice changes nothing."""
    disclaimer = DISCLAIMER[_language(language, answer_text or "")]
    text = (answer_text or "").rstrip()
    text = text.removesuffix(END_MARKER).rstrip()
    if text.endswith(disclaimer):
        return text
    return f"{text}\n\n{disclaimer}" if text else disclaimer


# ---------------------------------------------------------------------------------------------------- parser

# fmt: off
_ALIASES = {
    "diagnosis": (
        "诊断", "初步诊断", "主要诊断", "临床诊断", "最可能诊断",
        "Diagnosis", "Diagnoses", "Most likely diagnosis", "Primary diagnosis", "Working diagnosis", "Provisional diagnosis",
    ),
    "differential": (
        "鉴别诊断", "鉴别", "Differential", "Differentials", "Differential diagnosis", "Differential diagnoses", "DDx",
    ),
    "treatment": (
        "治疗建议", "治疗", "治疗方案", "治疗计划", "处理建议",
        "Treatment", "Treatment plan", "Recommended treatment", "Management",
    ),
    "prognosis": ("病情预测", "预后", "病情预后", "预后评估", "Prognosis", "Outlook", "Expected course"),
    "rationale": ("依据", "诊断依据", "判断依据", "理由", "Rationale", "Reasoning", "Justification"),
    # A model's own disclaimer is dropped: code appends the real one.
    "disclaimer": ("免责声明", "Disclaimer"),
}
# fmt: on


def _title_key(title: str) -> str:
    return " ".join(title.split()).casefold()


_SECTION_OF_TITLE = {_title_key(alias): section for section, aliases in _ALIASES.items() for alias in aliases}
# Longer titles first, so that 鉴别诊断 and 诊断依据 are not read as 诊断. Whitespace is matched possessively (*+) all
# through: a model that emits a long run of spaces would otherwise make these patterns backtrack for minutes.
_TITLE = "|".join(
    re.escape(alias).replace(r"\ ", r"[ \t]++")
    for alias in sorted((alias for aliases in _ALIASES.values() for alias in aliases), key=len, reverse=True)
)
# A second title in the other language: "诊断 Diagnosis", "Diagnosis（诊断）", "Diagnosis / 诊断".
_SECOND_TITLE = rf"(?:[ \t]*+[(（][ \t]*+(?:{_TITLE})[ \t]*+[)）]|[ \t]*+/?[ \t]*+(?:{_TITLE}))?"
_BOLD = r"(?:\*\*|__)"
# At a line start: "Diagnosis:", "诊断：", "## Diagnosis", "**Diagnosis**", "- **Diagnosis:**", "1. 诊断：", "一、诊断".
# A bare title needs a colon, markup or the end of its line, so that "Diagnosis of exclusion ..." stays text.
_LINE_HEADER = re.compile(
    rf"^[ \t]*+(?:\#{{1,6}}[ \t]*+)?(?:[-*•][ \t]++)?(?:(?:\d{{1,2}}|[一二三四五六七八九十])[.、)）][ \t]*+)?"
    rf"(?P<bold>{_BOLD})?[ \t]*+(?P<title>{_TITLE}){_SECOND_TITLE}"
    rf"(?(bold)[ \t]*+[:：]?[ \t]*+{_BOLD}[ \t]*+[:：]?|[ \t]*+(?:[:：]|$))",
    re.MULTILINE | re.IGNORECASE,
)
# Anywhere: "【诊断】", "[Diagnosis]", "**【诊断】**：".
_BRACKET_HEADER = re.compile(
    rf"{_BOLD}?[【〖\[][ \t]*+(?P<title>{_TITLE}){_SECOND_TITLE}[ \t]*+[】〗\]]{_BOLD}?[ \t]*+[:：]?",
    re.IGNORECASE,
)
_TEMPLATE_LINE = r"^[ \t]*+###[ \t]*+(?:指令|病例|回答|Instruction|Case|Answer)[ \t]*+$"
_ECHOED_PROMPT = re.compile(
    r"\A\s*###[ \t]*+(?:指令|Instruction)[ \t]*+$.*?^[ \t]*+###[ \t]*+(?:回答|Answer)[ \t]*+$\n?",
    re.MULTILINE | re.DOTALL | re.IGNORECASE,
)
_SPECIAL_ENDS = ("</s>", "<|endoftext|>", "<|im_end|>", "<|eot_id|>")
_ANSWER_END = re.compile(
    "|".join([rf"{re.escape(END_MARKER)}\b", _TEMPLATE_LINE, *map(re.escape, _SPECIAL_ENDS)]),
    re.MULTILINE | re.IGNORECASE,
)
# A header cut off by the token limit ("…\n【治疗").
_UNCLOSED_HEADER = re.compile(r"[【〖\[][^】〗\]\n]{0,20}\Z")


def parse_answer(raw: str, language: str | None = None) -> StructuredAnswer:
    """Read a generated answer into its sections; tolerant of form and order, and never raises."""
    raw = "" if raw is None else str(raw)
    text = _answer_region(raw)
    try:
        language = _language(language, text)
    except ValueError:
        language = detect_language(text)

    headers = _find_headers(text)
    preamble = text[: headers[0][0]] if headers else text
    bodies: dict[str, str] = {}
    present = set()
    for index, (_start, end, section) in enumerate(headers):
        following = headers[index + 1][0] if index + 1 < len(headers) else len(text)
        body = text[end:following].strip()
        present.add(section)
        # The first non-empty one wins: a small model that loops repeats its sections, worse each time.
        if body and section not in bodies:
            bodies[section] = body

    rationale = bodies.get("rationale", "") if "rationale" in present else preamble.strip()
    diagnosis, run_on = _split_run_on_list(bodies.get("diagnosis", ""))
    answer = StructuredAnswer(
        diagnosis=diagnosis,
        differential=_split_differential(bodies.get("differential", "") or run_on),
        treatment=bodies.get("treatment", ""),
        prognosis=bodies.get("prognosis", ""),
        rationale=rationale,
        raw=raw,
        language=language,
    )
    answer.complete = bool(answer.diagnosis and answer.differential and answer.treatment)
    return answer


# A diagnosis line that runs on into a numbered list ("Pneumonia; 2. Bronchiectasis; 3. …", "肺炎 2. 支气管扩张 3. 哮喘"):
# a model that wrote its differential without starting the next section. A "2." counts as the list's second item when
# a semicolon comes before it, the line began with "1.", or a "3." follows ("Type 2 diabetes", "stage 2. …" stay whole).
_RUN_ON_ITEM = re.compile(r"(\s*[;；]\s*|\s+)2\s*[.、]\s*(?=\S)")
_THIRD_ITEM = re.compile(r"(?:\s|[;；])3\s*[.、]\s*\S")


def _split_run_on_list(diagnosis: str) -> tuple[str, str]:
    """(the diagnosis, the numbered list it ran on into, or "")."""
    match = _RUN_ON_ITEM.search(diagnosis)
    if not match or not diagnosis[: match.start()].strip():
        return diagnosis, ""
    rest = diagnosis[match.end() :]
    numbered = diagnosis.lstrip().startswith("1.")
    if not (";" in match.group(1) or "；" in match.group(1) or numbered or _THIRD_ITEM.search(rest)):
        return diagnosis, ""
    return diagnosis[: match.start()].strip().removeprefix("1.").strip(), "2. " + rest


def _answer_region(raw: str) -> str:
    """The answer alone: after an echoed prompt, before the end marker or a new example the model began."""
    echo = _ECHOED_PROMPT.match(raw)
    text = raw[echo.end() :] if echo else raw
    end = _ANSWER_END.search(text)
    if end:
        text = text[: end.start()]
    return _UNCLOSED_HEADER.sub("", text)


def _find_headers(text: str) -> list[tuple[int, int, str]]:
    """(start, end, section) of every header, in order, without overlaps."""
    matches = sorted([*_LINE_HEADER.finditer(text), *_BRACKET_HEADER.finditer(text)], key=lambda match: match.start())
    headers: list[tuple[int, int, str]] = []
    for match in matches:
        if headers and match.start() < headers[-1][1]:
            continue
        headers.append((match.start(), match.end(), _SECTION_OF_TITLE[_title_key(match["title"])]))
    return headers


# ---------------------------------------------------------------------------------------------------- differential

# "1." "2、" "3)" "(4)" "（5）" "⑥" where an item may begin; "2型糖尿病", "pH 7.3" and "Type 2 diabetes" are names.
_ENUMERATOR = re.compile(r"[(（]\d{1,2}[)）]|[\u2460-\u2473]|(?:^|(?<=[\s;；、,，。]))\d{1,2}[.、)）](?!\d)", re.MULTILINE)
_BULLET = re.compile(r"^[-*•·●▪◦]+\s*")
_ITEM_SEPARATORS = "\n;；、"
_OPENERS, _CLOSERS = "(（[【〔", ")）]】〕"


def _split_differential(text: str) -> list[str]:
    """Items on numbering, bullets, semicolons, 、 or newlines; commas stay ('Hand, foot and mouth disease')."""
    items: list[str] = []
    seen = set()
    for piece in _split_outside_brackets(_ENUMERATOR.sub("\n", text)):
        item = _BULLET.sub("", piece.replace("**", "").strip()).strip().rstrip(".。,，:：").strip()
        key = " ".join(item.split()).casefold()
        if item and key not in seen:
            seen.add(key)
            items.append(item)
    return items


def _split_outside_brackets(text: str) -> list[str]:
    # "肺炎（细菌性、病毒性）" is one item; a newline always splits, so an unclosed bracket cannot swallow the rest.
    pieces, current, depth = [], [], 0
    for char in text:
        if char == "\n" or (char in _ITEM_SEPARATORS and depth == 0):
            pieces.append("".join(current))
            current, depth = [], 0
            continue
        if char in _OPENERS:
            depth += 1
        elif char in _CLOSERS:
            depth = max(depth - 1, 0)
        current.append(char)
    pieces.append("".join(current))
    return pieces

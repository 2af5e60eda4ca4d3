"""Synthetic clinical cases drawn from the knowledge base, for training and smoke-testing medportal-tiny.

Cases imitate the structured admission notes the model will read: demographics, chief complaint, present illness,
past history, examination and tests, in several layouts and phrasings per language so that a model learns the
findings rather than a template. The text never names the diagnosis: the knowledge base refuses findings that do.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from modeling.knowledge import Condition, Finding, load_conditions


@dataclass(frozen=True)
class SyntheticCase:
    id: str
    language: str
    text: str
    diagnosis: str
    condition_id: str
    differential: list[str]
    treatment: str
    course: str


JSONL_KEYS = ("id", "language", "text", "diagnosis", "differential", "treatment", "course", "condition_id")

# Non-specific complaints that many conditions share (or none has), so adding one teaches robustness, not a shortcut.
DISTRACTORS = (
    Finding("乏力", "fatigue", 1.0),
    Finding("睡眠欠佳", "poor sleep", 1.0),
    Finding("食欲稍差", "a slightly reduced appetite", 1.0),
    Finding("情绪紧张", "feeling anxious", 1.0),
)
DISTRACTOR_RATE = 0.15
TESTS_SHOWN_RATE = 0.8
LEAD_WITH_TOP_RATE = 0.75
CHILD_AGE = 14


def generate_cases(
    n: int,
    *,
    seed: int = 0,
    languages: Sequence[str] = ("zh", "en"),
    conditions: Sequence[Condition] | None = None,
) -> list[SyntheticCase]:
    """``n`` cases, round-robin over the conditions in a seed-shuffled order and alternating languages.

    Case ``i`` depends only on the seed, ``i`` and the pool, so a longer run extends a shorter one.
    """
    pool = list(conditions if conditions is not None else load_conditions())
    if not pool or not languages:
        raise ValueError("generate_cases needs at least one condition and one language")
    random.Random(seed).shuffle(pool)
    names = {condition.id: condition for condition in (*load_conditions(), *pool)}
    cases = []
    for index in range(n):
        round_, position = divmod(index, len(pool))
        condition = pool[position]
        # Shifting by the round makes every condition alternate languages as well as every round.
        language = languages[(round_ + position) % len(languages)]
        rng = random.Random(f"{seed}:{index}")
        cases.append(
            SyntheticCase(
                id=f"syn-{seed}-{index}",
                language=language,
                text=_render(_draft(condition, rng), language, rng),
                diagnosis=condition.display_name(language),
                condition_id=condition.id,
                differential=[condition.display_name(language)]
                + [names[other].display_name(language) for other in condition.differential],
                treatment=condition.treatment[language],
                course=condition.course[language],
            )
        )
    return cases


def write_jsonl(cases: Iterable[SyntheticCase], path: Path | str) -> None:
    with Path(path).open("w", encoding="utf-8") as out:
        for case in cases:
            record = asdict(case)
            out.write(json.dumps({key: record[key] for key in JSONL_KEYS}, ensure_ascii=False) + "\n")


@dataclass(frozen=True)
class _Draft:
    """What one case shows, before it is worded."""

    sex: str
    age_months: int
    duration: int
    unit: str
    complaint: list[Finding]
    symptoms: list[Finding]
    history: list[Finding]
    signs: list[Finding]
    tests: list[Finding] | None  # None: the record has no tests section


def _draft(condition: Condition, rng: random.Random) -> _Draft:
    sex = condition.sex if condition.sex != "any" else rng.choice("FM")
    age = rng.randint(*condition.age_range)
    age_months = age * 12 if age else rng.randint(1, 11)
    shortest, longest, unit = condition.duration
    duration = min(rng.randint(shortest, longest), _longest_possible(unit, age_months))

    ranked = sorted(condition.symptoms, key=lambda finding: -finding.weight)
    # Mostly led by the most typical symptom, sometimes by one of the next two; sometimes a second one joins it.
    leading = ranked[:3]
    complaint = [ranked[0] if rng.random() < LEAD_WITH_TOP_RATE or len(leading) == 1 else rng.choice(leading[1:])]
    if len(leading) > 1 and rng.random() < 0.5:
        complaint.append(rng.choice([finding for finding in leading if finding not in complaint]))
    complaint.sort(key=ranked.index)
    present = [finding for finding in ranked if finding not in complaint and rng.random() < finding.weight]
    signs = [finding for finding in condition.signs if rng.random() < finding.weight]
    tests = [finding for finding in condition.tests if rng.random() < finding.weight] if rng.random() < TESTS_SHOWN_RATE else None

    # Every case shows at least three findings: top up with the most typical ones left out.
    buckets = [(present, ranked), (signs, condition.signs)] + ([(tests, condition.tests)] if tests is not None else [])
    spare = sorted(
        (
            (finding, shown)
            for shown, source in buckets
            for finding in source
            if finding not in shown and finding not in complaint
        ),
        key=lambda pair: -pair[0].weight,
    )
    while len(complaint) + len(present) + len(signs) + len(tests or []) < 3 and spare:
        finding, shown = spare.pop(0)
        shown.append(finding)

    rng.shuffle(present)
    own = {finding.zh for finding in condition.findings()}
    distractors = [finding for finding in DISTRACTORS if finding.zh not in own]
    if rng.random() < DISTRACTOR_RATE and distractors:
        present.insert(rng.randint(0, len(present)), rng.choice(distractors))
    history = [finding for finding in condition.history if rng.random() < finding.weight]
    return _Draft(sex, age_months, duration, unit, complaint, present, history, signs, tests)


def _longest_possible(unit: str, age_months: int) -> int:
    """A complaint cannot predate the patient."""
    per_unit = {"year": age_months // 12, "month": age_months, "week": age_months * 4}
    return max(1, per_unit.get(unit, 10**6))


def _render(draft: _Draft, language: str, rng: random.Random) -> str:
    return (_render_zh if language == "zh" else _render_en)(draft, rng)


def _acuity(unit: str) -> str:
    return "acute" if unit in ("minute", "hour") else "subacute" if unit == "day" else "chronic"


# ---------------------------------------------------------------------------------------------------- Chinese

ZH_UNITS = {"minute": "分钟", "hour": "小时", "day": "天", "week": "周", "month": "个月", "year": "年"}
ZH_ONSET = {
    "acute": ("突发", "突然出现", "急起"),
    "subacute": ("出现", "开始出现", "起病，表现为"),
    "chronic": ("逐渐出现", "开始出现", "缓慢起病，表现为"),
}
ZH_LABELS = (
    {"complaint": "主诉", "present": "现病史", "history": "既往史", "exam": "体格检查", "tests": "辅助检查"},
    {"complaint": "主要症状", "present": "病史", "history": "既往史", "exam": "查体", "tests": "检查结果"},
    {"complaint": "主诉", "present": "现病史", "history": "既往及个人史", "exam": "体检", "tests": "实验室及影像检查"},
)


def _zh_list(items: list[str], rng: random.Random) -> str:
    if any("，" in item for item in items):  # '、' would blur where a qualified finding ends
        return "；".join(items)
    if len(items) < 2:
        return "".join(items)
    return "、".join(items[:-1]) + rng.choice(("、", "及", "和")) + items[-1]


def _zh_section(items: list[str], rng: random.Random) -> str:
    return ("；" if any("，" in item for item in items) else rng.choice(("，", "；"))).join(items)


def _render_zh(draft: _Draft, rng: random.Random) -> str:
    sex = "女" if draft.sex == "F" else "男"
    age = f"{draft.age_months // 12}岁" if draft.age_months >= 12 else f"{draft.age_months}个月"
    who = "患儿" if draft.age_months < CHILD_AGE * 12 else "患者"
    duration = f"{draft.duration}{ZH_UNITS[draft.unit]}"
    heads = [finding.head("zh") for finding in draft.complaint]
    complaint = (heads[0] if len(heads) == 1 else rng.choice(("、", "伴")).join(heads)) + duration

    full = _zh_list([finding.zh for finding in draft.complaint], rng)
    others = _zh_list([finding.zh for finding in draft.symptoms], rng)
    onset = rng.choice(ZH_ONSET[_acuity(draft.unit)])
    present = rng.choice(
        (
            f"{who}{duration}前{onset}{full}"
            + (f"，{rng.choice(('伴', '伴有', '同时有', '随后出现'))}{others}" if others else "")
            + "。",
            f"{who}于{duration}前起病，主要表现为{full}。"
            + (f"病程中{rng.choice(('有', '另有', '还有'))}{others}。" if others else ""),
            f"{duration}前{onset}{full}"
            + (f"，{rng.choice(('伴', '并有'))}{others}" if others else "")
            + f"，{rng.choice(('遂来院就诊', '为进一步诊治来诊', '今来我院就诊'))}。",
        )
    )
    history = "、".join(finding.zh for finding in draft.history) or rng.choice(("既往体健", "否认慢性病史", "无特殊"))
    exam = _zh_section([finding.zh for finding in draft.signs], rng) or rng.choice(("未见明显异常", "无特殊阳性体征"))
    tests = None if draft.tests is None else _zh_section([finding.zh for finding in draft.tests], rng) or "未见明显异常"

    labels = rng.choice(ZH_LABELS)
    line = rng.choice((lambda label, text: f"{label}：{text}", lambda label, text: f"【{label}】{text}"))
    header_style = rng.randrange(4)
    header = (
        f"性别：{sex} 年龄：{age}",
        f"{who}，{sex}，{age}。",
        f"{sex}，{age}",
        f"{sex}，{age}，因“{complaint}”就诊。",
    )[header_style]
    sections = [] if header_style == 3 else [("complaint", complaint)]
    sections += [("present", present), ("history", history), ("exam", exam)]
    if tests is not None:
        sections.append(("tests", tests))
    if rng.random() < 0.2:  # Some departments note past history after the examination.
        sections.append(sections.pop(sections.index(("history", history))))
    return "\n".join([header] + [line(labels[key], text) for key, text in sections])


# ---------------------------------------------------------------------------------------------------- English

EN_ONSET = {
    "acute": ("Sudden onset of", "Abrupt onset of", "Acute onset of"),
    "subacute": ("Onset of", "Developed", "New onset of"),
    "chronic": ("Gradual onset of", "Insidious onset of", "Gradually developed"),
}
EN_LABELS = (
    {
        "complaint": "Chief complaint",
        "present": "Present illness",
        "history": "Past history",
        "exam": "Physical exam",
        "tests": "Tests",
    },
    {
        "complaint": "Presenting complaint",
        "present": "History of present illness",
        "history": "Background",
        "exam": "Examination",
        "tests": "Investigations",
    },
    {
        "complaint": "Main symptoms",
        "present": "History",
        "history": "Past medical history",
        "exam": "On examination",
        "tests": "Results",
    },
)


def _en_list(items: list[str], rng: random.Random) -> str:
    if any(", " in item for item in items):
        return "; ".join(items)
    if len(items) < 3:
        return " and ".join(items)
    return ", ".join(items[:-1]) + rng.choice((" and ", ", and ")) + items[-1]


def _render_en(draft: _Draft, rng: random.Random) -> str:
    child = draft.age_months < CHILD_AGE * 12
    sex = "female" if draft.sex == "F" else "male"
    noun = {("F", True): "girl", ("M", True): "boy", ("F", False): "woman", ("M", False): "man"}[draft.sex, child]
    years = draft.age_months // 12
    age = _counted(years, "year") if years else _counted(draft.age_months, "month")
    age_adjective = f"{years}-year-old" if years else f"{draft.age_months}-month-old"
    duration = _counted(draft.duration, draft.unit)
    heads = _en_list([finding.head("en") for finding in draft.complaint], rng)
    complaint = rng.choice((f"{heads} for {duration}", f"{duration} of {heads}", f"{heads}, {duration}"))

    full = _en_list([finding.en for finding in draft.complaint], rng)
    others = _en_list([finding.en for finding in draft.symptoms], rng)
    joined = f", {rng.choice(('with', 'associated with', 'accompanied by', 'together with'))} {others}" if others else ""
    subject = "the child" if child else "the patient"
    present = rng.choice(
        (
            f"{rng.choice(EN_ONSET[_acuity(draft.unit)])} {full}, starting {duration} ago{joined}.",
            f"Over the past {duration}, {subject} has had {full}{joined}.",
            f"Symptoms began {duration} ago with {full}."
            + (f" {rng.choice(('Also reports', 'Associated symptoms:', 'Further complaints:'))} {others}." if others else ""),
        )
    )
    history = "; ".join(finding.en for finding in draft.history)
    history = (
        history[:1].upper() + history[1:]
        if history
        else rng.choice(("Previously well", "No significant past history", "Nil of note"))
    )
    exam = "; ".join(finding.en for finding in draft.signs) or rng.choice(("Unremarkable", "No abnormal findings"))
    tests = None if draft.tests is None else "; ".join(finding.en for finding in draft.tests) or "Unremarkable"

    labels = rng.choice(EN_LABELS)
    header_style = rng.randrange(4)
    header = (
        f"Sex: {sex}  Age: {years or age}",
        f"{age_adjective} {noun}.",
        f"Patient: {sex}, {age}",
        f"{age_adjective} {noun} presenting with {complaint}.",
    )[header_style]
    sections = [] if header_style == 3 else [("complaint", complaint)]
    sections += [("present", present), ("history", history), ("exam", exam)]
    if tests is not None:
        sections.append(("tests", tests))
    if rng.random() < 0.2:
        sections.append(sections.pop(sections.index(("history", history))))
    return "\n".join([header] + [f"{labels[key]}: {text}" for key, text in sections])


def _counted(count: int, unit: str) -> str:
    return f"{count} {unit}{'' if count == 1 else 's'}"

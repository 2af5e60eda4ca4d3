"""Checks around any model's answer: unusable sections, and a headline that disagrees with the model's ranking."""

import json

import pytest

from modeling.answer_quality import DEGENERATE, EMPTY, OK, concept, headline, section_flag
from modeling.knowledge import load_conditions
from tests.shared_data import SHARED_DATA

# Outputs of the kind seen from the demo model, and others of the same classes (loops, non-words, nothing).
DEGENERATE_SECTIONS = [
    ("dry dry dry drykenes", "en"),
    ("Give fluids fluids fluids fluids and rest.", "en"),
    ("monitor the patient monitor the patient monitor the patient", "en"),
    ("amoxicillin amoxicillin amoxicillin 500 mg", "en"),
    ("kkt frrp txw qwxz zzpt vbnm start rest", "en"),
    ("动作缓慢动作缓慢，多巴多巴胺", "zh"),
    ("给予抗生素治疗给予抗生素治疗", "zh"),
    ("多巴多巴多巴", "zh"),
    ("休息休息休息，补液", "zh"),
    ("口服口服口服口服阿司匹林", "zh"),
]
EMPTY_SECTIONS = [("", "en"), ("   ", "zh"), ("——", "zh"), ("...", "en")]
WELL_FORMED = [
    ("Start empirical antibiotics such as amoxicillin-clavulanate, oxygen if saturation is low, review in 48 hours.", "en"),
    ("Urgent cardiology referral for primary PCI; aspirin 300 mg and ticagrelor 180 mg; CT if dissection is suspected.", "en"),
    ("HSV encephalitis; VZV encephalitis; EBV encephalitis", "en"),
    ("患儿晚上睡觉嗓子有呼噜呼噜声，考虑考虑再复查。", "zh"),
    ("对症退热，多饮水，观察精神状态，如持续高热三天以上及时就诊。", "zh"),
]


@pytest.mark.parametrize(("text", "language"), DEGENERATE_SECTIONS)
def test_loops_and_non_words_are_degenerate(text, language):
    assert section_flag(text, language) == DEGENERATE


@pytest.mark.parametrize(("text", "language"), EMPTY_SECTIONS)
def test_nothing_is_empty(text, language):
    assert section_flag(text, language) == EMPTY


@pytest.mark.parametrize(("text", "language"), WELL_FORMED)
def test_well_formed_text_is_usable(text, language):
    assert section_flag(text, language) == OK


def test_no_false_alarms_on_the_knowledge_bases_own_texts():
    texts = [
        (text, language) for c in load_conditions() for language in ("zh", "en")
        for text in (c.treatment[language], c.course[language], *c.names(language), *(f.text(language) for f in c.findings()))
    ]
    assert len(texts) > 2000
    assert [t for t, language in texts if section_flag(t, language) != OK] == []


def test_no_false_alarms_on_real_treatments_and_diagnoses():
    rows = [json.loads(line) for line in (SHARED_DATA / "en-dev.jsonl").read_text(encoding="utf-8").splitlines()]
    texts = [row[field] for row in rows for field in ("treatment", "diagnosis") if row.get(field)]
    assert len(texts) > 2000
    assert [t for t in texts if section_flag(t, "en") != OK] == []


def test_one_concept_whatever_the_name_the_language_or_the_code():
    assert concept("Acute myocardial infarction") == concept("急性心肌梗死") == concept(" heart attack. ") == concept("I21.9")
    assert concept("AMI") != concept("Unstable angina")
    assert concept("Some condition we do not know") == "some condition we do not know"


RANKED = [{"name": "急性心肌梗死", "probability": 0.6}, {"name": "心绞痛", "probability": 0.3}]


def test_a_written_diagnosis_naming_the_top_label_agrees():
    lead = headline("心梗", OK, RANKED)
    assert (lead.text, lead.agrees, lead.from_ranking) == ("心梗", True, False)


def test_a_written_diagnosis_naming_another_condition_disagrees_and_both_are_kept():
    lead = headline("Anaphylactic shock", OK, RANKED)
    assert (lead.text, lead.top_label, lead.agrees) == ("Anaphylactic shock", "急性心肌梗死", False)


def test_an_unusable_written_diagnosis_gives_way_to_the_ranking():
    for flag in (EMPTY, DEGENERATE):
        lead = headline("dry dry dry", flag, RANKED)
        assert (lead.text, lead.agrees, lead.from_ranking) == ("急性心肌梗死", True, True)


def test_without_a_ranking_there_is_nothing_to_disagree_with():
    lead = headline("支气管炎", OK, [])
    assert (lead.text, lead.agrees) == ("支气管炎", True)


@pytest.mark.parametrize(("text", "language"), [
    ("Immediate intra及时注射肾上腺素", "en"),
    ("Avoid triggers and give a rate抑制剂抗血小板.", "en"),
    ("给予rate抑制剂抗血小板", "zh"),
    ("口服amoxi阿莫西林", "zh"),
])
def test_scripts_spliced_mid_phrase_are_degenerate(text, language):
    assert section_flag(text, language) == DEGENERATE


@pytest.mark.parametrize("text", ["完善CT检查，必要时ACEI类药物", "颊黏膜Koplik斑", "Graves病", "长期可并发Barrett食管"])
def test_capitals_and_eponyms_in_chinese_are_normal(text):
    assert section_flag(text, "zh") == OK

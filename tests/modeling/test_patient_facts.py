"""Sex and age read from notes in both languages, and the knowledge base's hard limits on who can have what."""

import pytest

from modeling.patient_facts import PatientFacts, extract_facts, implausible

NOTES = [
    ("男，23岁，腹痛2天。", "M", 23),
    ("女 56岁 胸闷1周", "F", 56),
    ("性别：女  年龄：30岁\n主诉：停经6周", "F", 30),
    ("患儿，男，5月龄，发热1天。", "M", 0.42),
    ("患儿男，3岁2个月，咳嗽。", "M", 3.17),
    ("我女儿6岁，发烧两天", "F", 6),
    ("宝宝6个月了，咳嗽有痰", None, 0.5),
    ("Age: 54, Sex: M. Chest pain for 2 hours.", "M", 54),
    ("Sex: female  Age: 41\nChief complaint: burning pain", "F", 41),
    ("A 54-year-old man with crushing chest pain.", "M", 54),
    ("a 3 yo girl with fever and rash", "F", 3),
    ("The patient is a 67 y/o gentleman.", "M", 67),
    ("Patient: under 1 year old female. Chief complaint: cough.", "F", 0.5),
    ("My son is 3 years old and has a cough.", "M", 3),
    ("Cough for 3 days, no fever.", None, None),
    ("咳嗽3天，无发热。", None, None),
]


@pytest.mark.parametrize(("note", "sex", "age"), NOTES)
def test_sex_and_age_are_read_from_the_note(note, sex, age):
    facts = extract_facts(note)
    assert facts.sex == sex
    assert facts.age == (pytest.approx(age, abs=0.01) if age is not None else None)


def test_a_mothers_words_do_not_make_a_boy_female():
    assert extract_facts("The mother says her son, 4 years old, has a rash.").sex == "M"


@pytest.mark.parametrize(("label", "facts", "language", "excluded"), [
    ("子痫前期", PatientFacts("M", 23), "zh", True),
    ("异位妊娠", PatientFacts("M", 58), "zh", True),
    ("Preeclampsia", PatientFacts("F", 72), "en", True),
    ("Preeclampsia", PatientFacts("F", 30), "en", False),
    ("Ectopic pregnancy", PatientFacts("F", None), "en", False),
    ("Ovarian torsion", PatientFacts("M", None), "en", True),
    ("Febrile seizure", PatientFacts(None, 40), "en", True),
    ("热性惊厥", PatientFacts(None, 2), "zh", False),
    ("Bronchiolitis", PatientFacts(None, 30), "en", True),
    ("Preeclampsia", PatientFacts(None, None), "en", False),  # nothing stated, nothing excluded
    ("Acute myocardial infarction", PatientFacts("F", 3), "en", False),  # unusual is not impossible
])
def test_diagnoses_that_cannot_fit_the_patient_are_excluded_with_a_reason(label, facts, language, excluded):
    reason = implausible(label, facts, language)
    assert bool(reason) == excluded
    if reason and language == "zh":
        assert any("\u4e00" <= ch <= "\u9fff" for ch in reason)


@pytest.mark.parametrize(("note", "age"), [
    ("性别：女 年龄：3个月 主诉：喘息2天", 0.25),
    ("Age: 3 months. Wheezing for 2 days.", 0.25),
    ("反复咳嗽3个月，加重1周。", None),  # a duration, not an age
    ("Cough for 3 months, worse for a week.", None),
    ("男，45岁，反复咳嗽3个月。", 45),
    ("A 45-year-old with cough for 3 months.", 45),
])
def test_a_duration_is_not_an_age(note, age):
    assert extract_facts(note).age == (pytest.approx(age, abs=0.01) if age is not None else None)

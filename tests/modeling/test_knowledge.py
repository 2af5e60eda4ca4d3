"""The bilingual knowledge base: coverage, integrity, and a loader that names the entry it cannot accept."""

import json
import re

import pytest

from modeling.knowledge import DEFAULT_PATH, load_conditions, medical_terms, mentions

PAEDIATRIC_LABELS = {"上呼吸道感染", "手足口病", "腹泻", "肺炎", "过敏性鼻炎"}


@pytest.fixture(scope="module")
def conditions():
    return load_conditions()


@pytest.fixture(scope="module")
def by_id(conditions):
    return {condition.id: condition for condition in conditions}


def clinical_findings(condition):
    return {finding.zh for finding in condition.symptoms + condition.signs + condition.tests}


def test_it_covers_at_least_forty_conditions_over_eight_departments(conditions):
    assert len(conditions) >= 40
    assert len({condition.department for condition in conditions}) >= 8


def test_every_condition_is_written_in_both_languages(conditions):
    for condition in conditions:
        for language in ("zh", "en"):
            assert condition.display_name(language).strip(), condition.id
            assert condition.treatment[language].strip() and condition.course[language].strip(), condition.id
            assert all(finding.text(language).strip() for finding in condition.findings()), condition.id


def test_every_condition_has_the_agreed_shape(conditions):
    for condition in conditions:
        assert 5 <= len(condition.symptoms) <= 8, condition.id
        assert 2 <= len(condition.signs) <= 5, condition.id
        assert 2 <= len(condition.tests) <= 5, condition.id
        assert len(condition.history) <= 4, condition.id
        assert 2 <= len(condition.differential) <= 4, condition.id
        assert re.fullmatch(r"[A-Z]\d\d(\.\d)?", condition.icd10), condition.id
        low, high = condition.age_range
        assert 0 <= low <= high <= 120 and condition.sex in ("any", "F", "M"), condition.id


def test_it_carries_the_paediatric_labels_under_their_exact_chinese_names(conditions):
    assert PAEDIATRIC_LABELS <= {condition.display_name("zh") for condition in conditions}


def test_ids_are_unique(conditions):
    assert len({condition.id for condition in conditions}) == len(conditions)


def test_every_differential_id_resolves_to_another_condition(conditions, by_id):
    for condition in conditions:
        for other in condition.differential:
            assert other in by_id and other != condition.id, (condition.id, other)


def test_each_condition_has_two_findings_that_no_confusable_condition_shares(conditions, by_id):
    confusable = {condition.id: set(condition.differential) for condition in conditions}
    for condition in conditions:
        for other in condition.differential:
            confusable[other].add(condition.id)
    for condition in conditions:
        theirs = set().union(*(clinical_findings(by_id[other]) for other in confusable[condition.id]))
        assert len(clinical_findings(condition) - theirs) >= 2, condition.id


def test_no_finding_names_its_own_diagnosis(conditions):
    for condition in conditions:
        for language in ("zh", "en"):
            for finding in condition.findings():
                assert not any(mentions(finding.text(language), term) for term in condition.names(language)), finding


def test_obstetric_and_gynaecological_conditions_are_female_only(conditions):
    assert all(condition.sex == "F" for condition in conditions if condition.department == "obstetrics_gynaecology")


def test_the_lexicon_holds_names_synonyms_and_findings_longest_first():
    terms = medical_terms("zh")
    assert {"急性心肌梗死", "心梗", "胸骨后压榨样疼痛"} <= set(terms)
    assert {"Acute myocardial infarction", "heart attack", "crushing retrosternal chest pain"} <= set(medical_terms("en"))
    assert len(terms) == len(set(terms))
    assert [len(term) for term in terms] == sorted((len(term) for term in terms), reverse=True)
    assert set(terms) | set(medical_terms("en")) == set(medical_terms())


def test_mentions_matches_whole_words_in_english_and_substrings_in_chinese():
    assert mentions("Known AMI last year", "AMI")
    assert not mentions("Examination unremarkable", "AMI")
    assert mentions("recurrent migraines", "migraine")
    assert mentions("既往心梗病史", "心梗")


def entries():
    return json.loads(DEFAULT_PATH.read_text(encoding="utf-8"))


def break_unknown_differential(data):
    data[3]["differential"].append("no_such_condition")


def break_self_differential(data):
    data[3]["differential"].append(data[3]["id"])


def break_weight(data):
    data[3]["signs"][0]["weight"] = 1.5


def break_language(data):
    del data[3]["name"]["en"]


def break_duplicate_id(data):
    data[4]["id"] = data[3]["id"]


def break_leaky_finding(data):
    data[3]["symptoms"][0]["zh"] += data[3]["name"]["zh"]


@pytest.mark.parametrize(
    "breakage, problem",
    [
        (break_unknown_differential, "no_such_condition"),
        (break_self_differential, "itself"),
        (break_weight, "weight"),
        (break_language, "name lacks en"),
        (break_duplicate_id, "duplicate"),
        (break_leaky_finding, "names the diagnosis"),
    ],
)
def test_a_broken_file_gives_a_value_error_naming_the_entry(tmp_path, breakage, problem):
    data = entries()
    breakage(data)
    path = tmp_path / "conditions.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(ValueError, match=rf"entry '{data[3]['id']}'.*{problem}"):
        load_conditions(path)


def test_it_loads_once_and_hands_back_the_same_tuple():
    assert load_conditions() is load_conditions(DEFAULT_PATH)

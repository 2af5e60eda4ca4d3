"""Synthetic cases: deterministic, balanced, varied, true to the knowledge base, and never naming the answer."""

import json
import re
from collections import Counter

import pytest

from modeling.knowledge import load_conditions, mentions
from modeling.synthetic import DISTRACTORS, JSONL_KEYS, generate_cases, write_jsonl


@pytest.fixture(scope="module")
def conditions():
    return {condition.id: condition for condition in load_conditions()}


@pytest.fixture(scope="module")
def cases():
    return generate_cases(2000, seed=11)


def sex_and_age(case):
    """What the record's first line says: ('F' | 'M', age in whole years)."""
    header = case.text.splitlines()[0]
    if case.language == "zh":
        sex = "F" if "女" in header else "M"
        number, unit = re.search(r"(\d+)(岁|个月)", header).groups()
    else:
        sex = "F" if re.search(r"\b(female|woman|girl)\b", header) else "M"
        number, unit = re.search(r"(\d+)(?:[- ](month))?", header).groups()
    return sex, 0 if unit in ("个月", "month") else int(number)


def test_it_is_deterministic_for_a_seed():
    assert generate_cases(60, seed=7) == generate_cases(60, seed=7)


def test_it_varies_across_seeds():
    first, second = generate_cases(60, seed=7), generate_cases(60, seed=8)
    assert sum(a.text != b.text for a, b in zip(first, second, strict=True)) > 50


def test_a_longer_run_extends_a_shorter_one():
    assert generate_cases(30, seed=3)[:10] == generate_cases(10, seed=3)


def test_ids_name_the_seed_and_index():
    assert [case.id for case in generate_cases(3, seed=5)] == ["syn-5-0", "syn-5-1", "syn-5-2"]


def test_it_never_names_the_diagnosis_or_a_synonym_in_either_language(cases, conditions):
    for case in cases:
        condition = conditions[case.condition_id]
        for language in ("zh", "en"):
            leaked = [term for term in condition.names(language) if mentions(case.text, term)]
            assert not leaked, (case.id, leaked)


def test_it_respects_sex_and_age_constraints(cases, conditions):
    for case in cases:
        condition = conditions[case.condition_id]
        sex, age = sex_and_age(case)
        assert condition.sex in ("any", sex), case.id
        assert condition.age_range[0] <= age <= condition.age_range[1], case.id


def test_obstetric_cases_are_all_women(cases, conditions):
    obstetric = [case for case in cases if conditions[case.condition_id].department == "obstetrics_gynaecology"]
    assert obstetric and {sex_and_age(case)[0] for case in obstetric} == {"F"}


def test_conditions_and_languages_are_balanced(conditions):
    cases = generate_cases(len(conditions) * 4, seed=2)
    assert set(Counter(case.condition_id for case in cases).values()) == {4}
    assert set(Counter((case.condition_id, case.language) for case in cases).values()) == {2}


def test_texts_are_varied(cases):
    texts = [case.text for case in cases[:1000]]
    assert len(set(texts)) > 0.9 * len(texts)


def test_each_language_has_several_layouts(cases):
    for language in ("zh", "en"):
        layouts = {
            tuple(re.split(r"[：】]|: ", line)[0] for line in case.text.splitlines()[1:])
            for case in cases
            if case.language == language
        }
        assert len(layouts) >= 6, language


def test_every_case_shows_at_least_three_findings_of_its_condition(cases, conditions):
    for case in cases:
        condition = conditions[case.condition_id]
        findings = condition.symptoms + condition.signs + condition.tests
        assert sum(finding.head(case.language) in case.text for finding in findings) >= 3, case.id


def test_labels_are_in_the_case_language(cases, conditions):
    for case in cases:
        condition = conditions[case.condition_id]
        assert case.diagnosis == condition.display_name(case.language)
        assert case.differential == [case.diagnosis] + [
            conditions[other].display_name(case.language) for other in condition.differential
        ]
        assert (case.treatment, case.course) == (condition.treatment[case.language], condition.course[case.language])


def test_distractors_are_never_a_finding_unique_to_one_condition(conditions):
    for distractor in DISTRACTORS:
        holders = [c for c in conditions.values() if distractor.zh in {finding.zh for finding in c.findings()}]
        assert len(holders) != 1, distractor


def test_it_draws_from_the_conditions_it_is_given(conditions):
    cases = generate_cases(6, seed=1, languages=("en",), conditions=[conditions["gout"]])
    assert {(case.condition_id, case.language) for case in cases} == {("gout", "en")}


def test_write_jsonl_writes_one_object_a_line(tmp_path):
    cases = generate_cases(4, seed=1)
    path = tmp_path / "cases.jsonl"
    write_jsonl(cases, path)
    lines = path.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert [tuple(record) for record in records] == [JSONL_KEYS] * 4
    assert [record["text"] for record in records] == [case.text for case in cases]
    assert any("性别" in line or "岁" in line for line in lines)  # Chinese stays readable, not \u-escaped

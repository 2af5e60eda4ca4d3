"""Training data preparation: cleaning, augmentation, deterministic splits and (prompt, target) pairs. No DB, no model."""

import json
import logging
import random
import re
from collections import Counter

import pytest

from modeling.dataprep import (
    ABBREVIATIONS,
    SYNONYMS,
    augment_record,
    augment_records,
    clean_medical_text,
    expand_abbreviations,
    load_training_data,
    prepare_records,
    record_pair,
    split_of,
    split_records,
)
from modeling.prompts import detect_language
from modeling.records import FileFormatError, Record, read_records
from tests.shared_data import SHARED_DATA

DATA = SHARED_DATA
ZH_PUNCTUATION = "，。：；（）？！、"


@pytest.fixture(scope="module")
def en_dev():
    return read_records(DATA / "en-dev.jsonl")


@pytest.fixture(scope="module")
def zh_dev():
    return read_records(DATA / "zh-dev.jsonl")


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------- MIMIC markers


@pytest.mark.parametrize(
    ("marker", "placeholder"),
    [
        ("[**First Name8 (NamePattern2) 123**]", "[NAME]"),
        ("[**Known lastname 4**]", "[NAME]"),
        ("[**Doctor Last Name 7**]", "[NAME]"),
        ("[**2101-10-20**]", "[DATE]"),
        ("[**10-20**]", "[DATE]"),
        ("[**Month (only) 11**]", "[DATE]"),
        ("[**Hospital1 18**]", "[ADDRESS]"),
        ("[**Location (un) 2**]", "[ADDRESS]"),
        ("[**Hospital Ward Name 5**]", "[ADDRESS]"),
        ("[**Telephone/Fax (1) 5**]", "[PHONE]"),
        ("[**Pager number 31**]", "[PHONE]"),
        ("[**MD Number(3) 77**]", "[ID]"),
        ("[**Numeric Identifier 8**]", "[ID]"),
        ("[**Medical Record Number 9**]", "[MRN]"),
        ("[**E-mail address 1**]", "[EMAIL]"),
        ("[**Age over 90 **]", "[AGE]"),
        ("[** **]", "[REDACTED]"),
        ("[**Something new 3**]", "[REDACTED]"),
    ],
)
def test_mimic_markers_become_typed_placeholders(marker, placeholder):
    assert clean_medical_text(f"Seen by {marker} today.", "en") == f"Seen by {placeholder} today."


def test_a_first_and_last_name_become_one_name_and_no_marker_is_left():
    note = (
        "Pt [**First Name8 (NamePattern2) 123**] [**Last Name (NamePattern1) 456**] seen [**2101-10-20**] at [**Hospital1 18**]."
    )
    cleaned = clean_medical_text(note, "en")
    assert cleaned == "Pt [NAME] seen [DATE] at [ADDRESS]."
    assert "[**" not in cleaned and "**]" not in cleaned


def test_our_own_numbered_placeholders_pass_through():
    note = "患者[NAME_1]，电话[PHONE_1]，[DATE_1]入院。"
    assert clean_medical_text(note, "zh") == note


# ---------------------------------------------------------------------------------------------------- abbreviations


def test_the_table_has_the_common_clinical_abbreviations():
    for form in ("b.i.d.", "t.i.d.", "q.d.", "q.i.d.", "p.r.n.", "h.s.", "p.o.", "i.v.", "i.m.", "s.c.", "stat", "a.c.", "p.c."):
        assert form in ABBREVIATIONS
    assert {"c/o", "s/p", "h/o", "w/", "w/o", "SOB"} <= set(ABBREVIATIONS)
    assert len(set(ABBREVIATIONS.values())) >= 25


@pytest.mark.parametrize(
    ("note", "expected"),
    [
        ("Metoprolol 25 mg p.o. b.i.d.", "Metoprolol 25 mg by mouth twice daily."),
        ("Metoprolol 25 mg P.O. BID", "Metoprolol 25 mg by mouth twice daily"),
        ("Paracetamol 1 g po qid prn", "Paracetamol 1 g po four times daily as needed"),  # "po" alone is not safe in English
        ("Morphine 2 mg i.v. q4h p.r.n. pain", "Morphine 2 mg intravenously every 4 hours as needed pain"),
        (
            "Heparin 5000 units s.c. q8h, insulin s.q. a.c. and h.s.",
            "Heparin 5000 units subcutaneously every 8 hours, insulin subcutaneously before meals and at bedtime.",
        ),
        ("Lorazepam 1 mg i.m. stat", "Lorazepam 1 mg intramuscularly immediately"),
        (
            "Ibuprofen t.i.d. p.c., omeprazole q.d. a.c.",
            "Ibuprofen three times daily after meals, omeprazole once daily before meals.",
        ),
        (
            "65 y/o man c/o SOB, s/p CABG, h/o HTN.",
            "65 year-old man complains of shortness of breath, status post CABG, history of hypertension.",
        ),
        ("Chest pain w/o radiation, w/ diaphoresis, w/nausea.", "Chest pain without radiation, with diaphoresis, with nausea."),
        ("Aspirin q.o.d. and warfarin q.d.s.", "Aspirin every other day and warfarin four times daily."),
    ],
)
def test_abbreviations_are_written_out(note, expected):
    assert clean_medical_text(note, "en") == expected


def test_abbreviations_are_not_expanded_inside_words_or_where_they_are_words():
    note = (
        "Report reviewed; status stable. She began to sob. Made a bid for the stat sheet? No: stage IV disease, "
        "AC joint, a PC and Aspirin."
    )
    expanded = expand_abbreviations(note, "en")
    for word in ("Report", "status", "sob", "bid", "stage IV", "AC joint", "a PC", "Aspirin"):
        assert word in expanded
    assert "by mouth" not in expanded and "intravenously" not in expanded
    assert expanded.count("immediately") == 1  # "stat sheet" is the only whole-token "stat"


def test_a_sentence_ending_in_a_dotted_abbreviation_keeps_its_full_stop():
    cleaned = clean_medical_text("Aspirin 75 mg p.o. q.d. Review in a week.\nStop b.i.d.", "en")
    assert cleaned == "Aspirin 75 mg by mouth once daily. Review in a week.\nStop twice daily."


def test_an_abbreviation_that_begins_a_sentence_gives_it_a_capital():
    cleaned = clean_medical_text("SOB since Monday. Known HTN.\nPMH: HTN\nC/O cough", "en")
    assert (
        cleaned == "Shortness of breath since Monday. Known hypertension.\nPast medical history: hypertension\nComplains of cough"
    )


def test_drug_orders_in_a_chinese_note_expand_into_chinese():
    cleaned = clean_medical_text("阿司匹林 100mg p.o. q.d.，0.9%氯化钠 100ml ivgtt bid，IV期肺癌，患者c/o胸痛", "zh")
    assert cleaned == "阿司匹林 100mg 口服 每日一次，0.9%氯化钠 100ml 静脉滴注 每日两次，IV期肺癌，患者complains of胸痛"


# ---------------------------------------------------------------------------------------------------- Unicode and punctuation

ZH_NOTE = (
    "主诉：发热、咳嗽3天，加重1天！\n"
    "查体：T 38.5℃，BP 150/95mmHg，SpO2 95%，BMI 28 kg/m²。\n"
    "辅助检查：WBC 12.5×10⁹/L；血糖 7.8 mmol/L；CRP 20mg/L（偏高）？"
)


def test_chinese_punctuation_and_units_survive_cleaning():
    cleaned = clean_medical_text(ZH_NOTE, "zh")
    for kept in [*ZH_PUNCTUATION, "℃", "mmHg", "%", "kg/m²", "mmol/L", "mg/L", "×10^9/L"]:
        assert kept in cleaned, kept
    assert cleaned == ZH_NOTE.replace("10⁹", "10^9")


def test_no_chinese_punctuation_or_degree_sign_is_lost_on_the_real_chinese_file(zh_dev):
    for record in zh_dev:
        cleaned = clean_medical_text(record.text, record.language)
        before, after = Counter(record.text), Counter(cleaned)
        for char in ["，", "。", "：", "；", "（", "）", "？", "！", "、", "℃", "%"]:
            assert after[char] >= before[char], (record.id, char)


@pytest.mark.parametrize("language", ["zh", "en"])
def test_powers_of_ten_stay_readable(language):
    cleaned = clean_medical_text("WBC 12.5×10⁹/L, RBC 4.5×10¹²/L, Na 140 mmol·L⁻¹", language)
    assert "×10^9/L" in cleaned and "×10^12/L" in cleaned and "mmol·L^-1" in cleaned
    assert "109/L" not in cleaned and "1012/L" not in cleaned


def test_a_mixed_chinese_note_is_normalised_to_half_width_text_and_full_width_punctuation():
    note = "ＷＢＣ　１２．５×１０⁹／Ｌ，Ｃ反应蛋白20ｍｇ／Ｌ(偏高).体温39,4℃,10:30复查;①发热 ②咳嗽"
    assert clean_medical_text(note, "zh") == "WBC 12.5×10^9/L，C反应蛋白20mg/L（偏高）。体温39,4℃，10:30复查；①发热 ②咳嗽"


def test_the_language_is_detected_when_not_given():
    assert clean_medical_text("患者发热,咳嗽(3天).") == "患者发热，咳嗽（3天）。"
    assert clean_medical_text("怎么办?!谢谢!!!") == "怎么办？！谢谢！！！"
    assert clean_medical_text("Fever,cough (3 days).") == "Fever,cough (3 days)."


def test_an_english_note_gets_ascii_punctuation_and_a_degree_sign():
    assert clean_medical_text("Ｆｅｖｅｒ　３９℃，ｃｏｕｇｈ（３ ｄａｙｓ）", "en") == "Fever 39°C,cough(3 days)"
    assert clean_medical_text("Temp 38º C, 10˚C, ½ tab of ﬁbrinolytic", "en") == "Temp 38° C, 10°C, 1/2 tab of fibrinolytic"


def test_whitespace_is_tidied_but_line_breaks_stay():
    note = "  Chief complaint:\t chest   pain \r\n\r\n\r\n\n History:  smoker\u00a0 \nExam: normal  "
    assert clean_medical_text(note, "en") == "Chief complaint: chest pain\n\nHistory: smoker\nExam: normal"


def test_cleaning_twice_changes_nothing_more(en_dev, zh_dev):
    for record in [*en_dev[::25], *zh_dev[::5]]:
        once = clean_medical_text(record.text, record.language)
        assert clean_medical_text(once, record.language) == once, record.id


def test_an_unknown_language_is_a_clear_error():
    with pytest.raises(ValueError, match="Unsupported language 'fr'"):
        clean_medical_text("fièvre", "fr")


# ---------------------------------------------------------------------------------------------------- augmentation

ZH_RECORD = Record(
    id="zh-1",
    text="主诉：胸痛2小时\n既往史：高血压10年，急性心肌梗死史，慢性阻塞性肺疾病\n现病史：活动后心肌梗死样胸痛，伴发热",
    diagnosis="急性心肌梗死",
    language="zh",
    treatment="急诊PCI",
    differential=["急性心肌梗死", "主动脉夹层"],
)
EN_RECORD = Record(
    id="en-1",
    patient_id="p-7",
    text="Chief complaint: shortness of breath\nHistory: hypertension, myocardial infarction, COPD and hay fever",
    diagnosis="Congestive heart failure",
    language="en",
    prognosis="Fair",
)


def test_there_are_enough_synonym_groups_in_both_languages():
    chinese = [term for term in SYNONYMS if re.search(r"[\u4e00-\u9fff]", term)]
    assert len(SYNONYMS) >= 30 and len(chinese) >= 15 and len(SYNONYMS) - len(chinese) >= 15
    assert {"心梗", "心肌梗塞"} <= set(SYNONYMS["心肌梗死"]) and "血压高" in SYNONYMS["高血压"]
    assert "DM" in SYNONYMS["糖尿病"] and {"慢阻肺", "COPD"} <= set(SYNONYMS["慢性阻塞性肺疾病"])


@pytest.mark.parametrize("record", [ZH_RECORD, EN_RECORD], ids=["zh", "en"])
def test_an_augmented_record_has_new_wording_and_the_same_labels(record):
    variant = augment_record(record, random.Random(0))
    assert variant.text != record.text
    assert variant.id == f"{record.id}#aug1" and variant.group == record.group
    for field in ("diagnosis", "differential", "treatment", "prognosis", "rationale", "language"):
        assert getattr(variant, field) == getattr(record, field), field
    assert record.text == (ZH_RECORD if record is ZH_RECORD else EN_RECORD).text  # the original is untouched


def test_synonyms_replace_whole_terms_longest_first_and_never_inside_longer_terms():
    for seed in range(40):
        zh = augment_record(ZH_RECORD, random.Random(seed)).text
        # 急性心肌梗死 is a term of its own and stays; 慢性阻塞性肺疾病 is swapped whole, never leaving a fragment.
        assert "急性心肌梗死史" in zh
        assert "慢性阻塞性肺疾病" in zh or "慢阻肺" in zh or "COPD" in zh
        assert "慢性阻塞性COPD" not in zh and "慢性阻塞性慢阻肺" not in zh
        en = augment_record(EN_RECORD, random.Random(seed)).text
        assert "hay fever" in en and "hay pyrexia" not in en
    seen = {augment_record(ZH_RECORD, random.Random(seed)).text.splitlines()[0] for seed in range(40)}
    assert seen >= {"主诉：胸痛2小时", "患者主要症状为：胸痛2小时"}  # the phrasing change of the issue


@pytest.mark.parametrize(
    "text",
    [
        "血压高于正常，妊娠高血压，咳嗽变异性哮喘，身上感觉痒，糖尿病肾病，2型糖尿病",
        "Pulmonary hypertension, chronic fatigue syndrome, heat stroke, feverish, hypertensive, diabetes insipidus",
    ],
)
def test_compounds_and_everyday_words_that_contain_a_synonym_are_left_alone(text):
    record = Record(id="c", text=text, diagnosis="x", language=detect_language(text))
    assert augment_records([record], copies=5, seed=2) == [record]


def test_a_variant_identical_to_its_original_is_dropped():
    plain = Record(id="x", text="Lives with 4 or more people; has hay fever.", diagnosis="URTI", language="en")
    assert augment_records([plain], copies=3) == [plain]


def test_augmentation_is_deterministic_for_a_seed_and_independent_of_order(en_dev):
    records = en_dev[:40]
    first = augment_records(records, copies=2, seed=5)
    assert first == augment_records(records, copies=2, seed=5)
    assert first[: len(records)] == records  # the originals first, unchanged
    reordered = augment_records(records[::-1], copies=2, seed=5)
    assert sorted(first, key=lambda record: record.id) == sorted(reordered, key=lambda record: record.id)
    assert augment_records(records, copies=2, seed=6) != first
    assert all(
        variant.diagnosis == next(r for r in records if r.id == variant.patient_id).diagnosis for variant in first[len(records) :]
    )


def test_training_data_is_augmented_but_validation_data_never_is(tmp_path, zh_dev):
    train_file = tmp_path / "train.jsonl"
    write_jsonl(train_file, [record.to_dict() for record in zh_dev[:120]])
    train, val = load_training_data(train_file, val_fraction=0.25, seed=1, augment=True, augment_copies=2)
    originals = {record.id: record for record in prepare_records(zh_dev[:120])}
    assert val and all("#aug" not in record.id and record == originals[record.id] for record in val)
    variants = [record for record in train if "#aug" in record.id]
    assert len(variants) > len(train) / 3
    assert {record.group for record in variants} <= {record.group for record in train if "#aug" not in record.id}
    assert not {record.group for record in train} & {record.group for record in val}


# ---------------------------------------------------------------------------------------------------- splits


def split_by_id(records, **settings):
    return {record.id: name for name, part in split_records(records, **settings).items() for record in part}


def test_splits_do_not_depend_on_the_order_of_the_file(en_dev):
    shuffled = list(en_dev)
    random.Random(3).shuffle(shuffled)
    assert split_by_id(en_dev, val_fraction=0.1, test_fraction=0.1) == split_by_id(shuffled, val_fraction=0.1, test_fraction=0.1)


def test_another_seed_gives_another_split_of_the_expected_size(en_dev):
    first, second = split_by_id(en_dev, seed=0), split_by_id(en_dev, seed=1)
    assert first != second
    for assignment in (first, second):
        assert 0.07 < Counter(assignment.values())["val"] / len(en_dev) < 0.13
    assert all(split_of(record.id, seed=0) == first[record.id] for record in en_dev[:50])


@pytest.mark.parametrize("name", ["en-dev.jsonl", "zh-dev.jsonl"])
def test_no_patient_or_case_is_in_two_splits_of_the_real_files(name):
    records = read_records(DATA / name)
    splits = split_records(records, val_fraction=0.15, test_fraction=0.1, seed=7)
    groups = {split: {record.group for record in part} for split, part in splits.items()}
    assert all(groups.values())
    assert not groups["train"] & groups["val"] and not groups["train"] & groups["test"] and not groups["val"] & groups["test"]
    assert sum(len(part) for part in splits.values()) == len(records)


def test_all_cases_of_one_patient_share_a_split():
    records = [Record(id=f"case-{n}", patient_id=f"patient-{n % 7}", text=f"case {n}", diagnosis="d") for n in range(70)]
    for seed in range(5):
        placed = {}
        for split, part in split_records(records, val_fraction=0.3, test_fraction=0.2, seed=seed).items():
            for record in part:
                assert placed.setdefault(record.patient_id, split) == split


def test_cases_without_any_id_are_kept_together_by_their_text():
    records = [
        Record(text="Fever and cough  for 3 days.", diagnosis="URTI"),
        Record(text="Fever and cough for 3 days.", diagnosis="URTI"),
    ]
    for seed in range(20):
        splits = split_records(records, val_fraction=0.5, seed=seed)
        assert sorted(len(part) for part in splits.values()) == [0, 0, 2]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"val_fraction": -0.1}, "val_fraction must be from 0 up to"),
        ({"val_fraction": 1.0}, "val_fraction must be from 0 up to"),
        ({"test_fraction": float("nan")}, "test_fraction must be from 0 up to"),
        ({"val_fraction": "0.1"}, "val_fraction must be a number"),
        ({"val_fraction": True}, "val_fraction must be a number"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "nothing is left to train on"),
    ],
)
def test_impossible_fractions_are_a_clear_error(settings, message):
    with pytest.raises(ValueError, match=message):
        split_records([EN_RECORD], **settings)
    with pytest.raises(ValueError, match=message):
        split_of("p-7", **settings)


# ---------------------------------------------------------------------------------------------------- records and pairs


def test_prepared_records_are_cleaned_copies_with_the_labels_only_normalised():
    record = Record(
        id="r1",
        text="65 y/o man c/o SOB  [**Known lastname 4**]",
        diagnosis="  Type 2  diabetes ｍｅｌｌｉｔｕｓ s/p MI ",
        language="en",
        treatment="Metformin 500 mg p.o. b.i.d.",
        prognosis="Good  w/ treatment",
        rationale="h/o polyuria",
        differential=["Type 2 diabetes ｍｅｌｌｉｔｕｓ s/p MI", " MODY "],
    )
    [prepared] = prepare_records([record])
    assert prepared.text == "65 year-old man complains of shortness of breath [NAME]"
    assert prepared.treatment == "Metformin 500 mg by mouth twice daily."
    assert prepared.prognosis == "Good with treatment" and prepared.rationale == "history of polyuria"
    assert prepared.diagnosis == "Type 2 diabetes mellitus s/p MI"  # a label: never expanded, so it matches its differential
    assert prepared.differential == [prepared.diagnosis, "MODY"]
    assert record.text.startswith("65 y/o") and record.differential[1] == " MODY "
    assert prepare_records([record], clean=False) == [record]


@pytest.mark.parametrize("fixture", ["en_dev", "zh_dev"])
def test_a_training_pair_has_the_diagnosis_in_the_target_and_not_in_the_prompt(fixture, request):
    record = next(r for r in prepare_records(request.getfixturevalue(fixture)) if r.diagnosis not in r.text)
    prompt, target = record_pair(record)
    assert record.text in prompt and record.diagnosis not in prompt
    assert record.diagnosis in target.splitlines()[0]
    assert target.rstrip().endswith("### END")


def test_the_differential_of_a_pair_lists_the_other_diagnoses_only():
    record = Record(id="d1", text="Sore throat, runny nose.", diagnosis="URTI", language="en",
                    differential=["URTI", "Cluster headache", "urti", "Anemia"])  # DDXPlus ranks the diagnosis first
    _, target = record_pair(record)
    assert "Differential: 1. Cluster headache; 2. Anemia" in target


def test_a_validation_file_removes_its_patients_from_training(tmp_path, caplog):
    rows = [{"id": f"c{n}", "patient_id": f"p{n}", "text": f"Fever for {n} days", "diagnosis": "URTI"} for n in range(6)]
    train_file = write_jsonl(tmp_path / "train.jsonl", rows)
    val_file = write_jsonl(tmp_path / "val.jsonl", [{**rows[1], "id": "v1"}, {**rows[4], "id": "v4"}])
    with caplog.at_level(logging.WARNING, logger="modeling.dataprep"):
        train, val = load_training_data(train_file, val_file, augment=True)
    assert [record.id for record in val] == ["v1", "v4"]
    assert {record.patient_id for record in train} == {"p0", "p2", "p3", "p5"}
    assert "left out 2 training record(s)" in caplog.text


def test_a_small_file_still_gets_both_sides_and_one_case_cannot_be_split(tmp_path):
    rows = [{"id": f"c{n}", "text": f"Cough for {n} days", "diagnosis": "URTI"} for n in range(4)]
    for seed in range(10):
        train, val = load_training_data(write_jsonl(tmp_path / "small.jsonl", rows), val_fraction=0.1, seed=seed)
        assert train and val and len(train) + len(val) == 4
    with pytest.raises(ValueError, match="one patient or case"):
        load_training_data(write_jsonl(tmp_path / "one.jsonl", rows[:1]))
    assert load_training_data(tmp_path / "one.jsonl", val_fraction=0) == (
        prepare_records(read_records(tmp_path / "one.jsonl")),
        [],
    )


def test_an_unreadable_training_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileFormatError, match="no such file"):
        load_training_data(tmp_path / "missing.jsonl")

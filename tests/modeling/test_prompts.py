import random
import time

import pytest

from modeling.prompts import (
    DISCLAIMER,
    END_MARKER,
    SECTION_TITLES,
    SECTIONS,
    StructuredAnswer,
    build_prompt,
    build_training_example,
    detect_language,
    diagnosis_prompt,
    format_answer,
    parse_answer,
    with_disclaimer,
)

ZH_CASE = (
    "女，1岁\n主要症状：喘息2天\n病史：患儿2天前起病，表现为喘息，起病前有流涕、咳嗽。\n"
    "【既往史】家中有咳嗽患者\n检查结果：鼻咽分泌物呼吸道合胞病毒抗原阳性；胸片示肺过度充气"
)
EN_CASE = (
    "71-year-old man.\nPresenting complaint: sudden breathlessness and palpitations for 28 hours\n"
    "Investigations: filling defect in the pulmonary arteries on CT pulmonary angiography; raised D-dimer"
)
ZH_ANSWER = StructuredAnswer(
    diagnosis="毛细支气管炎",
    differential=["毛细支气管炎", "肺炎", "2型糖尿病", "上呼吸道感染"],
    treatment="以支持治疗为主：鼻腔吸引保持气道通畅，SpO2低于90%–92%时吸氧；不常规使用抗生素。",
    prognosis="病程约1–2周，多数自愈。",
    rationale="婴儿，流涕后喘息，呼吸道合胞病毒抗原阳性。",
    language="zh",
)
EN_ANSWER = StructuredAnswer(
    diagnosis="Pulmonary embolism",
    differential=["Pulmonary embolism", "Type 2 diabetes mellitus", "Hand, foot and mouth disease", "Aortic dissection"],
    treatment="Immediate anticoagulation (LMWH or a DOAC) for at least 3 months; thrombolysis if shocked.",
    prognosis="Most recover well with prompt anticoagulation.",
    rationale="Sudden breathlessness, a filling defect on CTPA and a raised D-dimer.",
    language="en",
)
ANSWERS = {"zh": ZH_ANSWER, "en": EN_ANSWER}
CASES = {"zh": ZH_CASE, "en": EN_CASE}


# ---------------------------------------------------------------------------------------------------- prompt


@pytest.mark.parametrize(("language", "answer_start"), [("zh", "### 回答\n"), ("en", "### Answer\n")])
def test_build_prompt_ends_where_the_answer_begins(language, answer_start):
    assert build_prompt(CASES[language], language).endswith(answer_start)


@pytest.mark.parametrize("language", ["zh", "en"])
def test_build_prompt_puts_the_whole_case_between_the_delimiters(language):
    prompt = build_prompt(f"\n  {CASES[language]}  \n\n", language)
    case_delimiter, answer_delimiter = {"zh": ("### 病例\n", "\n### 回答\n"), "en": ("### Case\n", "\n### Answer\n")}[language]

    assert f"{case_delimiter}{CASES[language]}{answer_delimiter}" in prompt


@pytest.mark.parametrize("language", ["zh", "en"])
def test_build_prompt_names_every_section_in_one_instruction(language):
    instruction = build_prompt(CASES[language], language).splitlines()[1]

    assert all(title in instruction for title in SECTION_TITLES[language].values())


def test_build_prompt_takes_the_language_of_the_case_unless_told():
    assert build_prompt(ZH_CASE).startswith("### 指令\n")
    assert build_prompt(EN_CASE).startswith("### Instruction\n")
    assert build_prompt(ZH_CASE, "en").startswith("### Instruction\n")


def test_build_prompt_accepts_django_language_codes():
    assert build_prompt(EN_CASE, "zh-hans") == build_prompt(EN_CASE, "zh")


def test_build_prompt_stays_compact_for_a_512_token_model():
    for language, case in CASES.items():
        overhead = len(build_prompt(case, language)) - len(case)
        assert overhead < (80 if language == "zh" else 220)


def test_build_prompt_rejects_an_empty_case_and_an_unknown_language():
    with pytest.raises(ValueError, match="empty"):
        build_prompt("  \n ")
    with pytest.raises(ValueError, match="Unsupported language"):
        build_prompt(EN_CASE, "fr")


def test_diagnosis_prompt_continues_the_prompt_to_where_the_diagnosis_begins():
    prompt = build_prompt(ZH_CASE, "zh")
    target = format_answer(ZH_ANSWER, "zh")

    assert diagnosis_prompt(prompt, "zh") + ZH_ANSWER.diagnosis == prompt + target.splitlines()[0]
    assert diagnosis_prompt(build_prompt(EN_CASE, "en"), "en").endswith("### Answer\nDiagnosis: ")


# ---------------------------------------------------------------------------------------------------- target


def test_format_answer_writes_chinese_sections_in_order_and_ends_with_the_end_marker():
    assert format_answer(ZH_ANSWER, "zh") == (
        "【诊断】毛细支气管炎\n"
        "【鉴别诊断】1. 毛细支气管炎 2. 肺炎 3. 2型糖尿病 4. 上呼吸道感染\n"
        "【治疗建议】以支持治疗为主：鼻腔吸引保持气道通畅，SpO2低于90%–92%时吸氧；不常规使用抗生素。\n"
        "【病情预测】病程约1–2周，多数自愈。\n"
        "【依据】婴儿，流涕后喘息，呼吸道合胞病毒抗原阳性。\n"
        "### END"
    )


def test_format_answer_writes_english_sections_in_order_and_ends_with_the_end_marker():
    assert format_answer(EN_ANSWER, "en") == (
        "Diagnosis: Pulmonary embolism\n"
        "Differential: 1. Pulmonary embolism; 2. Type 2 diabetes mellitus; 3. Hand, foot and mouth disease; "
        "4. Aortic dissection\n"
        "Treatment: Immediate anticoagulation (LMWH or a DOAC) for at least 3 months; thrombolysis if shocked.\n"
        "Prognosis: Most recover well with prompt anticoagulation.\n"
        "Rationale: Sudden breathlessness, a filling defect on CTPA and a raised D-dimer.\n"
        "### END"
    )


def test_format_answer_keeps_empty_sections_so_the_layout_never_changes():
    assert format_answer({"diagnosis": "Gout"}, "en") == (
        "Diagnosis: Gout\nDifferential:\nTreatment:\nPrognosis:\nRationale:\n" + END_MARKER
    )


def test_format_answer_is_deterministic_and_takes_a_dict_or_a_structured_answer():
    record = EN_ANSWER.to_dict()

    assert format_answer(record, "en") == format_answer(EN_ANSWER, "en") == format_answer(dict(record), "en")


def test_format_answer_reads_a_knowledge_base_record_whose_prognosis_is_called_course():
    record = {"diagnosis": "Gout", "differential": "Gout; Septic arthritis", "treatment": "NSAIDs", "course": "Recurs."}

    assert format_answer(record, "en").splitlines()[1:4] == [
        "Differential: 1. Gout; 2. Septic arthritis",
        "Treatment: NSAIDs",
        "Prognosis: Recurs.",
    ]


@pytest.mark.parametrize("language", ["zh", "en"])
def test_format_answer_then_parse_answer_round_trips_every_field(language):
    parsed = parse_answer(format_answer(ANSWERS[language], language))

    for section in SECTIONS:
        assert getattr(parsed, section) == getattr(ANSWERS[language], section), section
    assert parsed.language == language
    assert parsed.complete


@pytest.mark.parametrize("language", ["zh", "en"])
def test_build_training_example_pairs_the_prompt_with_the_target(language):
    prompt, target = build_training_example(CASES[language], ANSWERS[language])

    assert prompt == build_prompt(CASES[language], language)
    assert target == format_answer(ANSWERS[language], language)
    assert parse_answer(prompt + target).to_dict() == {**parse_answer(target).to_dict(), "raw": prompt + target}


# ---------------------------------------------------------------------------------------------------- parser


def test_parse_answer_without_headers_keeps_the_raw_text_and_is_incomplete():
    raw = "The patient probably has pneumonia and should get antibiotics."
    answer = parse_answer(raw)

    assert answer.raw == raw
    assert answer.diagnosis == ""
    assert answer.rationale == raw
    assert not answer.complete


def test_parse_answer_with_only_a_diagnosis_leaves_the_rest_empty():
    answer = parse_answer("【诊断】社区获得性肺炎")

    assert answer.diagnosis == "社区获得性肺炎"
    assert (answer.differential, answer.treatment, answer.prognosis, answer.rationale) == ([], "", "", "")
    assert not answer.complete
    assert answer.language == "zh"


def test_parse_answer_reads_headers_in_the_other_language():
    answer = parse_answer("Diagnosis: 肺炎\nDifferential: 1. 肺结核 2. 肺癌\nTreatment: 抗感染治疗", "zh")
    english = parse_answer("诊断：Pneumonia\n鉴别诊断：Tuberculosis; Lung cancer\n治疗建议：Antibiotics", "en")

    assert (answer.diagnosis, answer.differential, answer.treatment) == ("肺炎", ["肺结核", "肺癌"], "抗感染治疗")
    assert (english.diagnosis, english.differential, english.treatment) == (
        "Pneumonia",
        ["Tuberculosis", "Lung cancer"],
        "Antibiotics",
    )
    assert answer.complete and english.complete


def test_parse_answer_reads_markdown_headers():
    raw = (
        "Here is my assessment.\n\n"
        "## Diagnosis\nCommunity-acquired pneumonia\n\n"
        "**Differential diagnoses:**\n- Pulmonary tuberculosis\n- Lung cancer\n\n"
        "**Treatment**: Amoxicillin 1 g three times a day\n"
        "### Prognosis\nGood.\n"
        "- **Rationale:** Fever, cough and consolidation."
    )
    answer = parse_answer(raw)

    assert answer.diagnosis == "Community-acquired pneumonia"
    assert answer.differential == ["Pulmonary tuberculosis", "Lung cancer"]
    assert answer.treatment == "Amoxicillin 1 g three times a day"
    assert answer.prognosis == "Good."
    assert answer.rationale == "Fever, cough and consolidation."
    assert answer.complete


@pytest.mark.parametrize(
    "raw",
    [
        "【诊断】肺炎\n【鉴别诊断】肺结核\n【治疗建议】抗感染",
        "诊断：肺炎\n鉴别诊断：肺结核\n治疗建议：抗感染",
        "诊断:肺炎\n鉴别诊断:肺结核\n治疗:抗感染",
        "一、诊断：肺炎\n二、鉴别诊断：肺结核\n三、治疗方案：抗感染",
        "**诊断**：肺炎\n**鉴别诊断**：肺结核\n**治疗建议**：抗感染",
        "诊断 Diagnosis：肺炎\n鉴别诊断 Differential：肺结核\n治疗建议（Treatment）：抗感染",
        "【诊断】肺炎【鉴别诊断】肺结核【治疗建议】抗感染",
    ],
)
def test_parse_answer_reads_chinese_header_forms(raw):
    answer = parse_answer(raw)

    assert (answer.diagnosis, answer.differential, answer.treatment) == ("肺炎", ["肺结核"], "抗感染")


@pytest.mark.parametrize(
    "raw",
    [
        "Diagnosis: Gout\nDifferential: Septic arthritis\nTreatment: Colchicine",
        "DIAGNOSIS: Gout\nDIFFERENTIAL DIAGNOSIS: Septic arthritis\nTREATMENT PLAN: Colchicine",
        "diagnosis：Gout\ndifferential：Septic arthritis\nmanagement：Colchicine",
        "**Diagnosis** Gout\n**DDx** Septic arthritis\n**Treatment** Colchicine",
        "1. Most likely diagnosis: Gout\n2. Differentials: Septic arthritis\n3. Recommended treatment: Colchicine",
        "[Diagnosis] Gout\n[Differential] Septic arthritis\n[Treatment] Colchicine",
    ],
)
def test_parse_answer_reads_english_header_forms_in_any_case(raw):
    answer = parse_answer(raw)

    assert (answer.diagnosis, answer.differential, answer.treatment) == ("Gout", ["Septic arthritis"], "Colchicine")


def test_parse_answer_accepts_sections_in_any_order():
    answer = parse_answer("Treatment: Colchicine\nRationale: Hot first toe.\nDiagnosis: Gout\nDifferential: Septic arthritis")

    assert (
        answer.to_dict() | {"raw": ""}
        == StructuredAnswer(
            diagnosis="Gout", differential=["Septic arthritis"], treatment="Colchicine", rationale="Hot first toe.", complete=True
        ).to_dict()
    )


def test_parse_answer_does_not_take_a_word_in_a_sentence_for_a_header():
    answer = parse_answer("Diagnosis of exclusion after treatment of the infection.")

    assert answer.diagnosis == answer.treatment == ""


def test_parse_answer_of_an_answer_truncated_mid_section_keeps_what_was_written():
    answer = parse_answer("【诊断】肺炎\n【鉴别诊断】1. 肺结核 2. 肺")

    assert answer.diagnosis == "肺炎"
    assert answer.differential == ["肺结核", "肺"]
    assert not answer.complete


def test_parse_answer_of_an_answer_truncated_mid_header_drops_the_broken_header():
    answer = parse_answer("Diagnosis: Gout\nDifferential: 1. Septic arthritis; 2. Pseudogout\n[Treat")

    assert answer.differential == ["Septic arthritis", "Pseudogout"]
    assert answer.treatment == ""


def test_parse_answer_of_an_empty_string_is_empty_and_incomplete():
    answer = parse_answer("")

    assert answer == StructuredAnswer(raw="", language="en")
    assert parse_answer(None).raw == ""


def test_parse_answer_puts_text_before_the_first_header_into_the_rationale_only_when_there_is_no_rationale():
    without = parse_answer("Classic gout.\nDiagnosis: Gout")
    with_rationale = parse_answer("Classic gout.\nDiagnosis: Gout\nRationale: Hot first toe.")
    with_empty_rationale = parse_answer("Classic gout.\nDiagnosis: Gout\nRationale:")

    assert without.rationale == "Classic gout."
    assert with_rationale.rationale == "Hot first toe."
    assert with_empty_rationale.rationale == ""


def test_parse_answer_stops_at_the_end_marker_and_at_a_new_example():
    answer = parse_answer("Diagnosis: Gout\nTreatment: Colchicine\n### END\nDiagnosis: Lupus")
    looping = parse_answer("【诊断】痛风\n【治疗建议】秋水仙碱\n### 病例\n男，60岁\n### 回答\n【诊断】红斑狼疮")

    assert (answer.diagnosis, answer.treatment) == ("Gout", "Colchicine")
    assert (looping.diagnosis, looping.treatment) == ("痛风", "秋水仙碱")


def test_parse_answer_reads_only_the_answer_when_the_prompt_is_echoed():
    answer = parse_answer(build_prompt(ZH_CASE) + "【诊断】毛细支气管炎</s>【诊断】肺炎")

    assert answer.diagnosis == "毛细支气管炎"
    assert answer.rationale == ""


def test_parse_answer_keeps_the_first_written_copy_of_a_repeated_section():
    answer = parse_answer("## Diagnosis\n\n**Diagnosis:** Gout\nTreatment: Colchicine\nDiagnosis: Gout gout gout")

    assert answer.diagnosis == "Gout"


def test_parse_answer_drops_a_disclaimer_the_model_wrote_itself():
    answer = parse_answer("Diagnosis: Gout\nRationale: Hot toe.\nDisclaimer: I am not a doctor.")

    assert answer.rationale == "Hot toe."


def test_parse_answer_takes_the_language_given_or_detects_it():
    assert parse_answer("Diagnosis: 肺炎，病程较长", "en").language == "en"
    assert parse_answer("Diagnosis: 肺炎，病程较长").language == "zh"
    assert parse_answer("Diagnosis: Gout", "klingon").language == "en"


def test_parse_answer_is_complete_only_with_a_diagnosis_a_differential_and_a_treatment():
    lines = ["Diagnosis: Gout", "Differential: Septic arthritis", "Treatment: Colchicine", "Prognosis: Recurs."]

    assert parse_answer("\n".join(lines)).complete
    for missing in lines[:3]:
        assert not parse_answer("\n".join(line for line in lines if line != missing)).complete
    assert parse_answer("\n".join(lines[:3])).complete


def test_parse_answer_never_raises_on_noise():
    rng = random.Random(0)
    alphabet = [
        "【",
        "】",
        "诊断",
        "鉴别",
        "Diagnosis",
        ":",
        "：",
        "**",
        "#",
        "\n",
        " ",
        "1.",
        "(2)",
        "、",
        ";",
        "[",
        "]",
        "a",
        "肺",
    ]
    for _ in range(500):
        raw = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        answer = parse_answer(raw)
        assert answer.raw == raw
        assert answer.complete == bool(answer.diagnosis and answer.differential and answer.treatment)


@pytest.mark.parametrize("raw", [" " * 20_000, "\t " * 10_000 + "诊断", "【 " * 10_000, "- " * 10_000])
def test_parse_answer_stays_fast_on_a_long_run_of_whitespace_or_markup(raw):
    started = time.perf_counter()
    parse_answer(raw)

    assert time.perf_counter() - started < 1


# ---------------------------------------------------------------------------------------------------- differential


@pytest.mark.parametrize(
    "written",
    [
        "1. 肺炎 2. 肺结核 3. 肺癌",
        "1.肺炎 2.肺结核 3.肺癌",
        "1、肺炎 2、肺结核 3、肺癌",
        "(1) 肺炎 (2) 肺结核 (3) 肺癌",
        "（1）肺炎（2）肺结核（3）肺癌",
        "1) 肺炎\n2) 肺结核\n3) 肺癌",
        "①肺炎 ②肺结核 ③肺癌",
        "- 肺炎\n- 肺结核\n- 肺癌",
        "• 肺炎\n• 肺结核\n• 肺癌",
        "肺炎；肺结核；肺癌。",
        "肺炎; 肺结核; 肺癌",
        "肺炎、肺结核、肺癌",
        "肺炎\n肺结核\n\n肺癌",
        "\n1. **肺炎**\n2. 肺结核。\n3. 肺癌",
    ],
)
def test_differential_is_split_on_numbering_bullets_semicolons_enumeration_commas_and_newlines(written):
    assert parse_answer(f"【鉴别诊断】{written}").differential == ["肺炎", "肺结核", "肺癌"]


def test_differential_keeps_numbers_commas_and_brackets_that_belong_to_a_name():
    answer = parse_answer(
        "Differential: 1. Type 2 diabetes mellitus; 2. Hand, foot and mouth disease; 3. Hypokalaemia (K 2.9 mmol/L)"
    )

    assert answer.differential == ["Type 2 diabetes mellitus", "Hand, foot and mouth disease", "Hypokalaemia (K 2.9 mmol/L)"]
    assert parse_answer("鉴别诊断：2型糖尿病、肺炎（细菌性、病毒性）").differential == ["2型糖尿病", "肺炎（细菌性、病毒性）"]


def test_differential_items_are_deduplicated_in_order():
    answer = parse_answer("Differential: 1. Gout; 2. Septic arthritis; 3. gout; 4. Septic  arthritis.")

    assert answer.differential == ["Gout", "Septic arthritis"]


def test_differential_starts_with_the_diagnosis_only_when_the_model_wrote_it_there():
    assert parse_answer("Diagnosis: Gout\nDifferential: Pseudogout; Cellulitis").differential == ["Pseudogout", "Cellulitis"]
    assert parse_answer("Diagnosis: Gout\nDifferential: Gout; Pseudogout").differential == ["Gout", "Pseudogout"]


# ---------------------------------------------------------------------------------------------------- disclaimer


@pytest.mark.parametrize("language", ["zh", "en"])
def test_with_disclaimer_appends_the_disclaimer_in_the_answer_language(language):
    answer_text = "Diagnosis: Gout"
    shown = with_disclaimer(answer_text, language)

    assert shown == f"{answer_text}\n\n{DISCLAIMER[language]}"
    other = "en" if language == "zh" else "zh"
    assert DISCLAIMER[other] not in shown


def test_with_disclaimer_adds_it_once_and_not_after_the_end_marker():
    shown = with_disclaimer(format_answer(EN_ANSWER, "en"), "en")

    assert END_MARKER not in shown
    assert with_disclaimer(shown, "en") == shown
    assert with_disclaimer("", "zh") == DISCLAIMER["zh"]


@pytest.mark.parametrize("language", ["zh", "en"])
def test_the_disclaimer_is_not_part_of_the_training_target(language):
    target = format_answer(ANSWERS[language], language)

    assert DISCLAIMER[language] not in target
    assert "免责声明" not in target and "Disclaimer" not in target


def test_the_disclaimer_says_it_is_an_ai_suggestion_to_be_verified_and_not_for_emergencies():
    assert all(word in DISCLAIMER["zh"] for word in ("人工智能", "不构成医疗诊断", "医师核实", "急"))
    assert all(word in DISCLAIMER["en"] for word in ("AI-generated", "not a diagnosis", "qualified physician", "emergency"))


def test_a_stored_answer_shown_with_its_disclaimer_parses_back_without_it():
    shown = with_disclaimer(format_answer(ZH_ANSWER, "zh").removesuffix(END_MARKER), "zh")

    assert parse_answer(shown).rationale == ZH_ANSWER.rationale


# ---------------------------------------------------------------------------------------------------- language


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("患者胸痛2小时", "zh"),
        ("头痛", "zh"),
        ("WBC 12.5×10^9/L，CRP 56 mg/L，ALT 40 U/L，胸片示肺炎", "zh"),
        ("Chest pain for 2 hours", "en"),
        ("Patient [NAME_1] reports fever; her mother calls it 发烧 and gave paracetamol for three days.", "en"),
        ("", "en"),
        ("12.5 mmol/L", "en"),
    ],
)
def test_detect_language(text, language):
    assert detect_language(text) == language


def test_structured_answer_to_dict_has_every_field():
    assert StructuredAnswer(diagnosis="Gout", differential=["Gout"]).to_dict() == {
        "diagnosis": "Gout",
        "differential": ["Gout"],
        "treatment": "",
        "prognosis": "",
        "rationale": "",
        "raw": "",
        "complete": False,
        "language": "en",
    }


@pytest.mark.parametrize(("written", "diagnosis", "differential"), [
    ("Diagnosis: Pneumonia; 2. Bronchiectasis; 3. Panic attack\nTreatment: rest", "Pneumonia",
     ["Bronchiectasis", "Panic attack"]),
    ("Diagnosis: URTI; 2. Influenza", "URTI", ["Influenza"]),
    ("【诊断】肺炎 2. 支气管扩张 3. 哮喘\n【治疗建议】抗感染", "肺炎", ["支气管扩张", "哮喘"]),
    # Numbers that belong to the diagnosis stay in it.
    ("Diagnosis: Type 2 diabetes mellitus", "Type 2 diabetes mellitus", []),
    ("Diagnosis: CKD stage 2. eGFR 70", "CKD stage 2. eGFR 70", []),
    ("【诊断】2型糖尿病", "2型糖尿病", []),
])
def test_a_diagnosis_line_that_runs_on_into_the_differential_is_split(written, diagnosis, differential):
    answer = parse_answer(written)
    assert answer.diagnosis == diagnosis and answer.differential == differential

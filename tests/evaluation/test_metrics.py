"""Automatic-evaluation metrics against values worked out by hand on small fixed sets (Chinese included)."""

import pytest

from evaluation.baseline import BaselineError, LabelledText, TfidfBaseline
from evaluation.metrics import (
    CasePrediction,
    Normaliser,
    compare,
    ddf1,
    frequent_errors,
    mcnemar,
    summarise,
    term_precision,
)


def case(case_id, gold, diagnosis, ranked=(), language="en", differential=(), answer="", gold_text=""):
    return CasePrediction(case_id=str(case_id), language=language, gold=gold, diagnosis=diagnosis,
                          ranked=list(ranked), gold_differential=list(differential), answer_text=answer,
                          gold_text=gold_text)


def test_diagnoses_are_compared_as_concepts_across_case_punctuation_synonyms_codes_and_languages():
    normalise = Normaliser()
    assert normalise("  Acute  myocardial infarction. ") == normalise("acute myocardial infarction")
    assert normalise("急性心肌梗死") == normalise("Acute myocardial infarction")  # one condition in both languages
    assert normalise("I21.9") == normalise("急性心肌梗死")  # its ICD-10 code
    assert normalise("ＵＲＴＩ") == normalise("urti")  # full width folded
    assert normalise("Pneumonia") != normalise("Acute myocardial infarction")
    # A case set's own aliases (DDXPlus gives ICD-10 codes of its pathologies) join the knowledge base's.
    assert Normaliser({"J06.9": "URTI"})("J06.9") == Normaliser()("URTI")


def test_a_small_english_and_chinese_set_scores_as_worked_out_by_hand():
    cases = [
        # right, and first in the ranking
        case(1, "Asthma", "asthma", [("Asthma", 0.6), ("Pneumonia", 0.3), ("GERD", 0.1)]),
        # written diagnosis wrong; gold second in the ranking
        case(2, "Pneumonia", "Asthma", [("Asthma", 0.5), ("Pneumonia", 0.4), ("GERD", 0.1)]),
        # wrong, gold third
        case(3, "GERD", "Pneumonia", [("Pneumonia", 0.7), ("Asthma", 0.2), ("GERD", 0.1)]),
        # Chinese: right through the synonym of the knowledge base (急性心梗 is 急性心肌梗死), top of the ranking
        case(4, "急性心肌梗死", "急性心梗", [("急性心肌梗死", 0.9), ("肺炎", 0.1)], language="zh"),
    ]
    report = summarise(cases, lexicon=[])
    overall = report["overall"]
    assert report["n"] == 4
    assert overall["accuracy"]["value"] == pytest.approx(2 / 4)
    assert overall["gtpa@1"]["value"] == pytest.approx(2 / 4)
    assert overall["gtpa@3"]["value"] == pytest.approx(4 / 4)
    assert overall["accuracy"]["low"] <= 0.5 <= overall["accuracy"]["high"]
    # Gold classes asthma, pneumonia, GERD, AMI; predictions asthma, asthma, pneumonia, AMI.
    # per-class F1: asthma 2/3 (P 1/2, R 1), pneumonia 0, GERD 0, AMI 1 → macro (2/3 + 1) / 4; weighted the same
    # (one case per class).
    assert overall["f1_macro"] == pytest.approx((2 / 3 + 1) / 4)
    assert overall["f1_weighted"] == pytest.approx((2 / 3 + 1) / 4)
    assert report["by_language"]["zh"]["accuracy"]["value"] == 1.0
    assert report["by_language"]["en"]["accuracy"]["value"] == pytest.approx(1 / 3)
    assert report["by_language"]["en"]["n"] == 3


def test_an_empty_written_diagnosis_is_wrong_even_when_the_gold_label_is_empty_after_folding():
    report = summarise([case(1, "Asthma", "   ", [("Asthma", 1.0)])], lexicon=[])
    assert report["overall"]["accuracy"]["value"] == 0.0
    assert report["overall"]["gtpa@1"]["value"] == 1.0


def test_differential_f1_against_the_gold_differential():
    # Predicted differential: the ranked labels with probability >= 0.05 → {URTI, Bronchitis, Pneumonia}.
    # Gold {URTI, Bronchitis, Anemia, Chagas}: 2 shared → P 2/3, R 2/4, F1 = 2·(2/3·1/2)/(2/3+1/2) = 4/7.
    prediction = case(1, "URTI", "URTI", [("URTI", 0.5), ("Bronchitis", 0.3), ("Pneumonia", 0.17), ("GERD", 0.03)],
                      differential=["URTI", "Bronchitis", "Anemia", "Chagas"])
    assert ddf1(prediction, Normaliser()) == pytest.approx(4 / 7)
    assert ddf1(case(2, "URTI", "URTI", [("URTI", 1.0)]), Normaliser()) is None  # no gold differential: undefined
    report = summarise([prediction, case(2, "URTI", "URTI", [("URTI", 1.0)])], lexicon=[])
    assert report["overall"]["ddf1"] == {"value": pytest.approx(4 / 7), "low": pytest.approx(4 / 7),
                                         "high": pytest.approx(4 / 7), "n": 1}


def test_medical_term_precision_counts_answer_terms_found_in_the_gold_answer():
    lexicon = ["chest pain", "pain", "aspirin", "fever", "胸痛", "阿司匹林"]
    english = case(1, "AMI", "AMI", answer="Chest pain; give aspirin; fever.", gold_text="AMI. Aspirin at once.")
    # terms in the answer: chest pain (pain inside it is not counted again), aspirin, fever → aspirin only in gold: 1/3
    assert term_precision(english, lexicon) == pytest.approx(1 / 3)
    chinese = case(2, "急性心肌梗死", "急性心肌梗死", language="zh", answer="胸痛，予阿司匹林。", gold_text="阿司匹林嚼服")
    assert term_precision(chinese, lexicon) == pytest.approx(1 / 2)
    assert term_precision(case(3, "x", "x", answer="nothing medical", gold_text="x"), lexicon) is None


def test_mcnemar_uses_only_the_cases_where_the_two_systems_differ():
    a = [True] * 10 + [True] * 1 + [False] * 9 + [False] * 5
    b = [True] * 10 + [False] * 1 + [True] * 9 + [False] * 5
    result = mcnemar(a, b)
    assert (result["only_a"], result["only_b"], result["n"]) == (1, 9, 25)
    # exact two-sided binomial: P(X <= 1 | n=10, p=1/2) · 2 = 2 · 11/1024
    assert result["p_value"] == pytest.approx(22 / 1024)
    assert mcnemar([True, False], [True, False])["p_value"] == 1.0
    with pytest.raises(ValueError):
        mcnemar([True], [True, False])


def test_two_systems_are_compared_on_the_same_cases():
    gold = ["Asthma", "GERD", "Pneumonia", "Asthma"]
    a = [case(i, g, "GERD", [("GERD", 0.9), (g, 0.1)]) for i, g in enumerate(gold)]
    b = [case(i, g, g, [(g, 0.9), ("GERD", 0.1)]) for i, g in enumerate(gold)] + [case(99, "GERD", "GERD", [("GERD", 1)])]
    result = compare(a, b, lexicon=[])
    assert result["n"] == 4  # case 99 has no partner
    assert result["accuracy"]["difference"] == pytest.approx(1 - 1 / 4)
    assert (result["accuracy"]["only_a"], result["accuracy"]["only_b"]) == (0, 3)
    assert result["gtpa@1"]["difference"] == pytest.approx(0.75)
    assert result["gtpa@3"]["difference"] == 0.0


def test_frequent_errors_list_the_most_common_confusions_first():
    cases = [case(1, "Asthma", "GERD"), case(2, "Asthma", "GERD"), case(3, "Pneumonia", ""), case(4, "GERD", "GERD")]
    assert frequent_errors(cases) == [
        {"gold": "Asthma", "predicted": "GERD", "count": 2}, {"gold": "Pneumonia", "predicted": "∅", "count": 1},
    ]


def test_the_baseline_learns_words_in_english_and_characters_in_chinese():
    train = [LabelledText(t, label, "en") for t, label in [
        ("wheeze and cough at night", "Asthma"), ("wheeze after exercise", "Asthma"), ("night wheeze", "Asthma"),
        ("burning behind the breastbone after meals", "GERD"), ("heartburn after meals", "GERD"),
        ("acid taste and heartburn", "GERD"),
    ]] + [LabelledText(t, label, "zh") for t, label in [
        ("孩子流鼻涕打喷嚏", "过敏性鼻炎"), ("鼻痒打喷嚏", "过敏性鼻炎"), ("反复喷嚏鼻塞", "过敏性鼻炎"),
        ("拉肚子水样便", "腹泻"), ("大便稀水样", "腹泻"), ("腹泻三天稀便", "腹泻"),
    ]]
    model = TfidfBaseline().fit(train)
    assert model.ranked("wheeze when running", "en")[0][0] == "Asthma"
    assert model.ranked("heartburn after a big meal", "en")[0][0] == "GERD"
    assert model.ranked("早上打喷嚏", "zh")[0][0] == "过敏性鼻炎"  # no spaces: characters carry it
    assert model.ranked("水样便两天", "zh")[0][0] == "腹泻"
    ranked = model.ranked("wheeze", "en")
    assert sum(p for _, p in ranked) == pytest.approx(1.0)
    prediction = model.predict("7", "heartburn", "en", "GERD")
    assert prediction.diagnosis == "GERD" and prediction.case_id == "7"


def test_the_baseline_needs_cases_to_learn_from():
    with pytest.raises(BaselineError):
        TfidfBaseline().fit([LabelledText("one", "A", "en")])
    single = TfidfBaseline().fit([LabelledText("one", "A", "en"), LabelledText("two", "A", "en")])
    assert single.ranked("anything", "en") == [("A", 1.0)]

"""A rationale's findings checked against the note, in both languages, with negation."""

from modeling.grounding import CONTRADICTED, SUPPORTED, UNSUPPORTED, check_rationale, cited_findings

ZH_NOTE = "患者男，56岁，胸骨后压榨样疼痛2小时，伴大汗，无发热，否认咳嗽。心电图ST段抬高。"
EN_NOTE = "A 56-year-old man with crushing retrosternal chest pain for 2 hours and diaphoresis. No fever. Denies cough."


def statuses(claims):
    return {claim.finding: claim.status for claim in claims}


def test_chinese_findings_are_supported_contradicted_or_missing():
    claims = statuses(check_rationale("胸骨后压榨样疼痛伴大汗、发热、咳嗽、咯血，支持急性心肌梗死。", ZH_NOTE, "zh"))
    assert claims["胸骨后压榨样疼痛"] == SUPPORTED and claims["大汗"] == SUPPORTED
    assert claims["发热"] == CONTRADICTED and claims["咳嗽"] == CONTRADICTED
    assert claims["咯血"] == UNSUPPORTED


def test_english_findings_are_supported_contradicted_or_missing():
    claims = statuses(check_rationale(
        "Key findings: crushing retrosternal chest pain, diaphoresis, fever, cough and shortness of breath.", EN_NOTE, "en"))
    assert claims["crushing retrosternal chest pain"] == SUPPORTED and claims["diaphoresis"] == SUPPORTED
    assert claims["fever"] == CONTRADICTED and claims["cough"] == CONTRADICTED
    assert claims["shortness of breath"] == UNSUPPORTED


def test_the_diagnosis_a_rationale_argues_for_is_not_a_finding():
    assert "急性心肌梗死" not in cited_findings("支持急性心肌梗死。", "zh")
    assert check_rationale("Consistent with acute myocardial infarction.", EN_NOTE, "en") == []


def test_a_finding_affirmed_anywhere_in_the_note_is_supported():
    assert statuses(check_rationale("发热。", "无咳嗽。发热3天。", "zh")) == {"发热": SUPPORTED}

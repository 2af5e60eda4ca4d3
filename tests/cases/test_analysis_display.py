"""What the case page and the API make of an answer the checks found wanting: never a broken or contradictory answer
presented as a confident one."""

import pytest
from django.urls import reverse
from django.utils import timezone

from cases.models import Analysis
from cases.services import CaseInput, case_create
from modeling.models import ModelVersion

pytestmark = pytest.mark.django_db


@pytest.fixture
def analysis(doctor):
    case = case_create(author=doctor, data=CaseInput(texts={"chief_complaint": "胸痛2小时。"}))
    version = ModelVersion.objects.create(name="v", base_model="/m")
    return Analysis.objects.create(
        case=case, model_version=version, status=Analysis.Status.DONE, diagnosis="Anaphylactic shock",
        differential=[{"name": "Acute pericarditis", "probability": 0.5}, {"name": "Angina", "probability": 0.2}],
        treatment="dry dry dry drykenes", prognosis="Good with treatment.", rationale="",
        quality={"diagnosis": "ok", "treatment": "degenerate", "prognosis": "ok", "rationale": "empty"},
        ranking_disagrees=True, needs_review=True, started_at=timezone.now(), finished_at=timezone.now(),
    )


def test_a_disagreement_is_said_plainly_with_both_diagnoses(client, doctor, analysis):
    client.force_login(doctor)
    page = client.get(reverse("cases:detail", args=[analysis.case.pk])).content.decode()
    assert 'data-testid="ranking-disagrees"' in page
    assert "the text says “Anaphylactic shock”, the ranking puts “Acute pericarditis” first" in page


def test_a_degenerate_section_is_shown_as_no_usable_answer_never_as_text(client, doctor, analysis):
    client.force_login(doctor)
    page = client.get(reverse("cases:detail", args=[analysis.case.pk])).content.decode()
    assert 'data-testid="unusable-treatment"' in page and "No usable answer for this section." in page
    assert "drykenes" not in page
    assert "Good with treatment." in page  # a usable section is shown


def test_an_agreeing_answer_carries_no_warning(client, doctor, analysis):
    Analysis.objects.filter(pk=analysis.pk).update(ranking_disagrees=False, needs_review=False, quality={})
    client.force_login(doctor)
    page = client.get(reverse("cases:detail", args=[analysis.case.pk])).content.decode()
    assert 'data-testid="ranking-disagrees"' not in page and 'data-testid="unusable-' not in page


def test_the_api_reports_the_checks(api_client, doctor, analysis):
    api_client.force_authenticate(doctor)
    url = reverse("api-analysis-detail", args=[analysis.pk])
    body = api_client.get(url).json()
    assert body["ranking_disagrees"] is True and body["needs_review"] is True
    assert body["quality"]["treatment"] == "degenerate"


def test_sex_and_age_left_out_of_the_form_are_read_from_the_pasted_note(doctor):
    case = case_create(author=doctor, data=CaseInput(texts={"free_text": "男，23岁，转移性右下腹痛1天。"}))
    assert (case.sex, case.age) == ("M", 23)
    given = case_create(author=doctor, data=CaseInput(sex="F", age=40, texts={"free_text": "男，23岁，腹痛。"}))
    assert (given.sex, given.age) == ("F", 40)  # what the doctor entered wins


def test_the_doctor_corrects_sex_and_age_on_the_case_page(client, doctor, other_doctor, analysis):
    client.force_login(doctor)
    page = client.post(reverse("cases:facts", args=[analysis.case.pk]), {"sex": "F", "age": "31"}, follow=True)
    assert "Sex and age saved." in page.content.decode()
    analysis.case.refresh_from_db()
    assert (analysis.case.sex, analysis.case.age) == ("F", 31)
    bad = client.post(reverse("cases:facts", args=[analysis.case.pk]), {"sex": "F", "age": "abc"}, follow=True)
    assert "Enter an age from 0 to 130." in bad.content.decode()
    client.force_login(other_doctor)
    assert client.post(reverse("cases:facts", args=[analysis.case.pk]), {"sex": "M", "age": "5"}).status_code == 404
    analysis.case.refresh_from_db()
    assert (analysis.case.sex, analysis.case.age) == ("F", 31)


def test_excluded_diagnoses_are_listed_with_their_reason(client, doctor, analysis):
    Analysis.objects.filter(pk=analysis.pk).update(excluded=[
        {"name": "子痫前期", "reason": "妊娠相关疾病，仅见于育龄女性"}])
    client.force_login(doctor)
    page = client.get(reverse("cases:detail", args=[analysis.case.pk])).content.decode()
    assert 'data-testid="excluded"' in page and "子痫前期" in page and "妊娠相关疾病，仅见于育龄女性" in page


def test_a_red_flag_banner_quotes_the_note_on_the_case_page_and_in_the_api(client, api_client, doctor):
    case = case_create(author=doctor, data=CaseInput(texts={
        "chief_complaint": "胸痛2小时。", "tests_imaging": "心电图示V2-V4导联ST段抬高。"}))
    quiet = case_create(author=doctor, data=CaseInput(texts={"chief_complaint": "咳嗽3天，否认胸痛。"}))
    client.force_login(doctor)
    page = client.get(reverse("cases:detail", args=[case.pk])).content.decode()
    assert 'data-flag="st_elevation_chest_pain"' in page and "心电图示V2-V4导联ST段抬高" in page
    assert 'data-testid="red-flag"' not in client.get(reverse("cases:detail", args=[quiet.pk])).content.decode()
    api_client.force_authenticate(doctor)
    flags = api_client.get(f"/api/v1/cases/{case.pk}/").json()["red_flags"]
    assert [flag["id"] for flag in flags] == ["st_elevation_chest_pain"]
    assert api_client.get(f"/api/v1/cases/{quiet.pk}/").json()["red_flags"] == []


def test_rationale_findings_the_note_does_not_support_are_marked(client, doctor, analysis):
    Analysis.objects.filter(pk=analysis.pk).update(rationale="胸痛伴发热、腹泻。", quality={}, grounding=[
        {"finding": "胸痛", "status": "supported"}, {"finding": "发热", "status": "contradicted"},
        {"finding": "腹泻", "status": "unsupported"}])
    client.force_login(doctor)
    page = client.get(reverse("cases:detail", args=[analysis.case.pk])).content.decode()
    assert 'data-testid="ungrounded"' in page
    assert "“发热”: the note says it is absent." in page and "“腹泻”: not in the note." in page
    assert "“胸痛”" not in page

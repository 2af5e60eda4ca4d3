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

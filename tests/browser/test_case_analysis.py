"""A doctor submits a case and watches the model's answer appear, without reloading the page."""

import pytest
from playwright.sync_api import Page, expect

from modeling.services import model_version_register
from tests.browser.test_case_intake import log_in_in_english

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_diagnosis_and_disclaimer_appear_on_the_case_page(page: Page, live_server, doctor, tiny_model_dir, worker):
    model_version_register(name="tiny-test", base_model=str(tiny_model_dir), label_set=["angina", "asthma", "influenza"],
                           activate=True)
    log_in_in_english(page, live_server, doctor)
    page.goto(f"{live_server.url}/cases/new/")
    page.fill("#id_chief_complaint", "Chest pain for 2 hours.")
    page.fill("#id_present_illness", "Pressure-like pain on exertion, relieved by rest.")
    page.get_by_role("button", name="Submit case").click()

    panel = page.get_by_test_id("analysis")
    expect(panel).to_be_visible()
    expect(page.get_by_test_id("analysis-status")).to_have_text("Done", timeout=60_000)
    expect(page.get_by_test_id("diagnosis")).not_to_be_empty()
    expect(page.get_by_test_id("differential").locator("li")).to_have_count(3)
    expect(page.get_by_test_id("disclaimer")).to_contain_text("not a diagnosis")


def test_a_disagreement_and_an_unusable_section_are_plain_on_the_page(page: Page, live_server, doctor):
    from django.utils import timezone

    from cases.models import Analysis
    from cases.services import CaseInput, case_create
    from modeling.models import ModelVersion

    case = case_create(author=doctor, data=CaseInput(texts={"chief_complaint": "Chest pain for 2 hours."}))
    Analysis.objects.create(
        case=case, model_version=ModelVersion.objects.create(name="v", base_model="/m"), status=Analysis.Status.DONE,
        diagnosis="Anaphylactic shock", differential=[{"name": "Acute pericarditis", "probability": 0.6}],
        treatment="dry dry dry drykenes", quality={"diagnosis": "ok", "treatment": "degenerate"}, ranking_disagrees=True,
        needs_review=True, started_at=timezone.now(), finished_at=timezone.now(),
    )
    log_in_in_english(page, live_server, doctor)
    page.goto(f"{live_server.url}/cases/{case.pk}/")
    expect(page.get_by_test_id("ranking-disagrees")).to_contain_text("Anaphylactic shock")
    expect(page.get_by_test_id("ranking-disagrees")).to_contain_text("Acute pericarditis")
    expect(page.get_by_test_id("unusable-treatment")).to_have_text("No usable answer for this section.")
    expect(page.locator("body")).not_to_contain_text("drykenes")

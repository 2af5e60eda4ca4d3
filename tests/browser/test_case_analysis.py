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

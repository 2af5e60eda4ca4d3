"""An ML admin evaluates a candidate from its version page, reads the report beside the baseline, looks at the wrong
predictions, and activates the candidate after a confirmation that compares it with the active version."""

import pytest
from playwright.sync_api import Page, expect

from cases.services import case_set_import
from evaluation.services import evaluation_run_create, evaluation_run_execute
from modeling.selectors import model_version_active
from modeling.services import model_version_register
from tests.browser.test_case_intake import log_in_in_english
from tests.conftest import celery_worker_on
from tests.tiny_models import case_records, write_jsonl

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
LABELS = ["心绞痛", "支气管炎", "流感", "angina", "bronchitis", "influenza"]


def test_an_ml_admin_evaluates_a_candidate_and_activates_it_on_the_comparison(page: Page, live_server, ml_admin,
                                                                               tiny_model_dir, lora_adapter_dir, tmp_path):
    active = model_version_register(name="tiny-base", base_model=str(tiny_model_dir), label_set=LABELS, activate=True)
    candidate = model_version_register(name="tiny-lora", base_model=str(tiny_model_dir), adapter=str(lora_adapter_dir),
                                       label_set=LABELS)
    case_set = case_set_import(path=write_jsonl(case_records(10), tmp_path / "held-out.jsonl"), case_set="held-out",
                               actor=ml_admin).case_set
    earlier = evaluation_run_create(version=active, case_set=case_set, started_by=ml_admin, max_new_tokens=8,
                                    enqueue=False)
    evaluation_run_execute(run_id=earlier.pk)
    log_in_in_english(page, live_server, ml_admin)

    page.goto(f"{live_server.url}/admin/modeling/modelversion/{candidate.pk}/change/")
    expect(page.get_by_test_id("version-status")).to_have_text("Candidate")
    page.get_by_test_id("evaluate-version").click()
    expect(page.get_by_label("Model version")).to_have_value(str(candidate.pk))  # from the version page
    page.locator("#id_case_set").select_option(label="held-out")
    page.fill("#id_max_new_tokens", "8")
    with celery_worker_on("evaluation"):
        page.get_by_role("button", name="Start the evaluation run").click()
        status = page.get_by_test_id("run-status")
        expect(status).to_have_text("Succeeded", timeout=90_000)  # the page refreshes itself
    expect(page.get_by_test_id("run-count")).to_have_text("10 of 10 cases predicted")
    expect(page.get_by_test_id("run-metrics")).to_contain_text("Baseline (TF-IDF + LR)")
    expect(page.get_by_test_id("baseline-verdict")).to_be_visible()
    expect(page.get_by_test_id("run-chart")).to_be_visible()

    page.get_by_role("link", name="Wrong ones only").click()
    expect(page.get_by_test_id("predictions")).to_be_visible()  # the new page, before counting its rows
    rows = page.get_by_test_id("prediction")
    wrong = rows.count()
    expect(page.get_by_test_id("prediction-filter")).to_contain_text(f"({wrong} case")
    for row in rows.all():
        expect(row).to_contain_text("✗")

    page.goto(f"{live_server.url}/admin/modeling/modelversion/{candidate.pk}/change/")
    page.get_by_test_id("activate-version").click()
    expect(page.get_by_test_id("activation-comparison")).to_contain_text("held-out")  # both were evaluated on it
    page.get_by_test_id("confirm-activation").click()
    expect(page.get_by_test_id("version-status")).to_have_text("Active")
    assert model_version_active() == candidate
    expect(page.get_by_test_id("rollback-version")).to_have_text("Roll back to tiny-base…")

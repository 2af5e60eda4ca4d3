"""An ML admin starts a training run in the admin and watches its progress bar and loss curve until it finishes."""

import pytest
from playwright.sync_api import Page, expect

from cases.services import case_set_import
from modeling.services import model_version_register
from tests.browser.test_case_intake import log_in_in_english
from tests.modeling.test_training_run import (  # noqa: F401 (fixtures)
    LABELS,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("training_dir")]


def test_an_ml_admin_starts_a_run_and_watches_it_train(page: Page, live_server, ml_admin, tiny_model_dir, training_jsonl,
                                                      training_worker):
    version = model_version_register(name="tiny", base_model=str(tiny_model_dir), label_set=LABELS, activate=True)
    case_set_import(path=training_jsonl, case_set="tiny-cases")
    log_in_in_english(page, live_server, ml_admin)

    page.goto(f"{live_server.url}/admin/modeling/trainingrun/")
    page.get_by_role("link", name="Start a training run").click()
    page.get_by_label("Training data").select_option(label="tiny-cases (80 cases)")
    expect(page.get_by_label("Base version")).to_have_value(str(version.pk))  # the active version by default
    # Long enough (a few seconds) to be seen running; short enough for the suite.
    for field, value in {"max_steps": "100", "batch_size": "8", "max_length": "256", "learning_rate": "0.005",
                         "logging_steps": "1", "eval_steps": "50", "save_steps": "1000"}.items():
        page.fill(f"#id_{field}", value)
    page.get_by_role("button", name="Start the run").click()

    expect(page.get_by_role("heading", name="Progress")).to_be_visible()
    status, chart = page.get_by_test_id("run-status"), page.get_by_test_id("loss-chart")
    expect(status).to_have_text("Running", timeout=60_000)
    expect(chart).to_be_visible(timeout=30_000)  # drawn with the first logged steps, without a reload
    first_points = int(chart.get_attribute("data-train-points"))
    expect(page.get_by_test_id("run-progress-bar")).not_to_have_attribute("value", "0")

    expect(status).to_have_text("Succeeded", timeout=90_000)
    expect(chart).to_have_attribute("data-train-points", "100")
    assert first_points < 100  # the curve grew while the admin watched
    expect(page.get_by_test_id("run-progress-bar")).to_have_attribute("value", "100")
    expect(page.get_by_test_id("run-steps")).to_have_text("step 100 of 100")
    expect(page.get_by_test_id("run-result")).to_contain_text("tiny-sft-")
    expect(page.get_by_role("button", name="Cancel the run")).to_have_count(0)

"""A reviewer works through the queue with the keyboard alone; the ML admin's report changes as the reviews come in."""

import re
from datetime import date

import pytest
from playwright.sync_api import Page, expect

from evaluation.models import ClinicalEvaluation, ItemAnswer, ReviewAssignment, ReviewItem
from modeling.models import ModelVersion
from tests.browser.test_case_intake import log_in_in_english
from tests.evaluation.reviewing import reviewers, rubric  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def evaluation(ml_admin, reviewers, rubric):  # noqa: F811
    first = ModelVersion.objects.create(name="blind-first", base_model="/m/1")
    second = ModelVersion.objects.create(name="blind-second", base_model="/m/2")
    evaluation = ClinicalEvaluation.objects.create(
        name="Browser A/B", sample_size=2, version_a=first, version_b=second, reviewers_per_answer=1, rubric=rubric,
        due_date=date(2030, 1, 1), status=ClinicalEvaluation.Status.REVIEWING, created_by=ml_admin)
    for n, (text, dx) in enumerate([("Chest pain for 2 hours, radiating to the left arm.", "angina"),
                                     ("Fever and productive cough for 3 days.", "pneumonia")]):
        item = ReviewItem.objects.create(evaluation=evaluation, language="en", case_text=text)
        for version in (first, second):
            ItemAnswer.objects.create(item=item, model_version=version, status="done", diagnosis=f"{dx} ({version.pk})",
                                      treatment="Treat per guideline.", prognosis="Good.", rationale="Typical history.")
        ReviewAssignment.objects.create(item=item, reviewer=reviewers[0], rubric=rubric, swapped=bool(n),
                                        due_date=date(2030, 1, 1))
    return evaluation


def test_a_reviewer_scores_two_ab_items_by_keyboard_and_the_report_follows(page: Page, browser, live_server, ml_admin,
                                                                         reviewers, evaluation):  # noqa: F811
    admin = browser.new_context().new_page()
    log_in_in_english(admin, live_server, ml_admin)
    admin.goto(f"{live_server.url}/admin/evaluation/clinicalevaluation/{evaluation.pk}/change/")
    expect(admin.get_by_test_id("reviews-count")).to_have_text("0 of 2 reviews done")
    expect(admin.get_by_test_id("mean-overall-1")).to_have_text("—")

    log_in_in_english(page, live_server, reviewers[0])
    expect(page.get_by_test_id("count-assigned")).to_have_text("2")  # the queue is the reviewer's home
    page.wait_for_load_state()  # the shortcuts are bound once the page has loaded
    page.keyboard.press("n")
    for _review in range(2):
        expect(page.get_by_test_id("review-form")).to_be_visible()
        page.wait_for_load_state()
        expect(page.locator("body")).not_to_contain_text("blind-first")  # blinded
        rows = page.locator("[data-score-row]")
        expect(rows).to_have_count(15)  # 6 dimensions and overall, for A and for B, then the preference
        expect(rows.first).to_have_class("score-row current")
        for _ in range(14):
            page.keyboard.press("4")
        page.keyboard.press("3")  # preference: answer B is better
        expect(page.locator("input[name=preference][value=B]")).to_be_checked()
        page.keyboard.press("Control+Enter")  # submit and next
    expect(page).to_have_url(f"{live_server.url}/reviews/")
    expect(page.get_by_test_id("count-submitted")).to_have_text("2")
    expect(page.get_by_test_id("count-assigned")).to_have_text("0")

    # The report refreshes itself while reviews come in.
    expect(admin.get_by_test_id("reviews-count")).to_have_text("2 of 2 reviews done", timeout=15_000)
    expect(admin.get_by_test_id("mean-overall-1")).to_contain_text("4.00")
    # "B" was the second version on one item and the first on the other (random A/B order per assignment).
    expect(admin.get_by_test_id("win-tie-loss")).to_contain_text("1 wins, 0 ties, 1 losses")


def test_a_missing_score_is_marked_and_the_draft_survives(page: Page, live_server, reviewers, evaluation):  # noqa: F811
    log_in_in_english(page, live_server, reviewers[0])
    expect(page.get_by_test_id("next-review")).to_be_visible()
    page.wait_for_load_state()
    page.keyboard.press("n")
    expect(page.get_by_test_id("review-form")).to_be_visible()
    page.wait_for_load_state()
    for _ in range(5):
        page.keyboard.press("2")
    page.fill("#id_comment", "Unclear history.")
    page.get_by_role("button", name="Submit and next").click()
    expect(page.get_by_test_id("form-errors")).to_be_visible()
    expect(page.get_by_test_id("error-A-overall")).to_be_visible()
    expect(page.locator("#id_comment")).to_have_value("Unclear history.")
    expect(page.locator("input[name='A-diagnostic_accuracy'][value='2']")).to_be_checked()
    page.goto(f"{live_server.url}/reviews/")
    expect(page.get_by_test_id("count-in_progress")).to_have_text("1")


def test_an_ml_admin_makes_a_new_version_of_a_rubric_in_use(page: Page, live_server, ml_admin, evaluation, rubric):  # noqa: F811
    log_in_in_english(page, live_server, ml_admin)
    page.goto(f"{live_server.url}/admin/evaluation/rubric/{rubric.pk}/change/")
    expect(page.get_by_test_id("rubric-locked")).to_be_visible()
    page.get_by_test_id("rubric-new-version").click()
    expect(page.locator(".messagelist")).to_contain_text(re.compile("default v2 is the current version", re.I))
    expect(page.locator("input[name='dimensions-0-anchor_1_en']")).to_have_value("Wrong and misleading")

"""The reviewer's pages and API: blinded, scoped to their own work, and every role kept to its side."""

import pytest
from django.urls import reverse

from cases.models import AccessEvent
from evaluation.models import ReviewAssignment
from evaluation.services import analyses_assign, review_save
from tests.evaluation.reviewing import VERSION_NAME, complete_input, finished_analysis

pytestmark = pytest.mark.django_db


@pytest.fixture
def assigned(doctor, ml_admin, reviewers, version, rubric):
    """One answer reviewed by two reviewers; the first has submitted a review with a telling comment."""
    analyses_assign(analyses=[finished_analysis(doctor, version)], reviewers_per_answer=2, due_date=None, actor=ml_admin)
    first, second = ReviewAssignment.objects.order_by("pk")
    review_save(reviewer=first.reviewer, assignment=first, data=complete_input(rubric, 1, comment="FIRST-REVIEWER-NOTE"),
                submit=True)
    return first, second


def test_the_reviewer_sees_the_case_and_answer_but_not_who_or_what_made_it(client, assigned, doctor):
    _first, second = assigned
    client.force_login(second.reviewer)
    page = client.get(reverse("reviews:review", args=[second.pk])).content.decode()
    assert "急性心肌梗死" in page and "[NAME_1]" in page  # the answer and the de-identified case
    assert "李明" not in page  # no PHI
    for hidden in (VERSION_NAME, doctor.username, "FIRST-REVIEWER-NOTE", _first.reviewer.username):
        assert hidden not in page
    assert AccessEvent.objects.filter(action=AccessEvent.Action.REVIEW_VIEW, actor=second.reviewer).count() == 1


def test_the_api_item_is_blinded_too(api_client, assigned, doctor):
    _first, second = assigned
    api_client.force_authenticate(second.reviewer)
    body = api_client.get(f"/api/v1/reviews/{second.pk}/").content.decode()
    assert "急性心肌梗死" in body
    for hidden in (VERSION_NAME, doctor.username, "FIRST-REVIEWER-NOTE", "李明"):
        assert hidden not in body


def test_the_queue_is_the_reviewers_home_with_counts_and_the_next_item(client, assigned):
    first, second = assigned
    client.force_login(second.reviewer)
    response = client.get("/", follow=True)
    assert response.redirect_chain[-1][0] == reverse("reviews:queue")
    page = response.content.decode()
    assert 'data-testid="count-assigned">1<' in page and 'data-testid="count-submitted">0<' in page
    assert reverse("reviews:review", args=[second.pk]) in page
    client.force_login(first.reviewer)
    page = client.get(reverse("reviews:queue")).content.decode()
    assert 'data-testid="count-submitted">1<' in page and 'data-testid="next-review"' not in page


def test_missing_scores_show_beside_the_fields_and_keep_what_was_typed(client, assigned, rubric):
    _first, second = assigned
    client.force_login(second.reviewer)
    data = {f"A-{d.key}": "4" for d in rubric.dimensions.all()}
    del data["A-safety"]
    data |= {"comment": "kept comment", "action": "submit"}
    response = client.post(reverse("reviews:review", args=[second.pk]), data)
    assert response.status_code == 400
    page = response.content.decode()
    assert 'data-testid="error-A-safety"' in page and 'data-testid="error-A-overall"' in page
    assert "kept comment" in page
    assert 'name="A-clarity" value="4" checked' in page


def test_submit_and_next_then_the_done_review_is_read_only(client, assigned, rubric):
    _first, second = assigned
    client.force_login(second.reviewer)
    data = {f"A-{d.key}": "3" for d in rubric.dimensions.all()} | {"A-overall": "3", "action": "submit"}
    response = client.post(reverse("reviews:review", args=[second.pk]), data, follow=True)
    assert response.redirect_chain[-1][0] == reverse("reviews:queue")  # nothing left: back to the queue
    assert "Review submitted." in response.content.decode()
    again = client.post(reverse("reviews:review", args=[second.pk]), data | {"A-overall": "1"}, follow=True)
    assert "already submitted" in again.content.decode()
    second.refresh_from_db()
    assert second.ratings.get().overall == 3


def test_the_review_api_lists_saves_drafts_submits_once_and_explains_errors(api_client, assigned, rubric):
    _first, second = assigned
    api_client.force_authenticate(second.reviewer)
    listed = api_client.get("/api/v1/reviews/").json()
    assert [row["id"] for row in listed] == [second.pk]
    draft = api_client.put(f"/api/v1/reviews/{second.pk}/", {"ratings": {"A": {"safety": 2}}}, format="json")
    assert draft.status_code == 200 and draft.json()["status"] == "in_progress"
    assert draft.json()["ratings"]["A"]["safety"] == 2
    bad = api_client.put(f"/api/v1/reviews/{second.pk}/", {"ratings": {"A": {"safety": 9}}}, format="json")
    assert bad.status_code == 400
    missing = api_client.post(f"/api/v1/reviews/{second.pk}/submit/", {"ratings": {"A": {"safety": 2}}}, format="json")
    assert missing.status_code == 400 and "A-overall" in missing.json()
    full = {"ratings": {"A": {d.key: 4 for d in rubric.dimensions.all()} | {"overall": 4}}}
    assert api_client.post(f"/api/v1/reviews/{second.pk}/submit/", full, format="json").status_code == 200
    assert api_client.post(f"/api/v1/reviews/{second.pk}/submit/", full, format="json").status_code == 409
    assert api_client.get("/api/v1/reviews/?status=done").json()[0]["status"] == "submitted"


def test_the_review_api_is_in_the_openapi_schema(api_client, reviewers):
    api_client.force_authenticate(reviewers[0])
    schema = api_client.get("/api/schema/").content.decode()
    assert "/api/v1/reviews/{id}/submit/" in schema and "ReviewInput" in schema


# --- Role × page / endpoint -------------------------------------------------------------------------------------

REVIEWER_OWN, REVIEWER_OTHER, DOCTOR, ML_ADMIN, AUDITOR, ANONYMOUS = (
    "own reviewer", "other reviewer", "doctor", "ml_admin", "auditor", "anonymous")
LOGIN = "login"
R, RO, D, M, A, N = REVIEWER_OWN, REVIEWER_OTHER, DOCTOR, ML_ADMIN, AUDITOR, ANONYMOUS
# (method, url name, the object its URL names) -> expected status per persona
MATRIX = [
    ("get", "reviews:queue", None, {R: 200, RO: 200, D: 403, M: 403, A: 403, N: LOGIN}),
    ("get", "reviews:next", None, {R: 302, RO: 302, D: 403, M: 403, A: 403, N: LOGIN}),
    ("get", "reviews:review", "assignment", {R: 200, RO: 404, D: 403, M: 403, A: 403, N: LOGIN}),
    ("post", "reviews:review", "assignment", {R: 302, RO: 404, D: 403, M: 403, A: 403, N: LOGIN}),
    # The own reviewer reviews this case blinded, so the doctor's correction on it is not theirs to decide.
    ("post", "reviews:correction-decide", "feedback", {R: 404, RO: 302, D: 403, M: 403, A: 403, N: LOGIN}),
    ("post", "cases:analysis-feedback", "analysis", {R: 403, RO: 403, D: 302, M: 403, A: 403, N: LOGIN}),
    ("get", "api-review-list", None, {R: 200, RO: 200, D: 403, M: 403, A: 403, N: 401}),
    ("get", "api-review-detail", "assignment", {R: 200, RO: 404, D: 403, M: 403, A: 403, N: 401}),
    ("put", "api-review-detail", "assignment", {R: 400, RO: 404, D: 403, M: 403, A: 403, N: 401}),
    ("post", "api-review-submit", "assignment", {R: 400, RO: 404, D: 403, M: 403, A: 403, N: 401}),
    ("get", "admin:evaluation_clinicalevaluation_add", None, {R: LOGIN, RO: LOGIN, D: LOGIN, M: 200, A: 403, N: LOGIN}),
    ("get", "admin:evaluation_clinicalevaluation_changelist", None, {R: LOGIN, RO: LOGIN, D: LOGIN, M: 200, A: 403, N: LOGIN}),
    ("get", "admin:evaluation_clinicalevaluation_change", "evaluation", {R: LOGIN, RO: LOGIN, D: LOGIN, M: 200, A: 403, N: LOGIN}),
    ("get", "admin:evaluation_clinicalevaluation_progress", "evaluation", {R: LOGIN, RO: LOGIN, D: LOGIN, M: 200, A: 403, N: LOGIN}),
    ("get", "admin:evaluation_clinicalevaluation_csv", "evaluation", {R: LOGIN, RO: LOGIN, D: LOGIN, M: 200, A: 403, N: LOGIN}),
    ("post", "admin:evaluation_clinicalevaluation_retry", "evaluation", {R: LOGIN, RO: LOGIN, D: LOGIN, M: 302, A: 403, N: LOGIN}),
    ("get", "admin:evaluation_reviewassignment_changelist", None, {R: LOGIN, RO: LOGIN, D: LOGIN, M: 200, A: 403, N: LOGIN}),
    ("get", "admin:evaluation_reviewassignment_assign", None, {R: LOGIN, RO: LOGIN, D: LOGIN, M: 200, A: 403, N: LOGIN}),
    ("get", "admin:evaluation_rubric_changelist", None, {R: LOGIN, RO: LOGIN, D: LOGIN, M: 200, A: 403, N: LOGIN}),
    ("get", "admin:evaluation_rubric_change", "rubric", {R: LOGIN, RO: LOGIN, D: LOGIN, M: 200, A: 403, N: LOGIN}),
    ("post", "admin:evaluation_rubric_new_version", "rubric", {R: LOGIN, RO: LOGIN, D: LOGIN, M: 302, A: 403, N: LOGIN}),
    ("get", "admin:evaluation_feedbackexample_changelist", None, {R: LOGIN, RO: LOGIN, D: LOGIN, M: 200, A: 403, N: LOGIN}),
    ("get", "audit:log", None, {R: 403, RO: 403, D: 403, M: 403, A: 200, N: LOGIN}),
]


@pytest.mark.parametrize("persona", [REVIEWER_OWN, REVIEWER_OTHER, DOCTOR, ML_ADMIN, AUDITOR, ANONYMOUS])
@pytest.mark.parametrize(("method", "name", "target", "expected"), MATRIX, ids=[f"{m} {n}" for m, n, *_ in MATRIX])
def test_access(client, doctor, ml_admin, auditor, reviewers, version, rubric, persona, method, name, target, expected):
    from datetime import date

    from cases.services import doctor_feedback_save
    from evaluation.models import ClinicalEvaluation

    analysis = finished_analysis(doctor, version)
    feedback = doctor_feedback_save(doctor=doctor, analysis=analysis, helpful=False, correct_diagnosis="主动脉夹层")
    analyses_assign(analyses=[analysis], reviewers_per_answer=1, due_date=None, actor=ml_admin)
    assignment = ReviewAssignment.objects.get()
    evaluation = ClinicalEvaluation.objects.create(name="matrix", sample_size=1, version_a=version, rubric=rubric,
                                                   due_date=date(2030, 1, 1), status="failed", error="model files missing")
    others = [r for r in reviewers if r != assignment.reviewer]
    user = {REVIEWER_OWN: assignment.reviewer, REVIEWER_OTHER: others[0], DOCTOR: doctor, ML_ADMIN: ml_admin,
            AUDITOR: auditor, ANONYMOUS: None}[persona]
    if user is not None:
        client.force_login(user)
    objects = {"assignment": assignment, "evaluation": evaluation, "analysis": analysis, "feedback": feedback,
               "rubric": rubric}
    url = reverse(name, args=[objects[target].pk] if target else [])
    data = {"action": "draft", "helpful": "yes", "decision": "decline"} if method == "post" else {}
    response = getattr(client, method)(url, data, content_type="application/json") if method == "put" else \
        getattr(client, method)(url, data)
    want = expected[persona]
    if want == LOGIN:
        assert response.status_code == 302 and "login" in response["Location"]
    else:
        assert response.status_code == want
    if response.status_code == 200:
        assert "李明" not in response.content.decode()


def test_the_next_review_is_a_draft_first_then_the_earliest_due_and_undated_work_last(doctor, ml_admin, reviewers, version):
    from datetime import date

    from evaluation.selectors import assignment_next

    reviewer = reviewers[0]

    def assign(due, text):
        analyses_assign(analyses=[finished_analysis(doctor, version, text=text)], reviewers_per_answer=3, due_date=due,
                        actor=ml_admin)
        return ReviewAssignment.objects.filter(reviewer=reviewer).latest("pk")

    undated = assign(None, "发热1天。")
    later = assign(date(2030, 3, 1), "发热2天。")
    sooner = assign(date(2030, 2, 1), "发热3天。")
    assert assignment_next(user=reviewer) == sooner
    review_save(reviewer=reviewer, assignment=later, data=complete_input_partial(), submit=False)
    assert assignment_next(user=reviewer) == later  # a draft in progress comes first
    assert assignment_next(user=reviewer, after=later.pk) == sooner
    from evaluation.selectors import assignment_queue

    assert list(assignment_queue(user=reviewer)) == [later, sooner, undated]


def complete_input_partial():
    from evaluation.services import ReviewInput

    return ReviewInput(ratings={"A": {"safety": 3}})

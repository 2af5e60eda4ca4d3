"""The reviewer's work: drafts, one submission, messages for missing scores, and what becomes training data."""

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse

from cases.models import AccessEvent, DoctorFeedback
from cases.services import doctor_feedback_save
from evaluation.models import AnswerRating, FeedbackExample, ReviewAssignment
from evaluation.services import OVERALL, ReviewAlreadySubmitted, ReviewInput, analyses_assign, doctor_feedback_decide, review_save
from tests.evaluation.reviewing import VERSION_NAME, complete_input, finished_analysis

pytestmark = pytest.mark.django_db


@pytest.fixture
def assignment(doctor, ml_admin, reviewers, version):
    analyses_assign(analyses=[finished_analysis(doctor, version)], reviewers_per_answer=1, due_date=None, actor=ml_admin)
    return ReviewAssignment.objects.get()


def test_a_draft_saves_partial_scores_and_can_be_edited(assignment, rubric):
    reviewer = assignment.reviewer
    review_save(reviewer=reviewer, assignment=assignment, data=ReviewInput(ratings={"A": {"safety": 2}}), submit=False)
    review_save(reviewer=reviewer, assignment=assignment, data=ReviewInput(ratings={"A": {"safety": 3, OVERALL: 4}},
                                                                           comment="draft note"), submit=False)
    assignment.refresh_from_db()
    assert assignment.status == ReviewAssignment.Status.IN_PROGRESS
    rating = AnswerRating.objects.get()
    assert rating.scores == {"safety": 3} and rating.overall == 4
    assert assignment.comment == "draft note"


def test_submit_once_then_a_second_submit_is_refused(assignment, rubric):
    reviewer = assignment.reviewer
    review_save(reviewer=reviewer, assignment=assignment, data=complete_input(rubric, 4), submit=True)
    assignment.refresh_from_db()
    assert assignment.status == ReviewAssignment.Status.SUBMITTED and assignment.submitted_at
    with pytest.raises(ReviewAlreadySubmitted):
        review_save(reviewer=reviewer, assignment=assignment, data=complete_input(rubric, 1), submit=True)
    with pytest.raises(ReviewAlreadySubmitted):
        review_save(reviewer=reviewer, assignment=assignment, data=complete_input(rubric, 1), submit=False)
    assert AnswerRating.objects.get().overall == 4  # unchanged
    assert AccessEvent.objects.filter(action=AccessEvent.Action.REVIEW_SUBMIT, actor=reviewer).count() == 1


def test_missing_scores_are_named_and_what_was_entered_is_kept(assignment, rubric):
    data = complete_input(rubric, 5)
    del data.ratings["A"]["safety"], data.ratings["A"][OVERALL]
    with pytest.raises(ValidationError) as error:
        review_save(reviewer=assignment.reviewer, assignment=assignment, data=data, submit=True)
    assert set(error.value.message_dict) == {"A-safety", "A-overall"}
    assignment.refresh_from_db()
    assert assignment.status == ReviewAssignment.Status.IN_PROGRESS
    assert AnswerRating.objects.get().scores["clarity"] == 5


def test_scores_outside_one_to_five_are_refused_even_in_a_draft(assignment):
    for bad in (0, 6, "3"):
        with pytest.raises(ValidationError) as error:
            review_save(reviewer=assignment.reviewer, assignment=assignment,
                        data=ReviewInput(ratings={"A": {"safety": bad}}), submit=False)
        assert "A-safety" in error.value.message_dict
    assert not AnswerRating.objects.exists()


def test_only_the_assigned_reviewer_may_save(assignment, reviewers, rubric):
    other = next(r for r in reviewers if r != assignment.reviewer)
    with pytest.raises(PermissionDenied):
        review_save(reviewer=other, assignment=assignment, data=complete_input(rubric), submit=True)


def test_an_accepted_correction_becomes_a_feedback_example_with_provenance(assignment, rubric, version):
    data = complete_input(rubric, 2, corrected_diagnosis="主动脉夹层", corrected_treatment="控制血压，急诊手术。",
                          accept_for_training=True)
    review_save(reviewer=assignment.reviewer, assignment=assignment, data=data, submit=True)
    example = FeedbackExample.objects.get()
    assert example.source == FeedbackExample.Source.REVIEW
    assert (example.diagnosis, example.treatment) == ("主动脉夹层", "控制血压，急诊手术。")
    assert example.case_text == assignment.item.case_text and "[NAME_1]" in example.case_text
    assert example.reviewer == assignment.reviewer and example.model_version == version
    assert example.rubric == assignment.rubric and example.analysis == assignment.item.answers.get().analysis


@pytest.mark.parametrize(("correction", "accept"), [("主动脉夹层", False), ("", True)])
def test_no_feedback_example_without_both_a_correction_and_acceptance(assignment, rubric, correction, accept):
    data = complete_input(rubric, 3, corrected_diagnosis=correction, accept_for_training=accept)
    review_save(reviewer=assignment.reviewer, assignment=assignment, data=data, submit=True)
    assert not FeedbackExample.objects.exists()


def test_a_drafted_correction_is_not_training_data_until_submitted(assignment, rubric):
    data = complete_input(rubric, 3, corrected_diagnosis="主动脉夹层", accept_for_training=True)
    review_save(reviewer=assignment.reviewer, assignment=assignment, data=data, submit=False)
    assert not FeedbackExample.objects.exists()


def test_identifiers_typed_into_a_review_are_removed(assignment, rubric):
    data = complete_input(rubric, 3, comment="Called the patient at 13812345678 to check.",
                          corrected_diagnosis="急性心肌梗死", accept_for_training=True)
    review_save(reviewer=assignment.reviewer, assignment=assignment, data=data, submit=True)
    assignment.refresh_from_db()
    assert "13812345678" not in assignment.comment and "[PHONE_1]" in assignment.comment


# --- The doctor's own rating ---------------------------------------------------------------------------------------


def test_a_doctor_rates_an_analysis_of_their_own_case_on_the_case_page(client, doctor, version):
    analysis = finished_analysis(doctor, version)
    client.force_login(doctor)
    page = client.get(reverse("cases:detail", args=[analysis.case.pk])).content.decode()
    assert 'data-testid="doctor-feedback"' in page
    client.post(reverse("cases:analysis-feedback", args=[analysis.pk]), {"helpful": "no", "correct_diagnosis": "主动脉夹层"})
    feedback = DoctorFeedback.objects.get()
    assert feedback.helpful is False and feedback.correct_diagnosis == "主动脉夹层"
    assert feedback.decision == DoctorFeedback.Decision.PENDING
    page = client.get(reverse("cases:detail", args=[analysis.case.pk])).content.decode()
    assert "Awaiting a reviewer" in page
    assert not FeedbackExample.objects.exists()  # not training data before a reviewer accepts it


def test_a_doctor_cannot_rate_a_colleagues_analysis(client, doctor, other_doctor, version):
    analysis = finished_analysis(doctor, version)
    client.force_login(other_doctor)
    response = client.post(reverse("cases:analysis-feedback", args=[analysis.pk]), {"helpful": "yes"})
    assert response.status_code == 404
    with pytest.raises(PermissionDenied):
        doctor_feedback_save(doctor=other_doctor, analysis=analysis, helpful=True)
    assert not DoctorFeedback.objects.exists()


def test_a_rating_without_a_choice_is_refused_with_a_message(client, doctor, version):
    analysis = finished_analysis(doctor, version)
    client.force_login(doctor)
    page = client.post(reverse("cases:analysis-feedback", args=[analysis.pk]), {"correct_diagnosis": "x"}, follow=True)
    assert "Choose helpful or not helpful." in page.content.decode()
    assert not DoctorFeedback.objects.exists()


def test_a_reviewer_accepts_a_doctors_correction_into_training_data(doctor, reviewers, version):
    analysis = finished_analysis(doctor, version)
    feedback = doctor_feedback_save(doctor=doctor, analysis=analysis, helpful=False, correct_diagnosis="主动脉夹层")
    example = doctor_feedback_decide(reviewer=reviewers[0], feedback=feedback, accept=True)
    assert example.source == FeedbackExample.Source.DOCTOR and example.diagnosis == "主动脉夹层"
    assert example.model_version.name == VERSION_NAME and example.reviewer == reviewers[0]
    feedback.refresh_from_db()
    assert feedback.decision == DoctorFeedback.Decision.ACCEPTED
    with pytest.raises(ValidationError):
        doctor_feedback_decide(reviewer=reviewers[1], feedback=feedback, accept=True)
    assert FeedbackExample.objects.count() == 1


def test_a_declined_doctors_correction_makes_no_example(doctor, reviewers, version):
    feedback = doctor_feedback_save(doctor=doctor, analysis=finished_analysis(doctor, version), helpful=False,
                                    correct_diagnosis="主动脉夹层")
    assert doctor_feedback_decide(reviewer=reviewers[0], feedback=feedback, accept=False) is None
    assert not FeedbackExample.objects.exists()


def test_a_rating_without_correction_waits_for_nobody(doctor, reviewers, version):
    feedback = doctor_feedback_save(doctor=doctor, analysis=finished_analysis(doctor, version), helpful=True)
    assert feedback.decision == DoctorFeedback.Decision.NONE
    with pytest.raises(ValidationError):
        doctor_feedback_decide(reviewer=reviewers[0], feedback=feedback, accept=True)


def test_an_accepted_correction_can_no_longer_be_changed_by_the_doctor(doctor, reviewers, version):
    analysis = finished_analysis(doctor, version)
    feedback = doctor_feedback_save(doctor=doctor, analysis=analysis, helpful=False, correct_diagnosis="主动脉夹层")
    doctor_feedback_decide(reviewer=reviewers[0], feedback=feedback, accept=True)
    with pytest.raises(ValidationError) as error:
        doctor_feedback_save(doctor=doctor, analysis=analysis, helpful=False, correct_diagnosis="肺栓塞")
    assert "can no longer be changed" in str(error.value)
    doctor_feedback_save(doctor=doctor, analysis=analysis, helpful=True, correct_diagnosis="主动脉夹层")  # helpful may change
    assert FeedbackExample.objects.get().diagnosis == "主动脉夹层"


def test_a_declined_correction_changed_by_the_doctor_waits_again_and_can_be_accepted(doctor, reviewers, version):
    analysis = finished_analysis(doctor, version)
    feedback = doctor_feedback_save(doctor=doctor, analysis=analysis, helpful=False, correct_diagnosis="胃炎")
    doctor_feedback_decide(reviewer=reviewers[0], feedback=feedback, accept=False)
    feedback = doctor_feedback_save(doctor=doctor, analysis=analysis, helpful=False, correct_diagnosis="主动脉夹层")
    assert feedback.decision == DoctorFeedback.Decision.PENDING
    doctor_feedback_decide(reviewer=reviewers[1], feedback=feedback, accept=True)
    assert FeedbackExample.objects.get().diagnosis == "主动脉夹层"


def test_a_long_correction_with_a_name_is_refused_cleanly(doctor, version):
    analysis = finished_analysis(doctor, version)
    with pytest.raises(ValidationError):
        doctor_feedback_save(doctor=doctor, analysis=analysis, helpful=False, correct_diagnosis="患者李明" + "炎" * 296)
    assert not DoctorFeedback.objects.exists()


def test_doctors_corrections_are_hidden_from_a_reviewer_who_reviews_that_case_and_listing_them_is_audited(
        client, doctor, ml_admin, reviewers, version):
    analysis = finished_analysis(doctor, version)
    doctor_feedback_save(doctor=doctor, analysis=analysis, helpful=False, correct_diagnosis="主动脉夹层")
    analyses_assign(analyses=[analysis], reviewers_per_answer=1, due_date=None, actor=ml_admin)
    blinded = ReviewAssignment.objects.get().reviewer
    other = next(r for r in reviewers if r != blinded)
    client.force_login(blinded)
    assert 'data-testid="doctor-corrections"' not in client.get(reverse("reviews:queue")).content.decode()
    client.force_login(other)
    assert "主动脉夹层" in client.get(reverse("reviews:queue")).content.decode()
    event = AccessEvent.objects.get(action=AccessEvent.Action.FEEDBACK_LIST)
    assert event.actor == other and event.case_ids == [analysis.case.pk]


def test_a_score_that_is_not_a_plain_digit_is_refused_not_a_crash(client, doctor, ml_admin, reviewers, version):
    analyses_assign(analyses=[finished_analysis(doctor, version)], reviewers_per_answer=1, due_date=None, actor=ml_admin)
    assignment = ReviewAssignment.objects.get()
    client.force_login(assignment.reviewer)
    for bad in ("²", "7", "x"):
        response = client.post(reverse("reviews:review", args=[assignment.pk]), {"A-safety": bad, "action": "draft"})
        assert response.status_code == 400 and "Choose a score from 1 to 5." in response.content.decode()

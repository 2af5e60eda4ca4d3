"""The unblinded report: means with bootstrap intervals, the paired difference, win/tie/loss, agreement, the CSV."""

import csv
import io
from datetime import date

import krippendorff
import numpy as np
import pytest
from django.urls import reverse
from django.utils import timezone

from cases.models import AccessEvent
from evaluation.models import AnswerRating, ClinicalEvaluation, ItemAnswer, ReviewAssignment, ReviewItem
from evaluation.selectors import evaluation_report
from modeling.models import ModelVersion

pytestmark = pytest.mark.django_db

# Overall scores (every dimension scored the same here) per item: (first version by r1, r2), (second version by r1, r2),
# and what each reviewer preferred.
SCORES = [
    ((3, 3), (4, 5), ("second", "second")),
    ((2, 4), (4, 4), ("tie", "second")),
    ((4, 4), (3, 3), ("first", "first")),
]


@pytest.fixture
def ab_evaluation(ml_admin, reviewers, rubric):
    first = ModelVersion.objects.create(name="first-v1", base_model="/m/1")
    second = ModelVersion.objects.create(name="second-v2", base_model="/m/2")
    evaluation = ClinicalEvaluation.objects.create(
        name="A/B", sample_size=3, version_a=first, version_b=second, reviewers_per_answer=2, rubric=rubric,
        due_date=date(2030, 1, 1), status=ClinicalEvaluation.Status.REVIEWING, created_by=ml_admin)
    keys = list(rubric.dimensions.values_list("key", flat=True))
    r1, r2 = reviewers[:2]
    for n, (by_first, by_second, preferred) in enumerate(SCORES):
        item = ReviewItem.objects.create(evaluation=evaluation, language="en", case_text=f"Case {n}: cough.",
                                         reference_diagnosis="=cmd|' /C calc'!A0")
        answers = [ItemAnswer.objects.create(item=item, model_version=v, status="done", diagnosis=f"dx {v.name}")
                   for v in (first, second)]
        for reviewer, swapped, i in ((r1, False, 0), (r2, True, 1)):  # r2 sees the second version as "A"
            choice = preferred[i]
            shown_first = "B" if swapped else "A"
            preference = {"tie": "tie", "first": shown_first, "second": "A" if shown_first == "B" else "B"}[choice]
            assignment = ReviewAssignment.objects.create(
                item=item, reviewer=reviewer, rubric=rubric, swapped=swapped, status="submitted",
                submitted_at=timezone.now(), preference=preference, comment="=HYPERLINK(\"http://x\")")
            for answer, scores in zip(answers, (by_first, by_second), strict=True):
                AnswerRating.objects.create(assignment=assignment, answer=answer, overall=scores[i],
                                            scores={key: scores[i] for key in keys})
    return evaluation


def test_means_difference_and_preferences_match_the_hand_computed_ones(ml_admin, ab_evaluation):
    report = evaluation_report(user=ml_admin, evaluation=ab_evaluation)
    overall = next(row for row in report.rows if row.key == "overall")
    first, second = overall.estimates
    # Item means over the two reviewers: first [3, 3, 4] -> 10/3; second [4.5, 4, 3] -> 11.5/3.
    assert first.mean == pytest.approx(10 / 3) and first.n == 3
    assert second.mean == pytest.approx(11.5 / 3)
    # A bootstrap mean of [3, 3, 4] can only lie between 3 and 4.
    assert 3 <= first.low <= first.mean <= first.high <= 4
    assert 3 <= second.low <= second.mean <= second.high <= 4.5
    # Paired by item: [1.5, 1, -1] -> 0.5.
    assert overall.difference.mean == pytest.approx(0.5) and overall.difference.n == 3
    assert -1 <= overall.difference.low <= 0.5 <= overall.difference.high <= 1.5
    # Preferences of the second version against the first, undoing each reviewer's A/B order: 3 wins, 1 tie, 2 losses.
    assert (report.preferences.wins, report.preferences.ties, report.preferences.losses) == (3, 1, 2)
    assert report.versions == ["first-v1", "second-v2"]


def test_agreement_is_krippendorffs_ordinal_alpha_over_the_answers(ml_admin, ab_evaluation):
    report = evaluation_report(user=ml_admin, evaluation=ab_evaluation)
    overall = next(row for row in report.rows if row.key == "overall")
    # Units: the six answers (item 1 first, item 1 second, item 2 first, ...); raters r1 and r2.
    matrix = np.array([[3, 4, 2, 4, 4, 3], [3, 5, 4, 4, 4, 3]], dtype=float)
    expected = krippendorff.alpha(reliability_data=matrix, level_of_measurement="ordinal")
    assert overall.agreement.alpha == pytest.approx(expected, abs=1e-9)
    assert overall.agreement.items == 6


def test_the_report_page_shows_the_numbers_and_its_views_are_audited(client, ml_admin, ab_evaluation):
    client.force_login(ml_admin)
    page = client.get(reverse("admin:evaluation_clinicalevaluation_change", args=[ab_evaluation.pk])).content.decode()
    assert 'data-testid="mean-overall-1">3.33' in page and 'data-testid="mean-overall-2">3.83' in page
    assert 'data-testid="diff-overall">0.50' in page
    assert "3 wins, 1 ties, 2 losses" in page
    assert 'data-testid="score-chart"' in page and "<rect" in page
    assert AccessEvent.objects.filter(action=AccessEvent.Action.EVALUATION_REPORT_VIEW, actor=ml_admin,
                                      target=f"clinical evaluation {ab_evaluation.pk}").exists()


def test_the_report_changes_as_reviews_come_in(client, ml_admin, ab_evaluation):
    client.force_login(ml_admin)
    url = reverse("admin:evaluation_clinicalevaluation_progress", args=[ab_evaluation.pk])
    assert "6 of 6 reviews done" in client.get(url).content.decode()
    ReviewAssignment.objects.filter(item__evaluation=ab_evaluation, reviewer__username="rater2").update(
        status="in_progress", submitted_at=None)
    page = client.get(url).content.decode()
    assert "3 of 6 reviews done" in page
    # Only r1's scores now: first [3, 2, 4] -> 3.00.
    assert 'data-testid="mean-overall-1">3.00' in page


def test_the_csv_export_neutralises_formulas_and_is_audited(client, ml_admin, ab_evaluation):
    client.force_login(ml_admin)
    response = client.get(reverse("admin:evaluation_clinicalevaluation_csv", args=[ab_evaluation.pk]))
    assert response["Content-Type"].startswith("text/csv")
    body = response.content.decode()
    assert body.startswith("\ufeff")  # so that Excel reads UTF-8 (Chinese text) correctly
    rows = list(csv.DictReader(io.StringIO(body.removeprefix("\ufeff"))))
    assert len(rows) == 12  # 3 items x 2 reviewers x 2 answers
    assert all(row["comment"].startswith("'=HYPERLINK") for row in rows)
    assert all(row["recorded_diagnosis"].startswith("'=cmd") for row in rows)
    assert {row["preferred_version"] for row in rows} == {"first-v1", "second-v2", "tie"}
    assert AccessEvent.objects.filter(action=AccessEvent.Action.EVALUATION_EXPORT, actor=ml_admin).count() == 1


def test_reviewers_and_auditors_cannot_see_reports(client, reviewers, auditor, ab_evaluation):
    for user in (reviewers[0], auditor):
        client.force_login(user)
        for name in ("admin:evaluation_clinicalevaluation_change", "admin:evaluation_clinicalevaluation_csv"):
            response = client.get(reverse(name, args=[ab_evaluation.pk]))
            assert response.status_code in (302, 403)
            assert "first-v1" not in response.content.decode()


def test_polling_the_report_is_not_an_audit_entry_every_three_seconds_but_reading_it_alone_is(client, ml_admin,
                                                                                            ab_evaluation):
    client.force_login(ml_admin)
    progress = reverse("admin:evaluation_clinicalevaluation_progress", args=[ab_evaluation.pk])
    client.get(progress)  # read without opening the page: audited
    views = AccessEvent.objects.filter(action=AccessEvent.Action.EVALUATION_REPORT_VIEW)
    assert views.count() == 1
    client.get(reverse("admin:evaluation_clinicalevaluation_change", args=[ab_evaluation.pk]))
    assert views.count() == 2
    for _ in range(3):
        client.get(progress, headers={"X-MedPortal-Refresh": "1"})
    assert views.count() == 2


def test_doctors_ratings_and_ad_hoc_reviews_are_reported_apart(ml_admin, doctor, reviewers, ab_evaluation):
    from cases.services import doctor_feedback_save
    from evaluation.services import analyses_assign, review_save
    from tests.evaluation.reviewing import complete_input, finished_analysis

    first = ab_evaluation.version_a
    liked, disliked = finished_analysis(doctor, first, text="咳嗽1天。"), finished_analysis(doctor, first, text="咳嗽2天。")
    doctor_feedback_save(doctor=doctor, analysis=liked, helpful=True)
    doctor_feedback_save(doctor=doctor, analysis=disliked, helpful=False, correct_diagnosis="肺炎")
    for assignment, score in zip(analyses_assign(analyses=[liked], reviewers_per_answer=2, due_date=None, actor=ml_admin),
                                 (2, 4), strict=True):
        review_save(reviewer=assignment.reviewer, assignment=assignment,
                    data=complete_input(ab_evaluation.rubric, score), submit=True)
    report = evaluation_report(user=ml_admin, evaluation=ab_evaluation)
    outside = {row.version: row for row in report.outside}
    row = outside["first-v1"]
    assert (row.doctor_ratings, row.doctor_helpful, row.helpful_percent) == (2, 1, 50)
    assert (row.corrections_pending, row.corrections_accepted) == (1, 0)
    assert row.ad_hoc_overall.mean == pytest.approx(3.0) and row.ad_hoc_overall.n == 1  # (2 + 4) / 2 on one answer
    assert outside["second-v2"].doctor_ratings == 0
    # The blinded evaluation's own numbers are untouched by them.
    overall = next(r for r in report.rows if r.key == "overall")
    assert overall.estimates[0].mean == pytest.approx(10 / 3)

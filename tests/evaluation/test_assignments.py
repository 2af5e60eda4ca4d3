"""Who reviews what: balanced across reviewers, never the submitting doctor, never the same reviewer twice."""

from collections import Counter

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from cases import roles
from cases.models import AccessEvent
from evaluation.models import ReviewAssignment
from evaluation.services import analyses_assign
from tests.conftest import make_user
from tests.evaluation.reviewing import finished_analysis

pytestmark = pytest.mark.django_db


def test_answers_are_spread_evenly_over_the_reviewers(doctor, ml_admin, reviewers, version):
    analyses = [finished_analysis(doctor, version, text=f"发热{i + 1}天。") for i in range(10)]
    made = analyses_assign(analyses=analyses, reviewers_per_answer=2, due_date=None, actor=ml_admin)
    assert len(made) == 20
    load = Counter(a.reviewer.username for a in made)
    assert set(load) == {"rater1", "rater2", "rater3"}
    assert max(load.values()) - min(load.values()) <= 1  # 7, 7, 6
    per_item = Counter(a.item_id for a in made)
    assert set(per_item.values()) == {2}


def test_open_work_counts_toward_the_balance(doctor, ml_admin, reviewers, version):
    first = analyses_assign(analyses=[finished_analysis(doctor, version)], reviewers_per_answer=2, due_date=None,
                            actor=ml_admin)
    busy = {a.reviewer for a in first}
    second = analyses_assign(analyses=[finished_analysis(doctor, version, text="咳嗽3天。")], reviewers_per_answer=1,
                             due_date=None, actor=ml_admin)
    assert second[0].reviewer not in busy


def test_the_submitting_doctor_never_reviews_their_own_case(django_user_model, doctor, ml_admin, reviewers, version):
    # A physician who is both a doctor and a reviewer.
    both = make_user(django_user_model, "dr_and_rater", roles.DOCTOR)
    both.groups.add(*make_user(django_user_model, "tmp", roles.REVIEWER).groups.all())
    own = [finished_analysis(both, version, text=f"腹痛{i + 1}小时。") for i in range(5)]
    with pytest.raises(ValidationError) as error:
        analyses_assign(analyses=own, reviewers_per_answer=5, due_date=None, actor=ml_admin)
    assert "Only 4 reviewers" in str(error.value)
    assert not ReviewAssignment.objects.exists()  # nothing half-done
    made = analyses_assign(analyses=own, reviewers_per_answer=4, due_date=None, actor=ml_admin)
    assert len(made) == 20
    assert all(a.reviewer != both for a in made)


def test_the_same_reviewer_is_never_assigned_twice(doctor, ml_admin, reviewers, version):
    analysis = finished_analysis(doctor, version)
    analyses_assign(analyses=[analysis], reviewers_per_answer=2, due_date=None, actor=ml_admin)
    more = analyses_assign(analyses=[analysis], reviewers_per_answer=3, due_date=None, actor=ml_admin)
    assert len(more) == 1  # only the missing third reviewer
    reviewers_of_item = ReviewAssignment.objects.filter(item=more[0].item).values_list("reviewer", flat=True)
    assert len(reviewers_of_item) == len(set(reviewers_of_item)) == 3
    with pytest.raises(ValidationError):
        analyses_assign(analyses=[analysis], reviewers_per_answer=4, due_date=None, actor=ml_admin)


def test_every_assignment_is_audited_with_the_admin(doctor, ml_admin, reviewers, version):
    made = analyses_assign(analyses=[finished_analysis(doctor, version)], reviewers_per_answer=2, due_date=None,
                           actor=ml_admin)
    events = AccessEvent.objects.filter(action=AccessEvent.Action.REVIEW_ASSIGN)
    assert events.count() == 2
    assert {e.actor_username for e in events} == {"ml_admin"}
    assert {f"review {a.pk} of item {a.item_id} to {a.reviewer.username}" for a in made} == {e.target for e in events}


def test_only_ml_admins_assign(doctor, reviewers, version):
    with pytest.raises(PermissionDenied):
        analyses_assign(analyses=[finished_analysis(doctor, version)], reviewers_per_answer=1, due_date=None,
                        actor=reviewers[0])


def test_open_reviews_of_a_departed_reviewer_move_to_others(doctor, ml_admin, reviewers, version, rubric):
    from evaluation.services import assignments_reassign, review_save
    from tests.evaluation.reviewing import complete_input

    analyses_assign(analyses=[finished_analysis(doctor, version, text=f"头痛{i + 1}天。") for i in range(3)],
                    reviewers_per_answer=2, due_date=None, actor=ml_admin)
    leaving = reviewers[0]
    theirs = list(ReviewAssignment.objects.filter(reviewer=leaving))
    review_save(reviewer=leaving, assignment=theirs[0], data=complete_input(rubric), submit=True)
    with pytest.raises(ValidationError):  # a submitted review stays where it is
        assignments_reassign(assignments=theirs, actor=ml_admin)
    made = assignments_reassign(assignments=theirs[1:], actor=ml_admin)
    assert len(made) == len(theirs) - 1 and all(a.reviewer != leaving for a in made)
    assert ReviewAssignment.objects.filter(reviewer=leaving).count() == 1  # the submitted one
    for item_id, n in Counter(ReviewAssignment.objects.values_list("item", flat=True)).items():
        assert n == 2, item_id
        reviewers_of_item = list(ReviewAssignment.objects.filter(item_id=item_id).values_list("reviewer", flat=True))
        assert len(set(reviewers_of_item)) == 2

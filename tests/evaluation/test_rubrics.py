"""Rubrics: the seeded default, edited by ML admins in the admin, versioned once reviews use them."""

import pytest
from django.urls import reverse

from evaluation.models import Rubric
from evaluation.services import analyses_assign, review_save
from tests.evaluation.reviewing import complete_input, finished_analysis

pytestmark = pytest.mark.django_db


def test_the_default_rubric_has_six_bilingual_dimensions_with_anchors(rubric):
    dimensions = list(rubric.dimensions.all())
    assert [d.key for d in dimensions] == ["diagnostic_accuracy", "differential_quality", "treatment_appropriateness",
                                           "safety", "completeness", "clarity"]
    for dimension in dimensions:
        assert dimension.name("zh") and dimension.name("en")
        assert [score for score, _text in dimension.anchors("zh")] == [1, 2, 3, 4, 5]
        assert all(text for _score, text in dimension.anchors("en") + dimension.anchors("zh"))


def test_an_unused_rubric_is_edited_in_place(client, ml_admin, rubric):
    client.force_login(ml_admin)
    page = client.get(reverse("admin:evaluation_rubric_change", args=[rubric.pk])).content.decode()
    assert 'data-testid="rubric-locked"' not in page and 'name="dimensions-0-anchor_1_en"' in page


def test_a_rubric_with_reviews_is_versioned_not_edited(client, doctor, ml_admin, reviewers, version, rubric):
    analyses_assign(analyses=[finished_analysis(doctor, version)], reviewers_per_answer=1, due_date=None, actor=ml_admin)
    assignment = rubric.assignments.get()
    review_save(reviewer=assignment.reviewer, assignment=assignment, data=complete_input(rubric, 4), submit=True)
    client.force_login(ml_admin)
    page = client.get(reverse("admin:evaluation_rubric_change", args=[rubric.pk])).content.decode()
    assert 'data-testid="rubric-locked"' in page and 'name="dimensions-0-anchor_1_en"' not in page
    # A POST to the locked version changes nothing.
    client.post(reverse("admin:evaluation_rubric_change", args=[rubric.pk]), {"name": "renamed", "description": ""})
    rubric.refresh_from_db()
    assert rubric.name == "default"

    response = client.post(reverse("admin:evaluation_rubric_new_version", args=[rubric.pk]))
    new = Rubric.objects.get(is_current=True)
    assert response["Location"] == reverse("admin:evaluation_rubric_change", args=[new.pk])
    assert (new.name, new.version) == ("default", 2)
    assert new.dimensions.count() == 6
    rubric.refresh_from_db()
    assert not rubric.is_current and rubric.assignments.get().rubric_id == rubric.pk
    page = client.get(reverse("admin:evaluation_rubric_change", args=[new.pk])).content.decode()
    assert 'name="dimensions-0-anchor_1_en"' in page
    # New ad hoc reviews use the current version.
    made = analyses_assign(analyses=[finished_analysis(doctor, version, text="咳嗽2天。")], reviewers_per_answer=1,
                           due_date=None, actor=ml_admin)
    assert made[0].rubric == new


def test_an_ml_admin_assigns_recent_analyses_from_the_admin(client, doctor, ml_admin, reviewers, version):
    analysis = finished_analysis(doctor, version)
    client.force_login(ml_admin)
    page = client.get(reverse("admin:evaluation_reviewassignment_assign")).content.decode()
    assert f'value="{analysis.pk}"' in page and "李明" not in page
    empty = client.post(reverse("admin:evaluation_reviewassignment_assign"), {"reviewers_per_answer": 2})
    assert empty.status_code == 400 and "Choose at least one analysis." in empty.content.decode()
    too_many = client.post(reverse("admin:evaluation_reviewassignment_assign"),
                           {"analyses": [analysis.pk], "reviewers_per_answer": 5})
    assert too_many.status_code == 400 and "Only 3 reviewers" in too_many.content.decode()
    done = client.post(reverse("admin:evaluation_reviewassignment_assign"),
                       {"analyses": [analysis.pk], "reviewers_per_answer": 2, "due_date": "2030-01-31"})
    assert done.status_code == 302
    assert analysis.case.pk and rubric_assignments(analysis) == 2


def rubric_assignments(analysis) -> int:
    from evaluation.models import ReviewAssignment

    return ReviewAssignment.objects.filter(item__answers__analysis=analysis).count()

"""Retraining from feedback, the gate and promotion, end to end on a tiny real model: reviewers' corrections → a
continual training run on a real training worker → the candidate and the active version evaluated on the gate set and
the replay set by a real evaluation worker → passed → promoted → the next analysis uses it; a worse candidate fails the
gate and is not promoted; rollback. Plus the pieces on their own: the replay sample and the gate decision."""

import time
from pathlib import Path

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse

from cases.models import Analysis
from cases.services import CaseInput, analysis_request, case_create, case_set_import
from evaluation.models import ContinualRun, EvaluationRun, FeedbackExample, ReviewAssignment
from evaluation.services import analyses_assign, continual_run_start, feedback_waiting, gate_decision, review_save
from modeling.dataprep import stratified_sample
from modeling.records import Record
from modeling.selectors import model_version_active
from modeling.services import model_version_register
from modeling.training import TrainConfig, fine_tune
from tests.conftest import celery_worker_on
from tests.evaluation.reviewing import complete_input, finished_analysis
from tests.tiny_models import COMPLAINTS, case_records, write_jsonl

LABELS = sorted({dx for _zh, _en, dx_zh, dx_en in COMPLAINTS for dx in (dx_zh, dx_en)})


# ---------------------------------------------------------------------------------------------------- the pieces


def test_the_replay_sample_keeps_each_diagnosis_share():
    records = [Record(text=f"case {i}", diagnosis=label) for label, n in (("A", 60), ("B", 30), ("C", 9), ("D", 1))
               for i in range(n)]
    sample = stratified_sample(records, 20, seed=1)
    counts = {label: sum(r.diagnosis == label for r in sample) for label in "ABCD"}
    # Exact shares 12 / 6 / 1.8 / 0.2: floors 12 / 6 / 1 / 0, one place left; a diagnosis with none goes first.
    assert counts == {"A": 12, "B": 6, "C": 1, "D": 1}
    assert stratified_sample(records, 20, seed=1) == sample  # seeded
    assert len(stratified_sample(records, 500)) == 100 and stratified_sample(records, 0) == []


def test_the_gate_passes_within_the_margin_and_the_forgetting_bound_and_says_why_not():
    passed = gate_decision(metric="accuracy", margin=0.02, bound=0.05, candidate_gate=0.79, active_gate=0.80,
                           candidate_replay=0.76, active_replay=0.80)
    assert passed["passed"] and passed["forgetting"] == pytest.approx(0.04)
    worse = gate_decision(metric="accuracy", margin=0.02, bound=0.05, candidate_gate=0.70, active_gate=0.80,
                          candidate_replay=0.70, active_replay=0.80)
    assert not worse["passed"] and worse["failed_on"] == ["gate", "forgetting"]
    no_replay = gate_decision(metric="gtpa@1", margin=0.0, bound=0.0, candidate_gate=0.8, active_gate=0.8,
                              candidate_replay=None, active_replay=None)
    assert no_replay["passed"] and no_replay["forgetting"] is None


# ---------------------------------------------------------------------------------------------------- the loop


@pytest.fixture(scope="module")
def trained_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model fine-tuned whole on the tiny cases until it writes answers in the house format and names some of
    their diagnoses right (about 3 gate cases in 8): an active version with something to lose, so a worse candidate
    shows."""
    folder = tmp_path_factory.mktemp("trained")
    data = write_jsonl(case_records(120, seed=11), folder / "train.jsonl")
    result = fine_tune(TrainConfig(base_model=str(tiny_model_dir), train_file=str(data), output_dir=str(folder / "run"),
                                   finetuning_type="full", learning_rate=5e-3, max_steps=300, batch_size=16,
                                   eval_steps=300, save_steps=1000, logging_steps=100))
    return result.adapter_dir


def wait(obj, done, seconds: float = 180):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        obj.refresh_from_db()
        if done(obj):
            return obj
        time.sleep(0.3)
    raise AssertionError(f"{obj} still {obj.status} after {seconds} s")


def corrections(doctor, reviewers, version, rubric, ml_admin, records, *, diagnosis=None):
    """Doctors' analyses that reviewers correct (to the record's diagnosis, or to `diagnosis`) and accept for training."""
    for record in records:
        analysis = finished_analysis(doctor, version, text=record["text"], diagnosis="?")
        analyses_assign(analyses=[analysis], reviewers_per_answer=1, due_date=None, actor=ml_admin)
        assignment = ReviewAssignment.objects.get(item__answers__analysis=analysis)
        review_save(reviewer=assignment.reviewer, assignment=assignment, submit=True,
                    data=complete_input(rubric, 2, corrected_diagnosis=diagnosis or record["diagnosis"],
                                        accept_for_training=True))


def retrain(continual_kwargs):
    """Start a retraining and let real workers carry it: training, then the four evaluations."""
    continual = continual_run_start(**continual_kwargs)
    with celery_worker_on("training", shutdown_timeout=60):
        continual = wait(continual, lambda c: c.status != ContinualRun.Status.TRAINING)
    # The training worker's end-of-run signal queued the evaluations: keep them (purge=False).
    with celery_worker_on("evaluation", purge=False):
        continual = wait(continual, lambda c: not c.is_active)
    return continual


@pytest.mark.django_db(transaction=True)
def test_corrections_retrain_a_candidate_that_passes_the_gate_is_promoted_used_and_rolled_back(
        client, settings, training_dir, trained_model_dir, doctor, ml_admin, reviewers, rubric, tmp_path):
    settings.MEDPORTAL_GATE_MARGIN, settings.MEDPORTAL_FORGETTING_BOUND = 0.25, 0.25  # a few steps move 8 cases a lot
    settings.MEDPORTAL_REPLAY_RATIO = 2.0
    active = model_version_register(name="tiny-trained", base_model=str(trained_model_dir), label_set=LABELS,
                                    activate=True, created_by=ml_admin)
    gate = case_set_import(path=write_jsonl(case_records(8, seed=21), tmp_path / "gate.jsonl"), case_set="gate",
                           actor=ml_admin).case_set
    earlier = case_set_import(path=write_jsonl(case_records(60, seed=11), tmp_path / "earlier.jsonl"),
                              case_set="earlier", actor=ml_admin).case_set
    corrections(doctor, reviewers, active, rubric, ml_admin, case_records(10, seed=31))
    assert feedback_waiting().count() == 10

    continual = retrain(dict(actor=ml_admin, gate_case_set=gate, replay_case_set=earlier,
                             parameters={"epochs": 2, "learning_rate": 1e-3, "batch_size": 8}))

    assert continual.status == ContinualRun.Status.PASSED, (continual.error, continual.gate)
    assert continual.gate["active_gate"] > 0  # the active version gets some right: the gate compared something
    assert (continual.feedback_count, continual.replay_count) == (10, 20)
    assert continual.training_run.kind == "continual" and continual.training_run.base_version == active
    candidate = continual.candidate
    assert candidate.status == "candidate" and model_version_active() == active  # promotion is the admin's
    runs = EvaluationRun.objects.filter(training_run=continual.training_run)
    assert runs.count() == 4 and all(run.status == EvaluationRun.Status.SUCCEEDED for run in runs)
    assert {run.purpose for run in runs} == {"gate", "replay"}
    assert continual.gate["active_gate"] == continual.active_gate_run.headline("accuracy")
    assert not feedback_waiting().exists()  # used: the next retraining takes only newer feedback

    client.force_login(ml_admin)
    page = client.get(reverse("admin:evaluation_continualrun_change", args=[continual.pk])).content.decode()
    assert 'data-testid="gate-verdict"' in page and 'data-testid="promote"' in page
    version_page = client.get(reverse("admin:modeling_modelversion_change", args=[candidate.pk])).content.decode()
    assert 'data-testid="version-gates"' in version_page and 'data-testid="lineage"' in version_page
    assert "tiny-trained" in version_page  # its lineage goes back to the version it continued

    response = client.post(reverse("admin:evaluation_continualrun_promote", args=[continual.pk]))
    assert response.status_code == 302
    assert model_version_active() == candidate
    continual.refresh_from_db()
    assert continual.status == ContinualRun.Status.PROMOTED

    # The next analysis a doctor asks for is made by the promoted version.
    case = case_create(author=doctor, data=CaseInput(texts={"chief_complaint": "Complaint: cough for 3 hours."}))
    with celery_worker_on("inference"):
        analysis = analysis_request(case=case, user=doctor)
        analysis = wait(analysis, lambda a: a.status in (Analysis.Status.DONE, Analysis.Status.FAILED))
    assert analysis.status == Analysis.Status.DONE and analysis.model_version == candidate

    # Rollback: one confirmed action brings the version before back.
    confirm = client.get(reverse("admin:modeling_modelversion_rollback"))
    assert 'data-testid="activation-comparison"' in confirm.content.decode()  # both were evaluated on the gate set
    client.post(reverse("admin:modeling_modelversion_rollback"))
    assert model_version_active() == active


@pytest.mark.django_db(transaction=True)
def test_a_worse_candidate_fails_the_gate_and_is_not_promoted_even_with_auto_promotion(
        settings, training_dir, trained_model_dir, doctor, ml_admin, reviewers, rubric, tmp_path):
    settings.MEDPORTAL_GATE_MARGIN, settings.MEDPORTAL_AUTO_PROMOTE = 0.0, True
    active = model_version_register(name="tiny-trained", base_model=str(trained_model_dir), label_set=LABELS,
                                    activate=True, created_by=ml_admin)
    gate = case_set_import(path=write_jsonl(case_records(8, seed=21), tmp_path / "gate.jsonl"), case_set="gate",
                           actor=ml_admin).case_set
    # Every correction says the same thing, a diagnosis no gate case has: trained on it alone, hard, the model says it
    # of every case and gets none of the gate right.
    corrections(doctor, reviewers, active, rubric, ml_admin, case_records(16, seed=41), diagnosis="contact dermatitis")

    continual = retrain(dict(actor=ml_admin, gate_case_set=gate, replay_size=0,
                             parameters={"epochs": 12, "learning_rate": 5e-3, "batch_size": 8}))

    assert continual.status == ContinualRun.Status.FAILED_GATE, (continual.error, continual.gate)
    assert continual.gate["active_gate"] > 0 and continual.gate["candidate_gate"] < continual.gate["active_gate"]
    assert continual.gate["failed_on"] == ["gate"]
    assert continual.candidate.status == "candidate"
    assert model_version_active() == active  # auto-promotion only ever promotes a candidate that passed


@pytest.mark.django_db
def test_retraining_needs_new_feedback_and_a_gate_set_with_cases(ml_admin, doctor, reviewers, rubric, tmp_path):
    version = model_version_register(name="v", base_model="/models/x", activate=True)
    gate = case_set_import(path=write_jsonl(case_records(4), tmp_path / "gate.jsonl"), case_set="gate",
                           actor=ml_admin).case_set
    with pytest.raises(ValidationError, match="No accepted feedback"):
        continual_run_start(actor=ml_admin, gate_case_set=gate)
    corrections(doctor, reviewers, version, rubric, ml_admin, case_records(2, seed=5))
    with pytest.raises(ValidationError) as error:
        continual_run_start(actor=ml_admin, gate_case_set=gate, replay_case_set=gate)
    assert "gate must stay unseen" in str(error.value)
    assert FeedbackExample.objects.count() == 2 and not ContinualRun.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["doctor", "reviewer", "auditor"])
def test_only_ml_admins_retrain_or_promote(client, request, role, ml_admin, tmp_path):
    client.force_login(request.getfixturevalue(role))
    for url in (reverse("admin:evaluation_continualrun_changelist"), reverse("admin:evaluation_continualrun_add")):
        response = client.get(url)
        assert response.status_code in (302, 403)
        if response.status_code == 302:
            assert "/login/" in response["Location"]
    with pytest.raises(PermissionDenied):
        continual_run_start(actor=request.getfixturevalue(role), gate_case_set=None)


@pytest.mark.django_db
def test_the_schedule_retrains_once_enough_feedback_waits_and_never_twice_at_once(
        settings, training_dir, ml_admin, doctor, reviewers, rubric, tmp_path, django_capture_on_commit_callbacks):
    from evaluation.services import retrain_when_feedback_waits

    model_version_register(name="v", base_model="/models/x", activate=True)
    case_set_import(path=write_jsonl(case_records(4), tmp_path / "gate.jsonl"), case_set="gate", actor=ml_admin)
    settings.MEDPORTAL_RETRAIN_AFTER, settings.MEDPORTAL_GATE_CASE_SET = 3, "gate"
    corrections(doctor, reviewers, model_version_active(), rubric, ml_admin, case_records(2, seed=5))
    assert retrain_when_feedback_waits() is None  # 2 of 3
    corrections(doctor, reviewers, model_version_active(), rubric, ml_admin, case_records(1, seed=6))
    with django_capture_on_commit_callbacks() as queued:
        continual = retrain_when_feedback_waits()
    assert continual is not None and continual.started_by is None and continual.feedback_count == 3
    assert continual.training_run.started_by is None and len(queued) == 1  # the training task
    corrections(doctor, reviewers, model_version_active(), rubric, ml_admin, case_records(3, seed=7))
    assert retrain_when_feedback_waits() is None  # one retraining at a time
    settings.MEDPORTAL_RETRAIN_AFTER = 0
    continual.status = ContinualRun.Status.FAILED
    continual.save()
    assert retrain_when_feedback_waits() is None  # switched off

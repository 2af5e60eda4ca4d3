"""Automatic evaluation runs end to end: the admin's form, a real Celery worker on the `evaluation` queue with a tiny
real model, the stored metrics beside the baseline, the per-case predictions, comparisons, the `evaluate` command, the
role matrix and bad input."""

import json
import time

import pytest
from django.core.management import call_command
from django.urls import reverse

from cases.models import AccessEvent
from cases.services import case_set_import
from evaluation.models import EvaluationPrediction, EvaluationRun
from evaluation.services import evaluation_run_create, evaluation_run_execute
from modeling.services import model_version_register
from tests.conftest import celery_worker_on
from tests.tiny_models import case_records, write_jsonl

pytestmark = pytest.mark.django_db(transaction=True)
LABELS = ["心绞痛", "支气管炎", "流感", "angina", "bronchitis", "influenza"]


@pytest.fixture
def case_set(tmp_path, ml_admin):
    return case_set_import(path=write_jsonl(case_records(12), tmp_path / "eval.jsonl"), case_set="eval-set",
                           actor=ml_admin).case_set


@pytest.fixture
def other_set(tmp_path, ml_admin):
    return case_set_import(path=write_jsonl(case_records(40, seed=5)[12:], tmp_path / "train.jsonl"),
                           case_set="train-set", actor=ml_admin).case_set


@pytest.fixture
def version(tiny_model_dir):
    return model_version_register(name="tiny-base", base_model=str(tiny_model_dir), label_set=LABELS, activate=True)


def wait_done(run: EvaluationRun, seconds: float = 120) -> EvaluationRun:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if not run.is_active:
            return run
        time.sleep(0.3)
    raise AssertionError(f"evaluation run still {run.status} after {seconds} s")


def test_a_run_started_in_the_admin_is_predicted_by_a_worker_and_reported_beside_the_baseline(
        client, ml_admin, case_set, other_set, version):
    client.force_login(ml_admin)
    form = {"model_version": version.pk, "case_set": case_set.pk, "baseline_case_set": other_set.pk,
            "max_new_tokens": 16}
    with celery_worker_on("evaluation"):
        response = client.post(reverse("admin:evaluation_evaluationrun_add"), form)
        run = EvaluationRun.objects.get()
        assert response.status_code == 302
        assert response["Location"] == reverse("admin:evaluation_evaluationrun_change", args=[run.pk])
        run = wait_done(run)
    assert run.status == EvaluationRun.Status.SUCCEEDED, run.error
    assert (run.done, run.total) == (12, 12)

    predictions = list(EvaluationPrediction.objects.filter(run=run))
    assert len(predictions) == 12
    # Every case ranked over the case set's own diagnoses in its language; the stored accuracy is the share right.
    diagnoses = {language: {c.diagnosis for c in case_set.cases.filter(language=language)} for language in ("zh", "en")}
    assert all(len(names) >= 3 for names in diagnoses.values())
    for prediction in predictions:
        ranked = [name for name, _ in prediction.prediction["ranked"]]
        assert set(ranked) == diagnoses[prediction.case.language]
    correct = sum(p.correct for p in predictions)
    assert run.metrics["overall"]["accuracy"]["value"] == pytest.approx(correct / 12)
    assert set(run.metrics["by_language"]) == {"zh", "en"}
    # The baseline: trained on the other case set, scored on the same twelve cases.
    assert run.baseline["overall"]["n"] == 12 and "train-set" in run.baseline["trained_on"]
    assert all(p.baseline_correct is not None for p in predictions)
    assert run.baseline["overall"]["accuracy"]["value"] == pytest.approx(sum(p.baseline_correct for p in predictions) / 12)
    assert run.baseline["comparison"]["n"] == 12

    page = client.get(reverse("admin:evaluation_evaluationrun_change", args=[run.pk]))
    assert page.status_code == 200
    body = page.content.decode()
    assert 'data-testid="run-metrics"' in body and 'data-testid="run-chart"' in body
    assert 'data-testid="baseline-verdict"' in body
    assert "tiny-base" in body and "Baseline (TF-IDF + LR)" in body

    wrong = client.get(reverse("admin:evaluation_evaluationrun_predictions", args=[run.pk]), {"correct": "0"})
    right = client.get(reverse("admin:evaluation_evaluationrun_predictions", args=[run.pk]), {"correct": "1"})
    assert wrong.content.decode().count('data-testid="prediction"') == 12 - correct
    assert right.content.decode().count('data-testid="prediction"') == correct
    assert AccessEvent.objects.filter(actor=ml_admin, target=f"evaluation run {run.pk} predictions").count() == 2


def test_without_training_cases_the_baseline_is_cross_fitted_by_patient(ml_admin, case_set, version):
    run = evaluation_run_create(version=version, case_set=case_set, started_by=ml_admin, max_new_tokens=8, enqueue=False)
    evaluation_run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == EvaluationRun.Status.SUCCEEDED
    assert "cross-fitted" in run.baseline["trained_on"]
    assert run.baseline["overall"]["n"] == 12


def test_two_runs_on_the_same_cases_are_compared_with_a_paired_test(client, ml_admin, case_set, version, tiny_model_dir,
                                                                     lora_adapter_dir):
    other = model_version_register(name="tiny-lora", base_model=str(tiny_model_dir), adapter=str(lora_adapter_dir),
                                   label_set=LABELS)
    runs = []
    for v in (version, other):
        run = evaluation_run_create(version=v, case_set=case_set, started_by=ml_admin, max_new_tokens=8, enqueue=False)
        evaluation_run_execute(run_id=run.pk)
        runs.append(run)
    client.force_login(ml_admin)
    page = client.get(reverse("admin:evaluation_evaluationrun_change", args=[runs[1].pk]), {"compare": runs[0].pk})
    body = page.content.decode()
    assert 'data-testid="run-comparison"' in body and "McNemar" in body
    assert 'data-testid="compare-gtpa@1"' in body


def test_the_evaluate_command_prints_the_table_and_writes_the_same_numbers(ml_admin, case_set, other_set, version,
                                                                           tmp_path, capsys):
    out = tmp_path / "report.json"
    call_command("evaluate", "--model-version", "tiny-base", "--case-set", "eval-set", "--baseline-case-set", "train-set",
                 "--max-new-tokens", "8", "--json", str(out))
    printed = capsys.readouterr().out
    run = EvaluationRun.objects.get()
    assert "baseline (TF-IDF + LR)" in printed and "gtpa@1" in printed and "McNemar" in printed
    written = json.loads(out.read_text(encoding="utf-8"))
    assert written["metrics"] == run.metrics and written["baseline"] == run.baseline
    accuracy = run.metrics["overall"]["accuracy"]["value"]
    assert f"{accuracy:.3f}" in printed.splitlines()[1]


def test_the_evaluate_command_imports_a_file_first(ml_admin, version, tmp_path, capsys):
    path = write_jsonl(case_records(6, seed=3), tmp_path / "fresh-cases.jsonl")
    call_command("evaluate", "--model-version", "tiny-base", "--file", str(path), "--max-new-tokens", "8")
    run = EvaluationRun.objects.get()
    assert run.case_set.name == "fresh-cases" and run.total == 6


def test_the_evaluate_command_says_what_is_wrong(ml_admin, version):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="No model version named 'nope'"):
        call_command("evaluate", "--model-version", "nope", "--case-set", "x")
    with pytest.raises(CommandError, match="No case set named 'missing'"):
        call_command("evaluate", "--model-version", "tiny-base", "--case-set", "missing")


def test_a_version_that_cannot_load_fails_the_run_with_a_readable_error_and_can_be_retried(client, ml_admin, case_set,
                                                                                          tmp_path):
    broken = model_version_register(name="broken", base_model=str(tmp_path / "no-such-model"), label_set=LABELS)
    run = evaluation_run_create(version=broken, case_set=case_set, started_by=ml_admin, enqueue=False)
    evaluation_run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == EvaluationRun.Status.FAILED and "no-such-model" in run.error
    client.force_login(ml_admin)
    page = client.get(reverse("admin:evaluation_evaluationrun_change", args=[run.pk]))
    assert 'data-testid="run-error"' in page.content.decode()
    with celery_worker_on("evaluation"):  # the retry is queued for a worker: still broken, so it fails again
        response = client.post(reverse("admin:evaluation_evaluationrun_retry", args=[run.pk]))
        assert response.status_code == 302
        run = wait_done(run)
    assert run.status == EvaluationRun.Status.FAILED


def test_bad_input_is_refused_with_the_reason_and_nothing_is_queued(client, ml_admin, case_set, version):
    client.force_login(ml_admin)
    add = reverse("admin:evaluation_evaluationrun_add")
    missing = client.post(add, {"model_version": version.pk, "max_new_tokens": 16})
    assert missing.status_code == 400 and "This field is required" in missing.content.decode()
    same = client.post(add, {"model_version": version.pk, "case_set": case_set.pk, "baseline_case_set": case_set.pk,
                             "max_new_tokens": 16})
    assert same.status_code == 400 and "other cases than those it is scored on" in same.content.decode()
    too_many = client.post(add, {"model_version": version.pk, "case_set": case_set.pk, "max_new_tokens": 99999})
    assert too_many.status_code == 400
    assert not EvaluationRun.objects.exists()


@pytest.mark.parametrize("role", ["doctor", "reviewer", "auditor"])
def test_only_ml_admins_see_or_start_evaluation_runs(client, request, role, ml_admin, case_set, version):
    run = evaluation_run_create(version=version, case_set=case_set, started_by=ml_admin, enqueue=False)
    client.force_login(request.getfixturevalue(role))
    for name, args in (("changelist", []), ("add", []), ("change", [run.pk]), ("predictions", [run.pk]),
                       ("progress", [run.pk])):
        response = client.get(reverse(f"admin:evaluation_evaluationrun_{name}", args=args))
        assert response.status_code in (302, 403), (name, response.status_code)
        if response.status_code == 302:  # not staff: the admin's log-in page, never the run
            assert "/login/" in response["Location"]
    assert client.post(reverse("admin:evaluation_evaluationrun_retry", args=[run.pk])).status_code in (302, 403)
    run.refresh_from_db()
    assert run.status == EvaluationRun.Status.QUEUED

"""Training runs in the product: queued by an ML admin, trained by a real Celery worker on the training queue, on the
tiny model; cancel, resume, failure, a killed worker, and the audit trail."""

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from auditlog.models import LogEntry
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from modeling.models import ModelVersion, TrainingRun
from modeling.runtime import EngineConfig, HFEngine
from modeling.selectors import model_version_active, training_run_queue_position
from modeling.services import (
    TrainingRunElsewhere,
    model_version_register,
    training_run_cancel,
    training_run_create,
    training_run_execute,
    training_run_resume,
    training_runs_fail_orphaned,
)
from tests.conftest import celery_worker_on

LABELS = ["心绞痛", "支气管炎", "流感", "angina", "bronchitis", "influenza"]
# A few seconds of training on the tiny model: a log line every step, an evaluation and a checkpoint every 3.
FAST = {
    "finetuning_type": "lora", "max_steps": 6, "batch_size": 8, "max_length": 256, "learning_rate": 5e-3, "eval_steps": 3,
    "save_steps": 3, "logging_steps": 1, "lora_dropout": 0.0,
}
PROMPT = "主诉：胸痛2小时。诊断："


pytestmark = pytest.mark.usefixtures("training_dir")


# Shared with the admin tests, which import it (named so that its parameter does not shadow the import).
@pytest.fixture(name="base_version")
def base_version_fixture(tiny_model_dir) -> ModelVersion:
    return model_version_register(name="tiny", base_model=str(tiny_model_dir), label_set=LABELS, activate=True)


def wait_until(run: TrainingRun, condition, seconds: float = 90) -> TrainingRun:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if condition(run):
            return run
        time.sleep(0.05)
    raise AssertionError(f"run {run.pk} is {run.status} at step {run.step}/{run.total_steps} after {seconds} s:\n{run.log_tail}")


def finished(run: TrainingRun, seconds: float = 90) -> TrainingRun:
    return wait_until(run, lambda r: not r.is_active, seconds)


def start(base_version, train_file, user, **overrides) -> TrainingRun:
    values = dict(kind=TrainingRun.Kind.SFT, dataset="tiny cases", train_file=train_file, base_version=base_version,
                  parameters=FAST, started_by=user)
    return training_run_create(**{**values, **overrides})


def audit(run: TrainingRun) -> list[tuple[str, str, dict]]:
    """(actor, action, changes) of the run's audit entries, oldest first."""
    entries = LogEntry.objects.get_for_object(run).order_by("timestamp", "pk")
    return [(entry.actor.username if entry.actor else "", entry.get_action_display(), entry.changes_dict) for entry in entries]


# ---------------------------------------------------------------------------------------------------- through the worker

pytestmark_worker = pytest.mark.django_db(transaction=True)


@pytestmark_worker
def test_a_run_on_the_worker_registers_a_candidate_version_whose_adapter_loads(
    ml_admin, base_version, training_jsonl, training_worker
):
    run = finished(start(base_version, training_jsonl, ml_admin))

    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert (run.step, run.total_steps, run.progress) == (6, 6, 100)
    assert [step for step, _loss in run.loss_series] == [1, 2, 3, 4, 5, 6]
    assert [step for step, _loss in run.eval_series] == [3, 6]
    assert "finished at step 6/6" in run.log_tail
    assert run.started_at <= run.finished_at and run.heartbeat_at
    assert Path(run.last_checkpoint).name == "checkpoint-6"

    version = run.result_version
    assert version.name == f"tiny-sft-{run.pk}"
    assert version.status == ModelVersion.Status.CANDIDATE and model_version_active() == base_version
    assert (version.base_model, version.created_by) == (base_version.base_model, ml_admin)
    # The base version's labels, then the diagnoses of the training file it did not have.
    trained = {record["diagnosis"] for record in map(json.loads, Path(run.train_file).read_text().splitlines())}
    assert version.label_set[: len(LABELS)] == LABELS and set(version.label_set) == set(LABELS) | trained
    assert version.metrics["best_eval_loss"] == pytest.approx(min(loss for _step, loss in run.eval_series), abs=1e-5)
    assert version.metrics["training_run"] == run.pk

    base = HFEngine.load(EngineConfig(base_model=base_version.base_model)).score_candidates(PROMPT, LABELS)
    adapted = HFEngine.load(EngineConfig(base_model=version.base_model, adapter=version.adapter))
    assert adapted.info.adapter == version.adapter
    assert adapted.score_candidates(PROMPT, LABELS) != pytest.approx(base, abs=1e-7)  # the trained adapter is applied

    trail = audit(run)
    assert trail[0][:2] == ("ml_admin", "create")
    assert trail[-1][0] == ""  # the worker's writes carry no user
    assert trail[-1][2]["status"] == ["running", "succeeded"]
    assert trail[-1][2]["result_version"][1] == str(version.pk)


@pytestmark_worker
def test_a_small_model_is_fine_tuned_whole_by_default_and_registered_as_a_model_of_its_own(
    ml_admin, base_version, tmp_path, training_worker
):
    from tests.tiny_models import write_jsonl

    records = [{"id": f"c{i}", "language": "en", "text": f"Complaint: itchy rash on the hands for {i + 2} days.",
                "diagnosis": "contact dermatitis"} for i in range(16)]
    defaults = {key: value for key, value in FAST.items() if key not in ("finetuning_type", "learning_rate")}
    run = finished(start(base_version, write_jsonl(records, tmp_path / "rash.jsonl"), ml_admin, parameters=defaults))

    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert "the whole model, learning rate 0.001" in run.log_tail
    version = run.result_version
    assert version.adapter == "" and Path(version.base_model).parent == Path(run.output_dir)
    # It ranks what it learnt as well as what its base version ranked.
    assert version.label_set == [*LABELS, "contact dermatitis"]
    engine = HFEngine.load(EngineConfig(base_model=version.base_model))
    assert engine.info.adapter is None


@pytestmark_worker
def test_runs_wait_in_line_and_a_queued_run_is_cancelled_at_once(ml_admin, base_version, training_jsonl):
    first = start(base_version, training_jsonl, ml_admin)
    second = start(base_version, training_jsonl, ml_admin)
    assert [training_run_queue_position(first), training_run_queue_position(second)] == [1, 2]

    training_run_cancel(run=first, actor=ml_admin)
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == TrainingRun.Status.CANCELLED and first.finished_at
    assert training_run_queue_position(second) == 1

    with celery_worker_on("training", purge=False, shutdown_timeout=60):
        assert finished(second).status == TrainingRun.Status.SUCCEEDED
    first.refresh_from_db()
    assert first.status == TrainingRun.Status.CANCELLED and first.started_at is None  # its task found it cancelled
    assert audit(first)[-1][:2] == ("ml_admin", "update")
    assert audit(first)[-1][2]["status"] == ["queued", "cancelled"]
    with pytest.raises(ValidationError, match="already finished"):
        training_run_cancel(run=second, actor=ml_admin)


@pytestmark_worker
def test_a_cancelled_run_stops_at_a_checkpoint_and_resumes_to_its_last_step(
    client, ml_admin, base_version, training_jsonl, training_worker
):
    # Long enough (a few seconds) that the cancel lands mid-run; the worker checks for it before every step.
    parameters = {**FAST, "max_steps": 80, "eval_steps": 40, "save_steps": 1000}
    run = start(base_version, training_jsonl, ml_admin, parameters=parameters)
    client.force_login(ml_admin)
    wait_until(run, lambda r: r.step >= 1)
    client.post(reverse("admin:modeling_trainingrun_cancel", args=[run.pk]))  # the run page's Cancel button
    run = finished(run)

    assert run.status == TrainingRun.Status.CANCELLED, run.error
    stopped_at = run.step
    assert 0 < stopped_at < 80
    assert Path(run.last_checkpoint).name == f"checkpoint-{stopped_at}" and Path(run.last_checkpoint).is_dir()
    assert f"stopped at step {stopped_at}/80" in run.log_tail
    assert run.result_version is None
    page = client.get(reverse("admin:modeling_trainingrun_change", args=[run.pk])).content.decode()
    assert "Resume from the last checkpoint" in page and f"checkpoint-{stopped_at}" in page

    client.post(reverse("admin:modeling_trainingrun_resume", args=[run.pk]))
    run = finished(run)
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert run.step == run.total_steps == 80
    steps = [step for step, _loss in run.loss_series]
    assert steps == list(range(1, 81))  # continued after the checkpoint: no step trained twice, none skipped
    assert run.result_version.status == ModelVersion.Status.CANDIDATE

    actions = [(actor, changes.get("status") or changes.get("cancel_requested")) for actor, _action, changes in audit(run)]
    assert ("ml_admin", ["False", "True"]) in actions  # the cancel request
    assert ("ml_admin", ["cancelled", "queued"]) in actions  # the resume
    assert ("", ["running", "succeeded"]) in actions


@pytestmark_worker
def test_a_run_whose_training_file_vanished_fails_with_the_reason_and_log(ml_admin, base_version, training_jsonl, tmp_path):
    run = start(base_version, training_jsonl, ml_admin)
    training_jsonl.unlink()  # e.g. cleaned up before the worker got to it

    with celery_worker_on("training", purge=False, shutdown_timeout=60):
        run = finished(run)
    assert run.status == TrainingRun.Status.FAILED
    assert run.error == f"training file not found: {training_jsonl}"
    assert run.error in run.log_tail.splitlines()[-1]
    assert run.result_version is None and run.finished_at
    assert not run.can_resume  # nothing was saved to resume from
    with pytest.raises(ValidationError, match="saved checkpoint"):
        training_run_resume(run=run, actor=ml_admin)


@pytestmark_worker
def test_a_run_ended_elsewhere_while_its_slow_worker_trains_stays_ended(ml_admin, base_version, training_jsonl,
                                                                         training_worker):
    # The web side cancels a run whose worker looked gone (no heartbeat), but the worker was only slow.
    run = start(base_version, training_jsonl, ml_admin, parameters={**FAST, "max_steps": 400})
    run = wait_until(run, lambda r: r.step >= 2)
    TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRun.Status.CANCELLED, finished_at=timezone.now())

    time.sleep(3)  # the worker notices at its next step and stops without writing over the run
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED and run.result_version is None
    step = run.step
    time.sleep(2)
    run.refresh_from_db()
    assert run.step == step < 400  # no more progress written by the old attempt
    assert not ModelVersion.objects.exclude(pk=base_version.pk).exists()


@pytestmark_worker
def test_a_diverging_run_fails_with_the_reason_instead_of_staying_running(ml_admin, training_jsonl, tiny_model_dir,
                                                                           tmp_path, training_worker):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    broken = tmp_path / "broken-model"  # the loss is not a number from the first step, as after an fp16 overflow
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] = float("inf")
    model.save_pretrained(broken)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(broken)
    version = model_version_register(name="broken", base_model=str(broken), label_set=LABELS)

    run = finished(start(version, training_jsonl, ml_admin))

    assert run.status == TrainingRun.Status.FAILED
    assert "training diverged; lower the learning rate" in run.error
    assert run.result_version is None and run.can_resume


@pytestmark_worker
@pytest.mark.parametrize("kind", [TrainingRun.Kind.CONTINUAL, TrainingRun.Kind.DISTILL])
def test_continual_and_distillation_runs_train_from_the_versions_they_name(
    kind, ml_admin, tiny_model_dir, lora_adapter_dir, training_jsonl, training_worker
):
    adapted = model_version_register(name="tiny-lora", base_model=str(tiny_model_dir), adapter=str(lora_adapter_dir),
                                     label_set=LABELS)
    plain = model_version_register(name="tiny", base_model=str(tiny_model_dir), label_set=LABELS)
    if kind == TrainingRun.Kind.CONTINUAL:
        run = start(adapted, training_jsonl, ml_admin, kind=kind)
    else:
        run = start(plain, training_jsonl, ml_admin, kind=kind, teacher_version=adapted,
                    parameters={**FAST, "distill_alpha": 0.7, "distill_temperature": 2.0})
    run = finished(run)

    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert run.result_version.name == f"{run.base_version.name}-{kind}-{run.pk}"
    if kind == TrainingRun.Kind.CONTINUAL:
        # The base version's adapter (r=4) was continued, not replaced by a new r=16 one.
        assert '"r": 4' in (Path(run.result_version.adapter) / "adapter_config.json").read_text()
    else:
        assert run.parameters["distill_alpha"] == 0.7


# ---------------------------------------------------------------------------------------------------- a killed worker


def spawn_worker(node: str, training_dir: Path) -> subprocess.Popen:
    """A training worker in its own process (as production runs it), on the test database and broker."""
    s = connection.settings_dict
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "medportal.settings.test", "MEDPORTAL_TRAINING_DIR": str(training_dir),
           "DATABASE_URL": f"postgres://{s['USER']}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}",
           "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "medportal", "worker", "-Q", "training", "--pool=solo", "-n", node,
         "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel=WARNING"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


# Stopped soon after its first checkpoint (step 5), well before its last step.
LONGER = {**FAST, "max_steps": 60, "eval_steps": 30, "save_steps": 5}


@pytestmark_worker
def test_a_killed_workers_run_is_marked_failed_when_the_worker_restarts_and_resumes(
    ml_admin, base_version, training_jsonl, training_dir
):
    run = start(base_version, training_jsonl, ml_admin, parameters=LONGER)
    node = "training@killed-in-test"
    worker = spawn_worker(node, training_dir)
    try:
        run = wait_until(run, lambda r: r.last_checkpoint != "", seconds=120)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)  # no warm shutdown, no checkpoint: as the kernel's OOM killer would
        worker.wait()
    assert run.status == TrainingRun.Status.RUNNING and run.worker == node

    with celery_worker_on("training", purge=False, shutdown_timeout=60, hostname=node):
        run.refresh_from_db()
        assert run.status == TrainingRun.Status.FAILED  # the restarted node knows its run died with it
        assert "The worker stopped during the run" in run.error and run.error in run.log_tail
        checkpoint = Path(run.last_checkpoint)
        assert checkpoint.is_dir() and checkpoint.name.startswith("checkpoint-")

        training_run_resume(run=run, actor=ml_admin)
        run = finished(run)
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert run.step == 60
    assert [step for step, _loss in run.loss_series] == list(range(1, 61))  # continued after the checkpoint, no step twice


@pytestmark_worker
def test_a_worker_shut_down_mid_run_saves_a_checkpoint_and_leaves_the_run_resumable(
    ml_admin, base_version, training_jsonl, training_dir
):
    run = start(base_version, training_jsonl, ml_admin, parameters=LONGER)
    worker = spawn_worker("training@stopped-in-test", training_dir)
    try:
        wait_until(run, lambda r: r.step >= 1, seconds=120)
        os.killpg(worker.pid, signal.SIGTERM)  # a deploy or systemd stop: Celery's warm shutdown
        assert worker.wait(timeout=30) == 0  # without waiting for the run's remaining steps
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED
    assert run.error.startswith(f"The worker stopped during the run (at step {run.step} of 60)")
    assert run.error in run.log_tail
    assert 0 < run.step < 60 and Path(run.last_checkpoint).name == f"checkpoint-{run.step}"
    assert run.can_resume


@pytestmark_worker
def test_a_redelivered_task_leaves_a_live_workers_run_alone_and_fails_a_silent_one(ml_admin, base_version, training_jsonl):
    run = start(base_version, training_jsonl, ml_admin)
    TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRun.Status.RUNNING, worker="training@a",
                                                 worker_pid=os.getpid(), started_at=timezone.now(),
                                                 heartbeat_at=timezone.now(), step=2)

    with pytest.raises(TrainingRunElsewhere):  # acks_late delivered it again, to another node: it will look again later
        training_run_execute(run_id=run.pk, worker="training@b")
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.RUNNING and run.step == 2  # training@a is alive: not trained twice
    assert training_runs_fail_orphaned(worker="training@b") == 0  # another node starting
    assert training_runs_fail_orphaned(worker="training@a") == 0  # training@a's own (live) process

    silent = timezone.now() - timedelta(minutes=10)
    TrainingRun.objects.filter(pk=run.pk).update(heartbeat_at=silent)
    training_run_execute(run_id=run.pk, worker="training@b")
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED
    assert run.error.startswith("The worker stopped during the run (at step 2")


@pytestmark_worker
def test_a_redelivered_task_looks_again_and_fails_the_run_once_the_other_node_falls_silent(
    ml_admin, base_version, training_jsonl, settings, training_worker
):
    from modeling.tasks import run_training

    settings.MEDPORTAL_TRAINING_STALE_SECONDS = 3  # production: 120
    # A run that node a took and trains (made directly: through the service this worker would take it first).
    run = TrainingRun.objects.create(kind=TrainingRun.Kind.SFT, dataset="tiny cases", train_file=str(training_jsonl),
                                     base_version=base_version, parameters=FAST, started_by=ml_admin, step=2,
                                     status=TrainingRun.Status.RUNNING, worker="training@a", worker_pid=1,
                                     started_at=timezone.now(), heartbeat_at=timezone.now())
    run_training.delay(run.pk)  # node a is killed; the broker hands its task to this worker while a still looks alive

    run = wait_until(run, lambda r: r.status != TrainingRun.Status.RUNNING, seconds=30)
    assert run.status == TrainingRun.Status.FAILED
    assert run.error.startswith("The worker stopped during the run (at step 2")


# ---------------------------------------------------------------------------------------------------- checks before queueing


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"parameters": {**FAST, "learning_rate": 5}}, "learning_rate", "between 0 and 1"),
        ({"parameters": {**FAST, "batch_size": 0}}, "batch_size", "at least 1"),
        ({"parameters": {**FAST, "max_steps": 2.5}}, "max_steps", "whole number"),
        ({"parameters": {**FAST, "quantization": "3bit"}}, "quantization", "none, 8bit or 4bit"),
        ({"parameters": {**FAST, "warmup": 3}}, "__all__", "Unknown training parameters: warmup"),
        ({"kind": TrainingRun.Kind.DISTILL}, "teacher_version", "needs a teacher"),
        ({"parameters": {**FAST, "finetuning_type": "half"}}, "finetuning_type", "auto, lora or full"),
        ({"parameters": {**FAST, "finetuning_type": "full", "quantization": "8bit"}}, "__all__", "unquantised weights"),
        ({"train_file": "/nonexistent/cases.jsonl"}, "train_file", "does not exist"),
    ],
)
def test_a_bad_request_is_refused_with_the_reason_and_queues_nothing(
    overrides, field, message, ml_admin, base_version, training_jsonl, django_capture_on_commit_callbacks
):
    overrides = dict(overrides)
    train_file = overrides.pop("train_file", training_jsonl)
    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(ValidationError) as refused:
        start(base_version, train_file, ml_admin, **overrides)
    assert message in " ".join(refused.value.message_dict[field])
    assert not TrainingRun.objects.exists() and not callbacks


@pytest.mark.django_db
def test_only_ml_admins_start_cancel_or_resume_runs(ml_admin, doctor, auditor, base_version, training_jsonl):
    for outsider in (doctor, auditor):
        with pytest.raises(PermissionDenied):
            start(base_version, training_jsonl, outsider)
    run = start(base_version, training_jsonl, ml_admin)
    with pytest.raises(PermissionDenied):
        training_run_cancel(run=run, actor=auditor)
    with pytest.raises(PermissionDenied):
        training_run_resume(run=run, actor=doctor)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.QUEUED

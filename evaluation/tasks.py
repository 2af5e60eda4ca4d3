"""The `evaluation` queue's task (routed by CELERY_TASK_ROUTES): a clinical evaluation's answers, then its assignments."""

from celery import shared_task
from django.db import OperationalError

from evaluation import services


# acks_late: a worker killed mid-batch leaves the task on the broker, and the next delivery goes on with the answers
# still queued (the ones generated are kept).
@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True,
             autoretry_for=(OperationalError,), retry_backoff=1, retry_backoff_max=30, max_retries=8)
def generate_answers(evaluation_id: int) -> None:
    services.evaluation_generate(evaluation_id=evaluation_id)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True,
             autoretry_for=(OperationalError,), retry_backoff=1, retry_backoff_max=30, max_retries=8)
def run_evaluation(run_id: int) -> None:
    services.evaluation_run_execute(run_id=run_id)


@shared_task(ignore_result=True)
def retrain_when_feedback_waits() -> None:
    services.retrain_when_feedback_waits()

"""The training queue's task (routed to `training` by CELERY_TASK_ROUTES). Run it on a worker with one process
(`--pool=solo` or `-c 1`, prefetch 1): one run at a time, the next ones wait in line as `queued`."""

from celery import shared_task
from celery.signals import worker_init
from celery.worker import state
from django.conf import settings
from django.db import OperationalError

from modeling import services


def _worker_stopping() -> bool:
    # Set by the worker's warm (TERM) or cold shutdown, to an exit code that may be 0 (hence `is`, as in
    # celery.worker.state.maybe_shutdown): the run saves a checkpoint and stops, resumable.
    return any(flag is not None and flag is not False for flag in (state.should_stop, state.should_terminate))


# A busy or unreachable database (SQLite in the demo) is retried instead of leaving the run queued for ever; a retry
# that finds its run `running` on this same node marks it failed, resumable (services.training_run_execute).
@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True,
             autoretry_for=(OperationalError,), retry_backoff=1, retry_backoff_max=30, max_retries=8)
def run_training(self, run_id: int) -> None:
    try:
        services.training_run_execute(run_id=run_id, worker=self.request.hostname or "", worker_stopping=_worker_stopping)
    except services.TrainingRunElsewhere:
        # Until that worker finishes (then there is nothing to do) or falls silent (then the run is marked failed).
        raise self.retry(countdown=settings.MEDPORTAL_TRAINING_STALE_SECONDS, max_retries=None) from None


@worker_init.connect
def fail_orphaned_training_runs(sender, **kwargs) -> None:
    """A (re)started worker, before it takes a task, marks failed the runs it was training when it went down (and
    runs whose worker has been silent too long), so an admin sees them failed and can resume them."""
    services.training_runs_fail_orphaned(worker=sender.hostname)

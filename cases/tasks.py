from celery import shared_task
from django.db import OperationalError

from cases import services


# A busy database (e.g. SQLite in the demo) is retried with backoff instead of leaving the analysis queued.
# A retry runs again the analyses that the failed attempt had already marked running.
@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True,
             autoretry_for=(OperationalError,), retry_backoff=1, retry_backoff_max=30, max_retries=8)
def run_analysis(self, analysis_id: int) -> None:
    services.analysis_run(analysis_id=analysis_id, reclaim=self.request.retries > 0)

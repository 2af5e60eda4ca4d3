from celery import shared_task

from cases import services


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_analysis(analysis_id: int) -> None:
    services.analysis_run(analysis_id=analysis_id)

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class EvaluationConfig(AppConfig):
    name = "evaluation"
    verbose_name = _("Evaluation and review")

    def ready(self):
        from modeling.signals import training_run_finished

        training_run_finished.connect(_training_run_finished, dispatch_uid="evaluation.retraining")


def _training_run_finished(sender, run_id: int, **kwargs) -> None:
    """Runs in the training worker after the run's end committed: a failure here must not fail the run's task."""
    import logging

    from evaluation.services import continual_run_training_ended

    try:
        continual_run_training_ended(training_run_id=run_id)
    except Exception:
        logging.getLogger(__name__).exception("retraining: could not queue the evaluations of training run %s", run_id)

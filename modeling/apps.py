from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ModelingConfig(AppConfig):
    name = "modeling"
    verbose_name = _("Models")

    def ready(self) -> None:
        from auditlog.registry import auditlog

        from modeling.models import ModelVersion

        auditlog.register(ModelVersion)

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class CasesConfig(AppConfig):
    name = "cases"
    verbose_name = _("Cases")

    def ready(self) -> None:
        from auditlog.registry import auditlog

        from cases.models import Case

        # The original PHI lives only in phi_ciphertext; the diffs show it masked.
        auditlog.register(Case, mask_fields=["phi_ciphertext"])

"""The model registry. The Django-free ML core lives beside it (prompts, runtime, tokenizer, training)."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _


class ModelVersion(models.Model):
    class Quantization(models.TextChoices):
        NONE = "none", _("None")
        INT8 = "8bit", _("8-bit")
        INT4 = "4bit", _("4-bit")

    class Status(models.TextChoices):
        CANDIDATE = "candidate", _("Candidate")
        ACTIVE = "active", _("Active")
        RETIRED = "retired", _("Retired")

    name = models.CharField(_("name"), max_length=100, unique=True)
    base_model = models.CharField(_("base model"), max_length=500, help_text=_("A local path or a hub id."))
    adapter = models.CharField(_("LoRA adapter"), max_length=500, blank=True)
    quantization = models.CharField(_("quantisation"), max_length=8, choices=Quantization.choices, default=Quantization.NONE)
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.CANDIDATE)
    label_set = models.JSONField(_("label set"), default=list, blank=True,
                                 help_text=_("Candidate diagnoses scored for the ranked differential."))
    metrics = models.JSONField(_("metrics"), default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("model version")
        verbose_name_plural = _("model versions")
        constraints = [
            # At most one active version at a time; promotion swaps it in one transaction.
            models.UniqueConstraint(fields=["status"], condition=Q(status="active"), name="one_active_model_version"),
        ]

    def __str__(self) -> str:
        return self.name

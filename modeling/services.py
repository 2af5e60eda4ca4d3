"""Writes to the model registry."""

from auditlog.context import set_actor
from django.db import transaction

from modeling.models import ModelVersion


def model_version_register(
    *,
    name: str,
    base_model: str,
    adapter: str = "",
    quantization: str = ModelVersion.Quantization.NONE,
    label_set: list[str] | None = None,
    metrics: dict | None = None,
    created_by=None,
    activate: bool = False,
) -> ModelVersion:
    with transaction.atomic(), set_actor(created_by):
        version = ModelVersion.objects.create(
            name=name, base_model=base_model, adapter=adapter, quantization=quantization,
            label_set=label_set or [], metrics=metrics or {}, created_by=created_by,
        )
        if activate:
            model_version_activate(version=version, actor=created_by)
    return version


def model_version_activate(*, version: ModelVersion, actor=None) -> ModelVersion:
    """Make this version the active one; the previous active version is retired in the same transaction."""
    with transaction.atomic(), set_actor(actor):
        for previous in ModelVersion.objects.select_for_update().filter(status=ModelVersion.Status.ACTIVE).exclude(pk=version.pk):
            previous.status = ModelVersion.Status.RETIRED
            previous.save(update_fields=["status"])
        version.status = ModelVersion.Status.ACTIVE
        version.save(update_fields=["status"])
    return version

"""Reads of the model registry."""

from modeling.models import ModelVersion


def model_version_active() -> ModelVersion | None:
    return ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).first()


def model_version_choices() -> list[ModelVersion]:
    """Versions a doctor may pick to re-run a case (not retired)."""
    return list(ModelVersion.objects.exclude(status=ModelVersion.Status.RETIRED).order_by("-created_at"))


def model_version_get(pk) -> ModelVersion | None:
    return ModelVersion.objects.filter(pk=pk).first() if pk else None


def model_version_by_name(name: str) -> ModelVersion | None:
    return ModelVersion.objects.filter(name=name).first()

"""Reads of the model registry."""

from django.conf import settings
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from modeling.models import ModelVersion, TrainingRun


def model_version_active() -> ModelVersion | None:
    return ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).first()


def model_version_choices() -> list[ModelVersion]:
    """Versions a doctor may pick to re-run a case (not retired)."""
    return list(ModelVersion.objects.exclude(status=ModelVersion.Status.RETIRED).order_by("-created_at"))


def model_version_get(pk) -> ModelVersion | None:
    return ModelVersion.objects.filter(pk=pk).first() if pk else None


def model_version_by_name(name: str) -> ModelVersion | None:
    return ModelVersion.objects.filter(name=name).first()


# --- Training runs -------------------------------------------------------------------------------


def training_run_list(*, user) -> QuerySet[TrainingRun]:
    """Training runs the user may watch (ML admins see all of them), newest first."""
    if not user.has_perm("modeling.view_trainingrun"):
        return TrainingRun.objects.none()
    return TrainingRun.objects.select_related("base_version", "teacher_version", "result_version", "started_by").annotate(
        # Runs ahead of a queued one in the training queue, for "waiting: n-th in line" without a query per row.
        runs_ahead=Subquery(
            TrainingRun.objects.filter(status=TrainingRun.Status.QUEUED)
            .filter(Q(queued_at__lt=OuterRef("queued_at")) | Q(queued_at=OuterRef("queued_at"), pk__lt=OuterRef("pk")))
            .order_by().values("status").annotate(n=Count("pk")).values("n")[:1]
        )
    )


def training_run_get(*, user, pk) -> TrainingRun | None:
    return training_run_list(user=user).filter(pk=pk).first()


def training_run_queue_position(run: TrainingRun) -> int | None:
    """1 for the next queued run to start, 2 for the one after it...; None unless queued."""
    if run.status != TrainingRun.Status.QUEUED:
        return None
    ahead = getattr(run, "runs_ahead", None)
    if ahead is None:
        ahead = (
            TrainingRun.objects.filter(status=TrainingRun.Status.QUEUED)
            .filter(Q(queued_at__lt=run.queued_at) | Q(queued_at=run.queued_at, pk__lt=run.pk))
            .count()
        )
    return ahead + 1


def training_run_running() -> TrainingRun | None:
    """The run on the training worker now, if any (the oldest, if several workers train)."""
    return TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING).order_by("started_at").first()


def training_run_is_stale(run: TrainingRun, *, now=None) -> bool:
    """A running run whose worker has stopped touching its heartbeat: the worker is gone."""
    if run.status != TrainingRun.Status.RUNNING:
        return False
    last = run.heartbeat_at or run.started_at
    if last is None:
        return True
    return ((now or timezone.now()) - last).total_seconds() > settings.MEDPORTAL_TRAINING_STALE_SECONDS


def model_version_training_choices() -> QuerySet[ModelVersion]:
    """Versions to train from or distil: any but the retired ones, the active one first."""
    return ModelVersion.objects.exclude(status=ModelVersion.Status.RETIRED).order_by("status", "-created_at")


def model_version_lineage(version: ModelVersion, *, limit: int = 20) -> list[dict]:
    """Where a version came from, newest first: each version with the training run that made it (None for one that
    was registered, such as a bootstrapped or downloaded model) and the data that run trained on."""
    chain, seen = [], set()
    current = version
    while current is not None and current.pk not in seen and len(chain) < limit:
        seen.add(current.pk)
        run = (TrainingRun.objects.filter(result_version=current).select_related("base_version", "started_by")
               .order_by("-pk").first())
        chain.append({"version": current, "run": run})
        current = run.base_version if run else None
    return chain

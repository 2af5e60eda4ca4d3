"""The model registry. The Django-free ML core lives beside it (prompts, runtime, tokenizer, training)."""

from auditlog.registry import auditlog
from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy


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
    # Abstention (modeling.calibration): below this probability of its ranking's first label an analysis reads
    # "uncertain" instead of asserting a diagnosis. Chosen on validation cases by `manage.py calibrate_model`.
    confidence_threshold = models.FloatField(
        _("confidence threshold"), null=True, blank=True,
        help_text=_("Below this probability of the top-ranked diagnosis the answer reads 'uncertain'. Empty: never."))
    calibration = models.JSONField(_("calibration"), default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    # When it last became the active version, and the version it replaced then: what a rollback goes back to.
    activated_at = models.DateTimeField(_("last activated"), null=True, blank=True)
    previous = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                 verbose_name=_("replaced"))

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


class TrainingRun(models.Model):
    """One LoRA fine-tuning job on the training queue, from the admin's request to the candidate version it registers."""

    class Kind(models.TextChoices):
        SFT = "sft", _("Supervised fine-tuning")
        DISTILL = "distill", _("Distillation")
        CONTINUAL = "continual", _("Continual learning")

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        RUNNING = "running", pgettext_lazy("training run status", "Running")  # an analysis "Running" reads 分析中
        SUCCEEDED = "succeeded", _("Succeeded")
        FAILED = "failed", _("Failed")
        CANCELLED = "cancelled", _("Cancelled")

    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices, default=Kind.SFT)
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.QUEUED)
    cancel_requested = models.BooleanField(_("cancel requested"), default=False)
    dataset = models.CharField(_("dataset"), max_length=300)
    train_file = models.CharField(_("training file"), max_length=1000)
    val_file = models.CharField(_("validation file"), max_length=1000, blank=True)
    base_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="training_runs",
                                     verbose_name=_("base version"))
    teacher_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, null=True, blank=True, related_name="+",
                                        verbose_name=_("teacher version"))
    parameters = models.JSONField(_("parameters"), default=dict, blank=True)
    output_dir = models.CharField(_("output folder"), max_length=1000, blank=True)
    # The checkpoint the next attempt continues from (set by a resume).
    resume_from = models.CharField(_("resume from"), max_length=1000, blank=True)
    step = models.PositiveIntegerField(_("step"), default=0)
    total_steps = models.PositiveIntegerField(_("total steps"), default=0)
    loss_series = models.JSONField(_("training loss"), default=list, blank=True)  # [[step, loss], ...]
    eval_series = models.JSONField(_("validation loss"), default=list, blank=True)  # [[step, eval_loss], ...]
    log_tail = models.TextField(_("log"), blank=True)
    error = models.TextField(_("error"), blank=True)
    started_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+", verbose_name=_("started by"))
    # The Celery node running (or last running) it: a restarted node knows its earlier run died with it.
    worker = models.CharField(_("worker"), max_length=200, blank=True)
    worker_pid = models.PositiveIntegerField(_("worker process"), null=True, blank=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    queued_at = models.DateTimeField(_("queued"), default=timezone.now)  # when it last joined the line
    started_at = models.DateTimeField(_("started"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)
    heartbeat_at = models.DateTimeField(_("last heartbeat"), null=True, blank=True)
    last_checkpoint = models.CharField(_("last checkpoint"), max_length=1000, blank=True)
    result_version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                       verbose_name=_("resulting version"))

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("training run")
        verbose_name_plural = _("training runs")

    def __str__(self) -> str:
        return _("Training run %(id)s (%(kind)s)") % {"id": self.pk, "kind": self.get_kind_display()}

    @property
    def progress(self) -> int:
        """Percent of the steps done (100 once succeeded)."""
        if self.status == self.Status.SUCCEEDED:
            return 100
        if not self.total_steps:
            return 0
        return min(100, int(100 * self.step / self.total_steps))

    @property
    def is_active(self) -> bool:
        return self.status in (self.Status.QUEUED, self.Status.RUNNING)

    @property
    def can_resume(self) -> bool:
        return self.status in (self.Status.FAILED, self.Status.CANCELLED) and bool(self.last_checkpoint)


# Start, cancel, resume and result are saved rows and so audited; progress (series, log, heartbeat) is written with
# update() during the run and left out of the diffs, which would otherwise repeat the whole loss curve.
auditlog.register(TrainingRun, exclude_fields=["loss_series", "eval_series", "log_tail", "heartbeat_at"])

"""Writes to the model registry and to training runs."""

import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from auditlog.context import set_actor
from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS, PermissionDenied, ValidationError
from django.db import DatabaseError, connection, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from modeling.models import ModelVersion, TrainingRun
from modeling.selectors import training_run_is_stale
from modeling.signals import training_run_finished
from modeling.training import (
    FINETUNING_TYPES,
    FineTuneRun,
    TrainConfig,
    TrainEvent,
    TrainingError,
    TrainResult,
    checkpoint_step,
    checkpoints,
)

logger = logging.getLogger(__name__)


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
            version = model_version_activate(version=version, actor=created_by)
    return version


def model_version_calibrate(*, version: ModelVersion, calibration: dict, actor=None) -> ModelVersion:
    """Store a version's abstention threshold and the validation figures it was chosen on (audited)."""
    with transaction.atomic(), set_actor(actor):
        version.confidence_threshold, version.calibration = calibration["threshold"], calibration
        version.save(update_fields=["confidence_threshold", "calibration"])
    return version


def model_version_activate(*, version: ModelVersion, actor=None, rollback: bool = False) -> ModelVersion:
    """Make this version the active one, in one transaction (audited).

    The version it replaces becomes a candidate again: it stays selectable for re-runs and evaluations, and a rollback
    (``rollback=True``, activating the version recorded as replaced) brings it back. A retired version is not activated.
    """
    with transaction.atomic(), set_actor(actor):
        version = ModelVersion.objects.select_for_update().get(pk=version.pk)
        if version.status == ModelVersion.Status.RETIRED:
            raise ValidationError(_("%(version)s is retired and cannot be activated.") % {"version": version.name})
        if version.status == ModelVersion.Status.ACTIVE:
            return version
        current = ModelVersion.objects.select_for_update().filter(status=ModelVersion.Status.ACTIVE).first()
        if current is not None:
            current.status = ModelVersion.Status.CANDIDATE
            current.save(update_fields=["status"])
        version.status, version.activated_at = ModelVersion.Status.ACTIVE, timezone.now()
        fields = ["status", "activated_at"]
        if not rollback and current is not None:
            version.previous = current
            fields.append("previous")
        version.save(update_fields=fields)
    return version


def model_version_rollback(*, actor=None) -> ModelVersion:
    """Activate the version the active one replaced; a ValidationError when there is none to go back to."""
    current = ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).select_related("previous").first()
    target = current.previous if current else None
    if target is None:
        raise ValidationError(_("There is no earlier active version to roll back to."))
    if target.status == ModelVersion.Status.RETIRED:
        raise ValidationError(_("%(version)s, the version before, has been retired.") % {"version": target.name})
    return model_version_activate(version=target, actor=actor, rollback=True)


def model_version_retire(*, version: ModelVersion, actor=None) -> ModelVersion:
    """Withdraw a version: doctors and evaluations no longer choose it. The active version cannot be retired."""
    with transaction.atomic(), set_actor(actor):
        version = ModelVersion.objects.select_for_update().get(pk=version.pk)
        if version.status == ModelVersion.Status.ACTIVE:
            raise ValidationError(_("%(version)s is the active version; activate another one before retiring it.") % {
                "version": version.name})
        version.status = ModelVersion.Status.RETIRED
        version.save(update_fields=["status"])
    return version


# --- Training runs -------------------------------------------------------------------------------

# The TrainConfig fields an ML admin sets for a run (defaults: TrainConfig's). Everything else (files, models,
# resume) comes from the run itself.
TRAINING_PARAMETERS = (
    "finetuning_type", "epochs", "max_steps", "batch_size", "max_length", "learning_rate", "lora_r", "lora_alpha",
    "lora_dropout", "quantization", "term_weight", "diagnosis_weight", "augment", "augment_copies", "eval_steps",
    "save_steps", "save_total_limit", "logging_steps", "distill_alpha", "distill_temperature",
)
DISTILL_PARAMETERS = ("distill_alpha", "distill_temperature")
_WHOLE_AT_LEAST_ONE = ("batch_size", "max_length", "lora_r", "lora_alpha", "eval_steps", "save_steps", "logging_steps",
                       "augment_copies", "save_total_limit")
LOG_TAIL_LINES = 50
SERIES_MAX_POINTS = 2000  # a longer curve is thinned (every other point) so a flush stays small
FLUSH_SECONDS = 1.0  # progress reaches the database at most this often (and at every eval, checkpoint and the end)


def training_parameter_defaults() -> dict:
    config = TrainConfig(base_model="", train_file="", output_dir="")
    return {name: getattr(config, name) for name in TRAINING_PARAMETERS}


def training_parameters_clean(parameters: dict, *, kind: str) -> dict:
    """The admin's parameters as TrainConfig values (defaults filled in); a ValidationError keyed by parameter."""
    unknown = sorted(set(parameters) - set(TRAINING_PARAMETERS))
    if unknown:
        raise ValidationError({NON_FIELD_ERRORS: _("Unknown training parameters: %(names)s.") % {"names": ", ".join(unknown)}})
    # An empty field means the default (for max_steps: none, train for the given epochs).
    values = {**training_parameter_defaults(), **{k: v for k, v in parameters.items() if v is not None and v != ""}}
    errors: dict[str, str] = {}

    def whole(name: str) -> int | None:
        value = values[name]
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = None
        if isinstance(value, bool) or number is None or number != float(value):
            errors[name] = _("Enter a whole number.")
            return None
        return number

    def number(name: str) -> float | None:
        try:
            return float(values[name])
        except (TypeError, ValueError):
            errors[name] = _("Enter a number.")
            return None

    for name in _WHOLE_AT_LEAST_ONE:
        value = whole(name)
        if value is not None and value < 1:
            errors[name] = _("Enter a whole number of at least 1.")
        values[name] = value
    if values["max_steps"] is not None:
        value = whole("max_steps")
        if value is not None and value < 1:
            errors["max_steps"] = _("Enter a whole number of at least 1, or leave it empty to train for the given epochs.")
        values["max_steps"] = value
    checks = {
        "epochs": (lambda v: v > 0, _("Enter a positive number of epochs.")),
        "learning_rate": (lambda v: 0 < v < 1, _("The learning rate must be between 0 and 1, e.g. 0.0002.")),
        "lora_dropout": (lambda v: 0 <= v < 1, _("The dropout must be at least 0 and below 1.")),
        "term_weight": (lambda v: v > 0, _("The term weight must be positive (1 weighs terms like any other token).")),
        "diagnosis_weight": (lambda v: v > 0, _("The diagnosis weight must be positive (1 weighs it like any other token).")),
        "distill_alpha": (lambda v: 0 <= v <= 1, _("The distillation weight α must be between 0 and 1.")),
        "distill_temperature": (lambda v: v > 0, _("The temperature must be positive.")),
    }
    for name, (valid, message) in checks.items():
        if name == "learning_rate" and values[name] is None:
            continue  # the default for the kind of fine-tuning (modeling.training.DEFAULT_LEARNING_RATE)
        value = number(name)
        if value is not None and not valid(value):
            errors[name] = message
        values[name] = value
    if not isinstance(values["augment"], bool):
        values["augment"] = str(values["augment"]).lower() in ("true", "1", "on", "yes")
    if values["quantization"] not in ModelVersion.Quantization.values:
        errors["quantization"] = _("Choose none, 8bit or 4bit.")
    if values["finetuning_type"] not in FINETUNING_TYPES:
        errors["finetuning_type"] = _("Choose auto, lora or full.")
    if errors:
        raise ValidationError(errors)
    if kind != TrainingRun.Kind.DISTILL:
        for name in DISTILL_PARAMETERS:
            values.pop(name)
    try:  # the training core's own checks, so a run never starts with values it would refuse
        TrainConfig(base_model="-", train_file="-", output_dir="-", **values)
    except TrainingError as error:
        raise ValidationError({NON_FIELD_ERRORS: str(error)}) from None
    return values


def training_run_request_errors(*, kind: str, base_version: ModelVersion | None, teacher_version: ModelVersion | None) -> dict:
    errors = {}
    if kind not in TrainingRun.Kind.values:
        errors["kind"] = _("Choose supervised fine-tuning, distillation or continual learning.")
    if base_version is None:
        errors["base_version"] = _("Choose the model version to train from.")
    if kind == TrainingRun.Kind.DISTILL and teacher_version is None:
        errors["teacher_version"] = _("Distillation needs a teacher version.")
    elif kind != TrainingRun.Kind.DISTILL and teacher_version is not None:
        errors["teacher_version"] = _("Only distillation uses a teacher version.")
    elif teacher_version is not None and teacher_version == base_version:
        errors["teacher_version"] = _("The teacher must be another version than the student.")
    return errors


def training_run_create(
    *,
    kind: str,
    dataset: str,
    train_file: str | Path,
    val_file: str | Path | None = None,
    base_version: ModelVersion,
    parameters: dict,
    started_by,
    teacher_version: ModelVersion | None = None,
) -> TrainingRun:
    """Queue a training run; the training task is enqueued once the transaction commits."""
    from modeling.tasks import run_training

    # started_by None: the product itself (retraining from feedback on a schedule).
    if started_by is not None and not started_by.has_perm("modeling.add_trainingrun"):
        raise PermissionDenied(_("Only ML admins can start training runs."))
    errors = training_run_request_errors(kind=kind, base_version=base_version, teacher_version=teacher_version)
    for name, path in (("train_file", train_file), ("val_file", val_file)):
        if path and not Path(path).is_file():
            errors[name] = _("The file %(path)s does not exist.") % {"path": path}
    try:
        cleaned = training_parameters_clean(parameters, kind=kind)
    except ValidationError as error:
        errors = {**error.message_dict, **errors}
    if errors:
        raise ValidationError(errors)
    with transaction.atomic(), set_actor(started_by):
        run = TrainingRun.objects.create(
            kind=kind, dataset=dataset, train_file=str(train_file), val_file=str(val_file or ""), base_version=base_version,
            teacher_version=teacher_version, parameters=cleaned, started_by=started_by,
        )
        # Known from the start, so the run's page can say where checkpoints will be (set without a second audit entry).
        run.output_dir = str(Path(settings.MEDPORTAL_TRAINING_DIR) / f"run-{run.pk}")
        TrainingRun.objects.filter(pk=run.pk).update(output_dir=run.output_dir)
        transaction.on_commit(lambda: run_training.delay(run.pk))
    return run


def training_run_cancel(*, run: TrainingRun, actor) -> TrainingRun:
    """A queued run is cancelled now; a running one is asked to stop, and stops after saving a checkpoint."""
    if not actor.has_perm("modeling.change_trainingrun"):
        raise PermissionDenied(_("Only ML admins can cancel training runs."))
    with transaction.atomic(), set_actor(actor):
        run = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if run.status == TrainingRun.Status.QUEUED or training_run_is_stale(run):
            # Nobody trains it: no worker took it yet (the task will find it cancelled), or its worker is gone.
            run.status, run.finished_at = TrainingRun.Status.CANCELLED, timezone.now()
            run.last_checkpoint = _newest_checkpoint(run) or run.last_checkpoint
            run.save()
            _announce_end(run.pk)
        elif run.status == TrainingRun.Status.RUNNING:
            run.cancel_requested = True
            run.save()
        else:
            raise ValidationError(_("This training run has already finished."))
    return run


def training_run_resume(*, run: TrainingRun, actor) -> TrainingRun:
    """Queue a failed or cancelled run again; it continues from its last checkpoint."""
    from modeling.tasks import run_training

    if not actor.has_perm("modeling.change_trainingrun"):
        raise PermissionDenied(_("Only ML admins can resume training runs."))
    with transaction.atomic(), set_actor(actor):
        run = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if not run.can_resume:
            raise ValidationError(_("Only a failed or cancelled run with a saved checkpoint can be resumed."))
        if not Path(run.last_checkpoint).is_dir():
            raise ValidationError(
                _("The checkpoint %(path)s is no longer there; start a new run instead.") % {"path": run.last_checkpoint}
            )
        run.status, run.cancel_requested, run.error = TrainingRun.Status.QUEUED, False, ""
        run.resume_from, run.queued_at, run.finished_at = run.last_checkpoint, timezone.now(), None
        run.save()
        transaction.on_commit(lambda: run_training.delay(run.pk))
    return run


def _worker_stopped_message(run: TrainingRun) -> str:
    return _(
        "The worker stopped during the run (at step %(step)s of %(total)s). Resume it to continue from its last "
        "checkpoint."
    ) % {"step": run.step, "total": run.total_steps or "?"}


def training_runs_fail_orphaned(*, worker: str) -> int:
    """Mark failed the runs left `running` by a worker that is gone: this worker node in an earlier process (node
    names are unique among live workers, so that process has died), or any worker silent for longer than
    MEDPORTAL_TRAINING_STALE_SECONDS. Returns how many. Called when a worker starts."""
    stale_before = timezone.now() - timedelta(seconds=settings.MEDPORTAL_TRAINING_STALE_SECONDS)
    earlier_process = Q(worker=worker) & ~Q(worker_pid=os.getpid())
    orphaned = 0
    with transaction.atomic():
        for run in TrainingRun.objects.select_for_update(skip_locked=True).filter(
            earlier_process | Q(heartbeat_at__lt=stale_before), status=TrainingRun.Status.RUNNING
        ):
            _fail_orphaned(run)
            orphaned += 1
    return orphaned


def _fail_orphaned(run: TrainingRun) -> None:
    message = _worker_stopped_message(run)
    run.status, run.error, run.finished_at = TrainingRun.Status.FAILED, message, timezone.now()
    run.last_checkpoint = _newest_checkpoint(run) or run.last_checkpoint
    run.log_tail = _tail([*run.log_tail.splitlines(), _log_line(message)])
    run.save()
    _announce_end(run.pk)


def _newest_checkpoint(run: TrainingRun) -> str:
    """The newest checkpoint on disk: a worker that died may have saved one after its last progress write."""
    found = checkpoints(run.output_dir) if run.output_dir else []
    return str(found[-1]) if found else ""


def _log_line(message: str) -> str:
    return f"{timezone.localtime():%H:%M:%S} {message}"


def _tail(lines) -> str:
    return "\n".join(list(lines)[-LOG_TAIL_LINES:])


def training_run_execute(*, run_id: int, worker: str = "", worker_stopping: Callable[[], bool] | None = None) -> None:
    """Train a queued run (the training task). Idempotent: acks_late may deliver the task twice.

    A run found `running` means an earlier delivery's worker took it: if that worker is gone (this same node,
    restarted, or no heartbeat for MEDPORTAL_TRAINING_STALE_SECONDS) the run is marked failed, resumable from its
    last checkpoint; it is not trained again by itself, since what killed the worker (memory, a bad batch) may kill
    the next one too. A live worker's run is left alone.
    """
    run = _training_run_claim(run_id=run_id, worker=worker)
    if run is None:
        return
    progress = _RunProgress(run, worker_stopping or (lambda: False))
    heartbeat = _Heartbeat(run.pk, progress.mine)
    heartbeat.start()
    try:
        try:
            trainer = FineTuneRun(training_config(run), on_event=progress.on_event, should_stop=progress.should_stop)
            try:
                trainer.setup()
                result = trainer.train()
            finally:
                trainer.cleanup()
        except TrainingError as error:  # written for people: a missing file, an unknown model, a tokenizer mismatch
            _training_run_fail(run, progress, str(error))
        except Exception as error:
            logger.exception("training run %s failed", run.pk)
            detail = f"{type(error).__name__}: {error}"[:500]
            _training_run_fail(run, progress, _("Training stopped with an unexpected error (%(detail)s).") % {"detail": detail})
        except BaseException:  # the worker is being shut down or killed
            progress.apply(run)
            _training_run_fail(run, progress, _worker_stopped_message(run))
            raise
        else:
            try:
                _training_run_finish(run, progress, result)
            except Exception as error:  # e.g. the candidate cannot be registered: never leave the run "running"
                logger.exception("training run %s: saving the result failed", run.pk)
                TrainingRun.objects.filter(pk=run.pk).update(
                    status=TrainingRun.Status.FAILED, finished_at=timezone.now(),
                    error=_("Training finished but its result could not be saved (%(detail)s).")
                    % {"detail": f"{type(error).__name__}: {error}"[:500]},
                )
    finally:
        heartbeat.stop()


def training_config(run: TrainingRun) -> TrainConfig:
    """The run as the training core's config: the admin's parameters plus the files and models the run names."""
    base = run.base_version
    values = {
        **run.parameters,
        "base_model": base.base_model,
        "train_file": run.train_file,
        "val_file": run.val_file or None,
        "output_dir": run.output_dir,
        "resume_from_checkpoint": run.resume_from or None,
    }
    if run.kind == TrainingRun.Kind.CONTINUAL and base.adapter:  # else the version's whole model trains on
        values["adapter"] = base.adapter
    if run.kind == TrainingRun.Kind.DISTILL:
        values["distill_teacher"] = run.teacher_version.base_model
        values["distill_teacher_adapter"] = run.teacher_version.adapter or None
    return TrainConfig.from_dict(values)


class TrainingRunElsewhere(Exception):
    """The run is `running` on another live worker; ask again once its heartbeat could have gone stale."""


def _training_run_claim(*, run_id: int, worker: str) -> TrainingRun | None:
    with transaction.atomic():
        run = (TrainingRun.objects.select_for_update(of=("self",)).select_related("base_version", "teacher_version")
               .filter(pk=run_id).first())
        if run is None or run.status not in (TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING):
            return None  # cancelled while queued, finished, or deleted
        if run.status == TrainingRun.Status.RUNNING:
            # On this same node the earlier delivery is over (a one-process worker runs one task at a time): it was
            # retried after an error, or the node restarted.
            if run.worker == worker or training_run_is_stale(run):
                _fail_orphaned(run)
                return None
            # Another node trains it, or did until it died a moment ago: dropping this delivery would leave nobody
            # to notice if it did. The task looks again later (modeling.tasks.run_training).
            raise TrainingRunElsewhere(run.worker)
        now = timezone.now()
        run.status, run.started_at, run.heartbeat_at = TrainingRun.Status.RUNNING, now, now
        run.worker, run.worker_pid = worker, os.getpid()
        run.output_dir = run.output_dir or str(Path(settings.MEDPORTAL_TRAINING_DIR) / f"run-{run.pk}")
        resume_step = checkpoint_step(run.resume_from) if run.resume_from else None
        if resume_step is not None:  # the steps after the checkpoint are trained (and logged) again
            run.loss_series = [point for point in run.loss_series if point[0] <= resume_step]
            run.eval_series = [point for point in run.eval_series if point[0] <= resume_step]
            run.step = resume_step
        # In English, like the training core's own log lines around it (the worker's language is nobody's choice).
        message = f"Resuming from {run.resume_from}." if run.resume_from else f"Started on {worker or '?'}."
        run.log_tail = _tail([*run.log_tail.splitlines(), _log_line(message)])
        run.save()
    return run


def _still_mine(run: TrainingRun | None, progress: "_RunProgress") -> bool:
    if run is None:
        logger.warning("training run %s was ended or taken over while this worker trained it; its result is not saved",
                       progress.run_id)
    return run is not None


def _announce_end(run_id: int) -> None:
    """Tell the apps above (evaluation's retraining) that the run ended, once that is committed."""
    transaction.on_commit(lambda: training_run_finished.send(sender=TrainingRun, run_id=run_id))


def _training_run_fail(run: TrainingRun, progress: "_RunProgress", message: str) -> None:
    progress.log.append(_log_line(message))
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().filter(progress.mine).first()
        if not _still_mine(run, progress):
            return
        progress.apply(run)
        run.status, run.error, run.finished_at = TrainingRun.Status.FAILED, message, timezone.now()
        run.last_checkpoint = _newest_checkpoint(run) or run.last_checkpoint
        run.save()
        _announce_end(run.pk)


def _training_run_finish(run: TrainingRun, progress: "_RunProgress", result: TrainResult) -> None:
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update(of=("self",)).select_related("base_version").filter(progress.mine).first()
        if not _still_mine(run, progress):
            return
        progress.apply(run)
        run.finished_at = timezone.now()
        run.last_checkpoint = str(result.last_checkpoint or "") or _newest_checkpoint(run)
        if result.stopped and progress.stopped_by_worker:
            run.status, run.error = TrainingRun.Status.FAILED, _worker_stopped_message(run)
            run.log_tail = _tail([*run.log_tail.splitlines(), _log_line(run.error)])
        elif result.stopped:
            run.status = TrainingRun.Status.CANCELLED
        else:
            run.status = TrainingRun.Status.SUCCEEDED
            run.result_version = _register_candidate(run, result)
        run.save()
        _announce_end(run.pk)


def _register_candidate(run: TrainingRun, result: TrainResult) -> ModelVersion:
    """The trained adapter as a candidate version of the run's base model (promoted only by an admin or the gate)."""
    base = run.base_version
    suffix = f"-{run.kind}-{run.pk}"
    name = base.name[: 100 - len(suffix) - 3] + suffix
    taken = set(ModelVersion.objects.filter(name__startswith=name).values_list("name", flat=True))
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}-{n}", n + 1
    metrics = {
        **result.metrics, "steps": result.steps, "training_run": run.pk, "kind": run.kind, "dataset": run.dataset,
    }
    if result.finetuning_type == "full":  # a whole model of its own, with its tokenizer
        base_model, adapter = str(result.adapter_dir), ""
    else:
        base_model, adapter = base.base_model, str(result.adapter_dir)
    return model_version_register(
        name=candidate, base_model=base_model, adapter=adapter, quantization=base.quantization,
        label_set=_label_set(base, run.train_file), metrics=metrics, created_by=run.started_by,
    )


def _label_set(base: ModelVersion, train_file: str) -> list[str]:
    """The base version's labels, then the diagnoses the run was trained on that it lacks (most frequent first): a
    version ranks what it learnt."""
    from collections import Counter

    from modeling.records import read_records

    try:
        trained = Counter(record.diagnosis for record in read_records(train_file))
    except (OSError, ValueError):
        trained = Counter()
    known = list(base.label_set)
    return known + [label for label, _count in trained.most_common() if label not in set(known)]


class _RunProgress:
    """Collects the training core's events and writes them to the run, at most once a second."""

    def __init__(self, run: TrainingRun, worker_stopping: Callable[[], bool]):
        self.run_id = run.pk
        # This attempt's claim on the run. The web side may end a run it believes abandoned (a cancel of a silent run,
        # a restarted worker's sweep) and an admin may resume it; a worker that was only slow then stops and writes
        # nothing more over the run's new state.
        self.mine = Q(pk=run.pk, status=TrainingRun.Status.RUNNING, worker=run.worker, worker_pid=run.worker_pid,
                      started_at=run.started_at)
        self.output_dir = run.output_dir
        self.step, self.total_steps = run.step, run.total_steps
        self.loss_series, self.eval_series = list(run.loss_series), list(run.eval_series)
        self.log = deque(run.log_tail.splitlines(), maxlen=LOG_TAIL_LINES)
        self.last_checkpoint = run.last_checkpoint
        self.worker_stopping = worker_stopping
        self.stopped_by_worker = False
        self._flushed_at = 0.0

    def on_event(self, event: TrainEvent) -> None:
        self.step, self.total_steps = event.step, event.total_steps
        if event.kind == "log" and event.loss is not None:
            self._append(self.loss_series, [event.step, round(event.loss, 5)])
        elif event.kind == "eval" and event.eval_loss is not None:
            self._append(self.eval_series, [event.step, round(event.eval_loss, 5)])
        elif event.kind == "checkpoint":
            found = checkpoints(self.output_dir)
            self.last_checkpoint = str(found[-1]) if found else self.last_checkpoint
        if event.message:
            self.log.append(_log_line(event.message))
        if event.kind != "log" or time.monotonic() - self._flushed_at >= FLUSH_SECONDS:
            self.flush()

    @staticmethod
    def _append(series: list, point: list) -> None:
        if not math.isfinite(point[1]):
            return  # JSON has no NaN or infinity; a diverging run stops with its own message (training.TrainingError)
        series.append(point)
        if len(series) > SERIES_MAX_POINTS:
            series[:] = series[:-1:2] + series[-1:]

    def should_stop(self) -> bool:
        """Asked before every step: the admin's cancel, the run no longer being this attempt's, or the worker's shutdown."""
        if self.worker_stopping():
            self.stopped_by_worker = True
            return True
        return not TrainingRun.objects.filter(self.mine, cancel_requested=False).exists()

    def fields(self) -> dict:
        return {
            "step": self.step, "total_steps": self.total_steps, "loss_series": self.loss_series,
            "eval_series": self.eval_series, "log_tail": "\n".join(self.log), "last_checkpoint": self.last_checkpoint,
        }

    def apply(self, run: TrainingRun) -> None:
        for name, value in self.fields().items():
            setattr(run, name, value)

    def flush(self) -> None:
        # update(), not save(): progress is not an audited change (see modeling.models).
        self._flushed_at = time.monotonic()
        try:
            TrainingRun.objects.filter(self.mine).update(**self.fields(), heartbeat_at=timezone.now())
        except DatabaseError:  # e.g. SQLite busy in the demo; the next flush writes it all again
            logger.warning("training run %s: progress not saved this time", self.run_id, exc_info=True)


class _Heartbeat(threading.Thread):
    """Touches the run's heartbeat_at while the worker lives, even through a long model load or evaluation."""

    def __init__(self, run_id: int, mine: Q):
        super().__init__(name=f"training-run-{run_id}-heartbeat", daemon=True)
        self.run_id, self.mine = run_id, mine
        self._done = threading.Event()

    def run(self) -> None:
        try:
            while not self._done.wait(settings.MEDPORTAL_TRAINING_HEARTBEAT_SECONDS):
                try:
                    TrainingRun.objects.filter(self.mine).update(heartbeat_at=timezone.now())
                except DatabaseError:
                    logger.warning("training run %s: heartbeat not saved", self.run_id, exc_info=True)
        finally:
            connection.close()  # this thread's own connection

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=10)

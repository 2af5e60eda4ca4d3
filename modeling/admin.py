from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from modeling.models import ModelVersion, TrainingRun
from modeling.selectors import (
    model_version_training_choices,
    training_run_get,
    training_run_is_stale,
    training_run_list,
    training_run_queue_position,
    training_run_running,
)
from modeling.services import (
    TRAINING_PARAMETERS,
    model_version_retire,
    training_parameter_defaults,
    training_run_cancel,
    training_run_resume,
)


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    """The registry. The version page (evaluations, gate, lineage, activation with a comparison, rollback) is this admin
    extended by the evaluation app, which owns the evaluations it shows (evaluation.admin.VersionAdmin)."""

    list_display = ["name", "status", "base_model", "adapter", "quantization", "activated_at", "created_at"]
    list_filter = ["status", "quantization"]
    readonly_fields = ["status", "metrics", "calibration", "activated_at", "previous", "created_by", "created_at"]
    actions = ["retire"]

    @admin.action(description=_("Retire the selected versions"), permissions=["change"])
    def retire(self, request, queryset):
        for version in queryset:
            try:
                model_version_retire(version=version, actor=request.user)
            except ValidationError as error:
                self.message_user(request, " ".join(error.messages), messages.ERROR)
            else:
                self.message_user(request, _("%(version)s is retired.") % {"version": version}, messages.SUCCESS)

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)


# --- Training runs -------------------------------------------------------------------------------

CHART_WIDTH, CHART_HEIGHT = 640, 220
CHART_PAD = {"left": 56, "right": 12, "top": 12, "bottom": 30}


class TrainingRunStartForm(forms.Form):
    """What an ML admin chooses for a run; the services check the combination and the parameters' ranges."""

    kind = forms.ChoiceField(label=_("Kind"), choices=TrainingRun.Kind.choices, initial=TrainingRun.Kind.SFT, help_text=_(
        "Supervised fine-tuning trains the version's model on the chosen cases (the whole model or a new LoRA adapter, "
        "see Fine-tuning); continual learning continues the version's adapter, or its whole model when it has none; "
        "distillation trains the student toward a teacher version's answers."))
    dataset = forms.ChoiceField(label=_("Training data"), help_text=_(
        "A labelled case set. Its de-identified cases are exported for the run when it is queued."))
    val_dataset = forms.ChoiceField(label=_("Validation data"), required=False, help_text=_(
        "Optional. Without it, a tenth of the training cases is held out, split by patient."))
    base_version = forms.ModelChoiceField(label=_("Base version"), queryset=ModelVersion.objects.none(), help_text=_(
        "The model version to train from (the student, for distillation)."))
    teacher_version = forms.ModelChoiceField(label=_("Teacher version"), queryset=ModelVersion.objects.none(),
                                             required=False, help_text=_("Distillation only."))
    finetuning_type = forms.ChoiceField(label=_("Fine-tuning"), choices=[
        ("auto", _("Automatic: the whole model when it is small (under 100M parameters), else LoRA")),
        ("lora", _("LoRA adapters")), ("full", _("The whole model"))])
    epochs = forms.FloatField(label=_("Epochs"))
    max_steps = forms.IntegerField(label=_("Maximum steps"), required=False,
                                   help_text=_("Optional; when set, the run stops after this many steps."))
    batch_size = forms.IntegerField(label=_("Batch size"))
    max_length = forms.IntegerField(label=_("Maximum length"), help_text=_("Tokens per example (prompt and answer)."))
    learning_rate = forms.FloatField(label=_("Learning rate"), required=False, help_text=_(
        "Empty: 0.001 for the whole model, 0.0002 for LoRA adapters."))
    lora_r = forms.IntegerField(label=_("LoRA rank r"))
    lora_alpha = forms.IntegerField(label=_("LoRA alpha"))
    lora_dropout = forms.FloatField(label=_("LoRA dropout"))
    quantization = forms.ChoiceField(label=_("Quantisation"), choices=ModelVersion.Quantization.choices, help_text=_(
        "Of the base model while training: 8-bit or 4-bit (QLoRA) need less memory; 4-bit needs a CUDA GPU."))
    term_weight = forms.FloatField(label=_("Medical term weight"), help_text=_(
        "Loss weight of answer tokens inside medical terms; 1 weighs them like any other token."))
    diagnosis_weight = forms.FloatField(label=_("Diagnosis weight"), help_text=_(
        "Loss weight of the answer's diagnosis line, the section the ranking and the headline rest on; 1 weighs it like "
        "any other token (4 helped small models on DDXPlus)."))
    augment = forms.BooleanField(label=_("Augment"), required=False, help_text=_(
        "Add rephrased variants of each training case (synonyms, listed findings in another order)."))
    augment_copies = forms.IntegerField(label=_("Variants per case"), help_text=_("With Augment."))
    eval_steps = forms.IntegerField(label=_("Evaluate every (steps)"))
    save_steps = forms.IntegerField(label=_("Checkpoint every (steps)"))
    save_total_limit = forms.IntegerField(label=_("Checkpoints kept"))
    logging_steps = forms.IntegerField(label=_("Log every (steps)"))
    distill_alpha = forms.FloatField(label=_("Distillation weight α"), help_text=_("Distillation only: 0 = plain fine-tuning."))
    distill_temperature = forms.FloatField(label=_("Distillation temperature"), help_text=_("Distillation only."))

    fieldsets = (
        (_("What to train"), ("kind", "dataset", "val_dataset", "base_version", "teacher_version")),
        (_("Parameters"), ("finetuning_type", "epochs", "max_steps", "batch_size", "max_length", "learning_rate", "lora_r",
                           "lora_alpha",
                           "lora_dropout", "quantization", "term_weight", "diagnosis_weight", "augment", "augment_copies",
                           "eval_steps", "save_steps", "save_total_limit", "logging_steps")),
        (_("Distillation"), ("distill_alpha", "distill_temperature")),
    )

    def __init__(self, *args, datasets: list[tuple[str, str]], **kwargs):
        super().__init__(*args, initial={**training_parameter_defaults(), **kwargs.pop("initial", {})}, **kwargs)
        self.fields["dataset"].choices = [("", "---------"), *datasets]
        self.fields["val_dataset"].choices = [("", _("(a tenth of the training data)")), *datasets]
        versions = model_version_training_choices()
        self.fields["base_version"].queryset = versions
        self.fields["teacher_version"].queryset = versions
        self.fields["base_version"].initial = versions.filter(status=ModelVersion.Status.ACTIVE).first()

    def grouped(self):
        return [(title, [self[name] for name in names]) for title, names in self.fieldsets]

    def add_service_error(self, error: ValidationError) -> None:
        """Put the service's errors next to their fields (file errors next to the data they came from)."""
        moved = {"train_file": "dataset", "val_file": "val_dataset"}
        for key, errors in error.message_dict.items() if hasattr(error, "error_dict") else [(None, error.messages)]:
            key = moved.get(key, key)
            self.add_error(key if key in self.fields else None, errors)


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ["number", "status_in_line", "kind", "dataset", "progress_bar", "started_by", "created_at"]
    list_filter = ["status", "kind"]
    list_select_related = True

    def get_queryset(self, request):
        return training_run_list(user=request.user)

    def has_delete_permission(self, request, obj=None):
        return False  # a run is part of the record of how a model version came to be

    @admin.display(description=_("run"), ordering="pk")
    def number(self, run: TrainingRun) -> str:
        return f"#{run.pk}"

    @admin.display(description=_("status"), ordering="status")
    def status_in_line(self, run: TrainingRun) -> str:
        position = training_run_queue_position(run)
        if position is not None:
            return _("Queued (#%(position)s in line)") % {"position": position}
        if run.cancel_requested and run.status == TrainingRun.Status.RUNNING:
            return _("Stopping")
        return run.get_status_display()

    @admin.display(description=_("progress"))
    def progress_bar(self, run: TrainingRun) -> str:
        return format_html('<progress max="100" value="{}"></progress> {}%', run.progress, run.progress)

    def get_urls(self):
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("<int:object_id>/progress/", self.admin_site.admin_view(self.progress_view), name=f"{prefix}_progress"),
            path("<int:object_id>/cancel/", self.admin_site.admin_view(self.cancel_view), name=f"{prefix}_cancel"),
            path("<int:object_id>/resume/", self.admin_site.admin_view(self.resume_view), name=f"{prefix}_resume"),
            *super().get_urls(),
        ]

    # Training data are case records, which modeling does not know: the evaluation app, which orchestrates training on
    # case sets and feedback, extends this admin with both (evaluation.admin.TrainingAdmin).
    def dataset_choices(self) -> list[tuple[str, str]]:
        return []

    def start_run(self, **request) -> TrainingRun:
        raise ValidationError(_("No training data source is installed."))

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        datasets = list(self.dataset_choices())
        form = TrainingRunStartForm(request.POST or None, datasets=datasets)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                run = self.start_run(
                    kind=data["kind"], dataset_key=data["dataset"], val_dataset_key=data["val_dataset"],
                    base_version=data["base_version"], teacher_version=data["teacher_version"],
                    parameters={name: data[name] for name in TRAINING_PARAMETERS}, started_by=request.user,
                )
            except ValidationError as error:
                form.add_service_error(error)
            else:
                self.message_user(request, _("%(run)s is queued.") % {"run": run}, messages.SUCCESS)
                return redirect("admin:modeling_trainingrun_change", run.pk)
        context = {
            **self.admin_site.each_context(request), "opts": self.opts, "title": _("Start a training run"),
            "form": form, "no_datasets": not datasets,
        }
        return TemplateResponse(request, "admin/modeling/trainingrun/start.html", context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        run = self._get_run(request, object_id)
        context = {
            **self.admin_site.each_context(request), "opts": self.opts, "title": str(run), "run": run,
            "parameters": sorted(run.parameters.items()), **self._progress_context(request, run),
        }
        return TemplateResponse(request, "admin/modeling/trainingrun/detail.html", context)

    def progress_view(self, request, object_id):
        """The part of the run's page that changes; htmx fetches it every 2 s while the run is queued or running."""
        run = self._get_run(request, object_id)
        return TemplateResponse(request, "admin/modeling/trainingrun/_progress.html", self._progress_context(request, run))

    @method_decorator(require_POST)
    def cancel_view(self, request, object_id):
        run = self._get_run(request, object_id)
        if not self.has_change_permission(request, run):
            raise PermissionDenied
        try:
            run = training_run_cancel(run=run, actor=request.user)
        except ValidationError as error:
            self.message_user(request, " ".join(error.messages), messages.ERROR)
        else:
            if run.status == TrainingRun.Status.CANCELLED:
                self.message_user(request, _("The run is cancelled."), messages.SUCCESS)
            else:
                self.message_user(request, _("The run will stop after saving a checkpoint."), messages.SUCCESS)
        return redirect("admin:modeling_trainingrun_change", run.pk)

    @method_decorator(require_POST)
    def resume_view(self, request, object_id):
        run = self._get_run(request, object_id)
        if not self.has_change_permission(request, run):
            raise PermissionDenied
        try:
            training_run_resume(run=run, actor=request.user)
        except ValidationError as error:
            self.message_user(request, " ".join(error.messages), messages.ERROR)
        else:
            self.message_user(request, _("The run is queued again and continues from its last checkpoint."), messages.SUCCESS)
        return redirect("admin:modeling_trainingrun_change", run.pk)

    def _get_run(self, request, object_id) -> TrainingRun:
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        run = training_run_get(user=request.user, pk=object_id)
        if run is None:
            raise Http404(_("No such training run."))
        return run

    def _progress_context(self, request, run: TrainingRun) -> dict:
        may_change = self.has_change_permission(request, run)
        running = training_run_running() if run.status == TrainingRun.Status.QUEUED else None
        return {
            "run": run,
            "position": training_run_queue_position(run),
            "running": running,
            "stale": training_run_is_stale(run),
            "chart": loss_chart(run),
            "can_cancel": may_change and run.is_active,
            "can_resume": may_change and run.can_resume,
        }


def loss_chart(run: TrainingRun, width: int = CHART_WIDTH, height: int = CHART_HEIGHT) -> dict | None:
    """Coordinates of the training and validation loss curves for an inline SVG (no script, no CDN)."""
    points = [*run.loss_series, *run.eval_series]
    if not points:
        return None
    left, right, top, bottom = (CHART_PAD[k] for k in ("left", "right", "top", "bottom"))
    plot_w, plot_h = width - left - right, height - top - bottom
    last_step = max(run.total_steps, *(step for step, _loss in points), 1)
    low, high = min(loss for _step, loss in points), max(loss for _step, loss in points)
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5

    def xy(step, loss):
        return round(left + plot_w * step / last_step, 1), round(top + plot_h * (high - loss) / (high - low), 1)

    def polyline(series):
        return " ".join(f"{x},{y}" for x, y in (xy(step, loss) for step, loss in series))

    return {
        "width": width, "height": height, "left": left, "right": width - right, "top": top, "bottom": top + plot_h,
        "train": polyline(run.loss_series), "train_count": len(run.loss_series),
        "eval": polyline(run.eval_series), "eval_points": [xy(step, loss) for step, loss in run.eval_series],
        "eval_count": len(run.eval_series), "high": f"{high:.3g}", "low": f"{low:.3g}", "last_step": last_step,
        "middle_y": top + plot_h / 2, "middle": f"{(high + low) / 2:.3g}", "label_x": left - 6, "step_label_y": top + plot_h + 18,
    }

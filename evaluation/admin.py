"""ML admins' side of review: rubrics, clinical evaluations (batch page, report, CSV), ad hoc assignments."""

from datetime import timedelta

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from cases import training_data
from cases.models import CaseSet
from cases.views import client_addr
from evaluation import selectors, services
from evaluation.models import (
    ClinicalEvaluation,
    ContinualRun,
    EvaluationRun,
    FeedbackExample,
    ReviewAssignment,
    Rubric,
    RubricDimension,
)
from modeling.admin import ModelVersionAdmin, TrainingRunAdmin
from modeling.models import ModelVersion, TrainingRun
from modeling.selectors import model_version_active, model_version_lineage, model_version_training_choices
from modeling.services import model_version_activate, model_version_rollback


class RubricDimensionInline(admin.StackedInline):
    model = RubricDimension
    extra = 0
    fields = ["position", "key", ("name_zh", "name_en"), ("anchor_1_zh", "anchor_1_en"), ("anchor_2_zh", "anchor_2_en"),
              ("anchor_3_zh", "anchor_3_en"), ("anchor_4_zh", "anchor_4_en"), ("anchor_5_zh", "anchor_5_en")]

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and not (obj and obj.is_locked)

    has_add_permission = has_change_permission
    has_delete_permission = has_change_permission


@admin.register(Rubric)
class RubricAdmin(admin.ModelAdmin):
    list_display = ["name", "version", "is_current", "dimension_count", "created_at"]
    list_filter = ["is_current"]
    readonly_fields = ["version", "is_current", "created_by", "created_at"]
    inlines = [RubricDimensionInline]
    change_form_template = "admin/evaluation/rubric/change_form.html"

    @admin.display(description=_("dimensions"))
    def dimension_count(self, rubric: Rubric) -> int:
        return rubric.dimensions.count()

    def has_change_permission(self, request, obj=None):
        # A rubric with reviews is versioned, never edited in place: "Edit as a new version" copies it.
        return super().has_change_permission(request, obj) and not (obj and obj.is_locked)

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
            obj.version = (Rubric.objects.filter(name=obj.name).order_by("-version").values_list("version", flat=True)
                           .first() or 0) + 1
            Rubric.objects.filter(name=obj.name, is_current=True).update(is_current=False)
        super().save_model(request, obj, form, change)

    def get_urls(self):
        return [path("<int:object_id>/new-version/", self.admin_site.admin_view(self.new_version_view),
                     name="evaluation_rubric_new_version"), *super().get_urls()]

    @method_decorator(require_POST)
    def new_version_view(self, request, object_id):
        if not self.has_add_permission(request):
            raise PermissionDenied
        rubric = Rubric.objects.filter(pk=object_id).first()
        if rubric is None:
            raise Http404
        new = services.rubric_new_version(rubric=rubric, actor=request.user)
        self.message_user(request, _("%(rubric)s is the current version; edit it here.") % {"rubric": new}, messages.SUCCESS)
        return redirect("admin:evaluation_rubric_change", new.pk)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        rubric = Rubric.objects.filter(pk=object_id).first()
        extra = {"locked": bool(rubric and rubric.is_locked), "can_version": self.has_add_permission(request)}
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **extra})


# --- Clinical evaluations ----------------------------------------------------------------------------------------


class ClinicalEvaluationForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=200)
    source = forms.ChoiceField(label=_("Cases from"), choices=ClinicalEvaluation.Source.choices)
    case_set = forms.ModelChoiceField(label=_("Case set"), queryset=CaseSet.objects.all(), required=False,
                                      help_text=_("For cases from an imported case set."))
    recent_days = forms.IntegerField(label=_("Recent days"), initial=30, min_value=1, max_value=3650,
                                     help_text=_("For recent doctors' cases: submitted in this many days."))
    sample_size = forms.IntegerField(label=_("Cases"), initial=20, min_value=1,
                                     help_text=_("How many cases to sample at random."))
    version_a = forms.ModelChoiceField(label=_("Model version"), queryset=ClinicalEvaluation.objects.none())
    version_b = forms.ModelChoiceField(label=_("Second model version"), queryset=ClinicalEvaluation.objects.none(),
                                       required=False, help_text=_(
                                           "Optional: reviewers then score both answers side by side, blinded, in random "
                                           "order, and say which is better."))
    reviewers_per_answer = forms.IntegerField(label=_("Reviewers per answer"), initial=2, min_value=1)
    rubric = forms.ModelChoiceField(label=_("Rubric"), queryset=Rubric.objects.none())
    due_date = forms.DateField(label=_("Due date"), widget=forms.DateInput(attrs={"type": "date"}))
    max_new_tokens = forms.IntegerField(label=_("Maximum new tokens"), initial=256, min_value=1, max_value=1024)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        versions = model_version_training_choices()
        self.fields["version_a"].queryset = versions
        self.fields["version_b"].queryset = versions
        self.fields["version_a"].initial = versions.filter(status="active").first()
        rubrics = selectors.rubric_choices()
        self.fields["rubric"].queryset = rubrics
        self.fields["rubric"].initial = rubrics.filter(name="default").first()
        self.fields["due_date"].initial = timezone.localdate() + timedelta(days=14)

    def add_service_error(self, error: ValidationError) -> None:
        for key, errors in error.message_dict.items() if hasattr(error, "error_dict") else [(None, error.messages)]:
            self.add_error(key if key in self.fields else None, errors)


# Session key: the evaluations whose report page this session opened (and so audited).
REPORTS_SEEN = "medportal_reports_seen"


@admin.register(ClinicalEvaluation)
class ClinicalEvaluationAdmin(admin.ModelAdmin):
    list_display = ["name", "status", "versions_display", "sample_size", "reviewers_per_answer", "due_date", "created_at"]
    list_filter = ["status"]
    list_select_related = ["version_a", "version_b"]

    def get_queryset(self, request):
        return selectors.evaluation_list(user=request.user)

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description=_("model versions"))
    def versions_display(self, evaluation: ClinicalEvaluation) -> str:
        return " / ".join(v.name for v in evaluation.versions)

    def get_urls(self):
        return [
            path("<int:object_id>/progress/", self.admin_site.admin_view(self.progress_view),
                 name="evaluation_clinicalevaluation_progress"),
            path("<int:object_id>/report.csv", self.admin_site.admin_view(self.csv_view),
                 name="evaluation_clinicalevaluation_csv"),
            path("<int:object_id>/retry/", self.admin_site.admin_view(self.retry_view),
                 name="evaluation_clinicalevaluation_retry"),
            *super().get_urls(),
        ]

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ClinicalEvaluationForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                evaluation = services.evaluation_create(actor=request.user, **data)
            except ValidationError as error:
                form.add_service_error(error)
            else:
                self.message_user(request, _("The answers are being generated; reviewers are assigned when they are ready."),
                                  messages.SUCCESS)
                return redirect("admin:evaluation_clinicalevaluation_change", evaluation.pk)
        context = {**self.admin_site.each_context(request), "opts": self.opts, "title": _("New clinical evaluation"),
                   "form": form}
        return TemplateResponse(request, "admin/evaluation/clinicalevaluation/start.html", context,
                                status=400 if form.errors else 200)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        evaluation = self._get(request, object_id)
        self._audit_view(request, evaluation)
        context = {**self.admin_site.each_context(request), "opts": self.opts, "title": str(evaluation),
                   **self._report_context(request, evaluation)}
        return TemplateResponse(request, "admin/evaluation/clinicalevaluation/detail.html", context)

    def progress_view(self, request, object_id):
        """The changing part of the batch page (progress and report); htmx refreshes it while reviews come in.

        The page's own view is audited; a refresh is audited only when this session has not opened the page (someone
        reading the report through this address alone), so polling does not write an entry every three seconds."""
        evaluation = self._get(request, object_id)
        if evaluation.pk not in request.session.get(REPORTS_SEEN, []):
            self._audit_view(request, evaluation)
        return TemplateResponse(request, "admin/evaluation/clinicalevaluation/_report.html",
                                self._report_context(request, evaluation))

    def csv_view(self, request, object_id):
        evaluation = self._get(request, object_id)
        body = selectors.evaluation_csv(user=request.user, evaluation=evaluation)
        services.evaluation_report_viewed(user=request.user, evaluation=evaluation, export=True,
                                          remote_addr=client_addr(request))
        # The byte order mark makes Excel (Chinese Windows too) read the file as UTF-8.
        response = HttpResponse("\ufeff" + body, content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="clinical-evaluation-{evaluation.pk}.csv"'
        response["Cache-Control"] = "no-store"
        return response

    @method_decorator(require_POST)
    def retry_view(self, request, object_id):
        evaluation = self._get(request, object_id)
        try:
            services.evaluation_retry(evaluation=evaluation, actor=request.user)
        except (ValidationError, PermissionDenied) as error:
            self.message_user(request, " ".join(getattr(error, "messages", [str(error)])), messages.ERROR)
        return redirect("admin:evaluation_clinicalevaluation_change", evaluation.pk)

    def _audit_view(self, request, evaluation: ClinicalEvaluation) -> None:
        services.evaluation_report_viewed(user=request.user, evaluation=evaluation, remote_addr=client_addr(request))
        seen = request.session.get(REPORTS_SEEN, [])
        if evaluation.pk not in seen:
            request.session[REPORTS_SEEN] = [*seen, evaluation.pk][-50:]

    def _get(self, request, object_id) -> ClinicalEvaluation:
        if not request.user.has_perm("evaluation.view_report"):
            raise PermissionDenied
        evaluation = selectors.evaluation_get(user=request.user, pk=object_id)
        if evaluation is None:
            raise Http404(_("No such clinical evaluation."))
        return evaluation

    def _report_context(self, request, evaluation: ClinicalEvaluation) -> dict:
        report = selectors.evaluation_report(user=request.user, evaluation=evaluation)
        return {"evaluation": evaluation, "report": report, "progress": report.progress,
                "stalled": services.evaluation_is_stalled(evaluation),
                "live": evaluation.status in (ClinicalEvaluation.Status.GENERATING, ClinicalEvaluation.Status.REVIEWING)}


# --- Ad hoc review assignments --------------------------------------------------------------------------------------


class AssignRecentForm(forms.Form):
    analyses = forms.MultipleChoiceField(label=_("Analyses"), widget=forms.CheckboxSelectMultiple, error_messages={
        "required": _("Choose at least one analysis.")})
    reviewers_per_answer = forms.IntegerField(label=_("Reviewers per answer"), initial=2, min_value=1, max_value=10)
    due_date = forms.DateField(label=_("Due date"), required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, *args, choices, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["analyses"].choices = choices


@admin.register(ReviewAssignment)
class ReviewAssignmentAdmin(admin.ModelAdmin):
    list_display = ["number", "reviewer", "status", "due_date", "evaluation", "assigned_at", "submitted_at"]
    list_filter = ["status"]
    list_select_related = ["reviewer", "item__evaluation"]
    change_list_template = "admin/evaluation/reviewassignment/change_list.html"
    fields = ["reviewer", "status", "due_date", "assigned_by", "assigned_at", "submitted_at"]
    readonly_fields = fields
    actions = ["reassign"]

    @admin.action(description=_("Reassign the selected open reviews to other reviewers"), permissions=["add"])
    def reassign(self, request, queryset):
        try:
            made = services.assignments_reassign(assignments=list(queryset), actor=request.user,
                                                 remote_addr=client_addr(request))
        except ValidationError as error:
            self.message_user(request, " ".join(error.messages), messages.ERROR)
        else:
            names = ", ".join(sorted({a.reviewer.get_username() for a in made}))
            self.message_user(request, _("%(n)d reviews reassigned (to %(names)s).") % {"n": len(made), "names": names},
                              messages.SUCCESS)

    @admin.display(description=_("review"), ordering="pk")
    def number(self, assignment: ReviewAssignment) -> str:
        return f"#{assignment.pk}"

    @admin.display(description=_("clinical evaluation"))
    def evaluation(self, assignment: ReviewAssignment) -> str:
        return assignment.item.evaluation or _("ad hoc")

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_urls(self):
        return [path("assign/", self.admin_site.admin_view(self.assign_view), name="evaluation_reviewassignment_assign"),
                *super().get_urls()]

    def add_view(self, request, form_url="", extra_context=None):
        return redirect("admin:evaluation_reviewassignment_assign")

    def assign_view(self, request):
        """An ML admin picks recent analyses and sends them to reviewers."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        recent = list(selectors.analyses_recent(user=request.user))
        counts = selectors.analyses_review_counts([a.pk for a in recent])
        choices = [(str(a.pk), a.pk) for a in recent]
        form = AssignRecentForm(request.POST or None, choices=choices)
        if request.method == "POST" and form.is_valid():
            chosen = {int(pk) for pk in form.cleaned_data["analyses"]}
            try:
                made = services.analyses_assign(
                    analyses=[a for a in recent if a.pk in chosen], actor=request.user,
                    reviewers_per_answer=form.cleaned_data["reviewers_per_answer"],
                    due_date=form.cleaned_data["due_date"], remote_addr=client_addr(request),
                )
            except ValidationError as error:
                for key, errors in error.message_dict.items():
                    form.add_error(key if key in form.fields else None, errors)
            else:
                self.message_user(request, _("%(n)d review assignments made.") % {"n": len(made)}, messages.SUCCESS)
                return redirect("admin:evaluation_reviewassignment_changelist")
        rows = [{"analysis": a, "reviewers": counts.get(a.pk, 0), "checked": str(a.pk) in (form.data.getlist("analyses")
                 if form.is_bound else [])} for a in recent]
        context = {**self.admin_site.each_context(request), "opts": self.opts, "title": _("Assign recent analyses for review"),
                   "form": form, "rows": rows}
        return TemplateResponse(request, "admin/evaluation/reviewassignment/assign.html", context,
                                status=400 if form.errors else 200)


@admin.register(FeedbackExample)
class FeedbackExampleAdmin(admin.ModelAdmin):
    list_display = ["number", "source", "language", "diagnosis_short", "model_version", "reviewer", "created_at"]
    list_filter = ["source", "language"]
    list_select_related = ["model_version", "reviewer"]
    readonly_fields = ["source", "language", "case_text", "diagnosis", "treatment", "reviewer", "assignment",
                       "doctor_feedback", "analysis", "model_version", "rubric", "created_at"]

    @admin.display(description=_("example"), ordering="pk")
    def number(self, example: FeedbackExample) -> str:
        return f"#{example.pk}"

    @admin.display(description=_("diagnosis"))
    def diagnosis_short(self, example: FeedbackExample) -> str:
        return format_html("{}", example.diagnosis[:60])

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# --- Automatic evaluation runs --------------------------------------------------------------------------------------


class EvaluationRunForm(forms.Form):
    model_version = forms.ModelChoiceField(label=_("Model version"), queryset=ClinicalEvaluation.objects.none())
    case_set = forms.ModelChoiceField(label=_("Case set"), queryset=CaseSet.objects.all(),
                                      help_text=_("Labelled cases the version was not trained on."))
    baseline_case_set = forms.ModelChoiceField(
        label=_("Baseline trained on"), queryset=CaseSet.objects.all(), required=False,
        help_text=_("The cases the TF-IDF baseline learns from. Empty: the version's own training file when it was "
                    "trained here, else the evaluated cases, cross-fitted by patient."))
    limit = forms.IntegerField(label=_("At most this many cases"), required=False, min_value=1,
                               help_text=_("Empty: every case of the set."))
    max_new_tokens = forms.IntegerField(label=_("Maximum new tokens"), initial=96, min_value=1, max_value=2048)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        versions = model_version_training_choices()
        self.fields["model_version"].queryset = versions
        self.fields["model_version"].initial = versions.filter(status="active").first()


@admin.register(EvaluationRun)
class EvaluationRunAdmin(admin.ModelAdmin):
    list_display = ["number", "model_version", "case_set", "purpose", "status", "progress_display", "gtpa1_display",
                    "baseline_display", "created_at"]
    list_filter = ["status", "purpose"]
    list_select_related = ["model_version", "case_set"]

    def get_queryset(self, request):
        return selectors.evaluation_run_list(user=request.user)

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description=_("run"), ordering="pk")
    def number(self, run: EvaluationRun) -> str:
        return f"#{run.pk}"

    @admin.display(description=_("progress"))
    def progress_display(self, run: EvaluationRun) -> str:
        return f"{run.done}/{run.total}"

    @admin.display(description="GTPA@1")
    def gtpa1_display(self, run: EvaluationRun) -> str:
        value = run.headline("gtpa@1")
        return "—" if value is None else f"{100 * value:.1f} %"

    @admin.display(description=_("baseline GTPA@1"))
    def baseline_display(self, run: EvaluationRun) -> str:
        block = (run.baseline.get("overall") or {}).get("gtpa@1")
        return "—" if not block else f"{100 * block['value']:.1f} %"

    def get_urls(self):
        return [
            path("<int:object_id>/progress/", self.admin_site.admin_view(self.progress_view),
                 name="evaluation_evaluationrun_progress"),
            path("<int:object_id>/predictions/", self.admin_site.admin_view(self.predictions_view),
                 name="evaluation_evaluationrun_predictions"),
            path("<int:object_id>/retry/", self.admin_site.admin_view(self.retry_view),
                 name="evaluation_evaluationrun_retry"),
            *super().get_urls(),
        ]

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = EvaluationRunForm(request.POST or None, initial={
            "model_version": request.GET.get("model_version") or None})
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                run = services.evaluation_run_create(
                    version=data["model_version"], case_set=data["case_set"], started_by=request.user,
                    baseline_case_set=data["baseline_case_set"], limit=data["limit"], max_new_tokens=data["max_new_tokens"])
            except ValidationError as error:
                for key, errors in error.message_dict.items():
                    form.add_error(key if key in form.fields else None, errors)
            else:
                self.message_user(request, _("The evaluation run is queued; this page shows its progress."), messages.SUCCESS)
                return redirect("admin:evaluation_evaluationrun_change", run.pk)
        context = {**self.admin_site.each_context(request), "opts": self.opts, "title": _("New evaluation run"),
                   "form": form}
        return TemplateResponse(request, "admin/evaluation/evaluationrun/start.html", context,
                                status=400 if form.errors else 200)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        run = selectors.evaluation_run_get(user=request.user, pk=object_id)
        context = {**self.admin_site.each_context(request), "opts": self.opts, "title": str(run),
                   **self._context(request, run)}
        return TemplateResponse(request, "admin/evaluation/evaluationrun/detail.html", context)

    def progress_view(self, request, object_id):
        run = selectors.evaluation_run_get(user=request.user, pk=object_id)
        return TemplateResponse(request, "admin/evaluation/evaluationrun/_run.html", self._context(request, run))

    def predictions_view(self, request, object_id):
        run = selectors.evaluation_run_get(user=request.user, pk=object_id)
        shown = request.GET.get("correct", "")
        correct = {"1": True, "0": False}.get(shown)
        predictions = selectors.evaluation_run_predictions(user=request.user, run=run, correct=correct)
        page = Paginator(predictions, selectors.PREDICTIONS_PER_PAGE).get_page(request.GET.get("page"))
        services.evaluation_run_predictions_viewed(user=request.user, run=run, remote_addr=client_addr(request))
        context = {**self.admin_site.each_context(request), "opts": self.opts, "run": run, "page": page,
                   "shown": shown if correct is not None else "",
                   "title": _("Predictions of evaluation run #%(id)s") % {"id": run.pk}}
        return TemplateResponse(request, "admin/evaluation/evaluationrun/predictions.html", context)

    @method_decorator(require_POST)
    def retry_view(self, request, object_id):
        run = selectors.evaluation_run_get(user=request.user, pk=object_id)
        try:
            services.evaluation_run_retry(run=run, actor=request.user)
        except (ValidationError, PermissionDenied) as error:
            self.message_user(request, " ".join(getattr(error, "messages", [str(error)])), messages.ERROR)
        return redirect("admin:evaluation_evaluationrun_change", run.pk)

    def _context(self, request, run: EvaluationRun) -> dict:
        comparable = selectors.evaluation_runs_comparable(user=request.user, run=run)
        other = comparable.filter(pk=request.GET.get("compare")).first() if request.GET.get("compare", "").isdigit() else None
        return {"run": run, "report": selectors.evaluation_run_report(user=request.user, run=run, compare_with=other),
                "comparable": comparable, "stalled": services.evaluation_run_is_stalled(run),
                "can_retry": request.user.has_perm("evaluation.add_evaluationrun")}


# --- The version page: evaluations, lineage, activation with a comparison, rollback ----------------------------------

admin.site.unregister(ModelVersion)


@admin.register(ModelVersion)
class VersionAdmin(ModelVersionAdmin):
    """modeling's registry admin with what only this app knows: the version's evaluation runs and gate results, and the
    comparison an activation is confirmed on."""

    change_form_template = "admin/modeling/modelversion/change_form.html"

    def get_urls(self):
        return [
            path("<int:object_id>/activate/", self.admin_site.admin_view(self.activate_view),
                 name="modeling_modelversion_activate"),
            path("rollback/", self.admin_site.admin_view(self.rollback_view), name="modeling_modelversion_rollback"),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        version = ModelVersion.objects.filter(pk=object_id).select_related("previous").first()
        extra = {}
        if version is not None and self.has_view_permission(request, version):
            extra = {"version": version, "lineage": model_version_lineage(version), "active": model_version_active(),
                     "gates": selectors.version_gates(user=request.user, version=version),
                     "runs": selectors.version_runs(user=request.user, version=version)[:20],
                     "can_activate": self.has_change_permission(request, version)}
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **extra})

    def activate_view(self, request, object_id):
        """GET: the confirmation, with this version against the active one on the case sets both were evaluated on.
        POST: activate (audited)."""
        if not self.has_change_permission(request):
            raise PermissionDenied
        version = ModelVersion.objects.filter(pk=object_id).first()
        if version is None:
            raise Http404
        active = model_version_active()
        if request.method == "POST":
            try:
                model_version_activate(version=version, actor=request.user)
            except ValidationError as error:
                self.message_user(request, " ".join(error.messages), messages.ERROR)
            else:
                self.message_user(request, _("%(version)s is now the active model version; new analyses use it.") % {
                    "version": version}, messages.SUCCESS)
            return redirect("admin:modeling_modelversion_change", version.pk)
        return self._confirm(request, version, active, rollback=False)

    def rollback_view(self, request):
        if not self.has_change_permission(request):
            raise PermissionDenied
        active = model_version_active()
        target = active.previous if active else None
        if request.method == "POST":
            try:
                restored = model_version_rollback(actor=request.user)
            except ValidationError as error:
                self.message_user(request, " ".join(error.messages), messages.ERROR)
                return redirect("admin:modeling_modelversion_changelist")
            self.message_user(request, _("Rolled back: %(version)s is the active model version again.") % {
                "version": restored}, messages.SUCCESS)
            return redirect("admin:modeling_modelversion_change", restored.pk)
        if target is None:
            self.message_user(request, _("There is no earlier active version to roll back to."), messages.ERROR)
            return redirect("admin:modeling_modelversion_changelist")
        return self._confirm(request, target, active, rollback=True)

    def _confirm(self, request, version, active, *, rollback: bool):
        context = {**self.admin_site.each_context(request), "opts": self.opts, "version": version, "active": active,
                   "rollback": rollback, "comparison": selectors.version_comparison(user=request.user, version=version,
                                                                                    other=active if active != version else None),
                   "title": (_("Roll back to %(version)s") if rollback else _("Make %(version)s active")) % {
                       "version": version}}
        return TemplateResponse(request, "admin/modeling/modelversion/activate.html", context)


admin.site.unregister(TrainingRun)


@admin.register(TrainingRun)
class TrainingAdmin(TrainingRunAdmin):
    """modeling's training-run admin, with the training data it cannot know: case sets, exported when a run starts."""

    def dataset_choices(self) -> list[tuple[str, str]]:
        return training_data.choices()

    def start_run(self, **request) -> TrainingRun:
        return services.training_run_start(**request)


# --- Retraining from feedback -----------------------------------------------------------------------------------------


class RetrainForm(forms.Form):
    gate_case_set = forms.ModelChoiceField(
        label=_("Gate set"), queryset=CaseSet.objects.all(),
        help_text=_("Frozen labelled cases, never trained on: the candidate must not fall below the active version here."))
    replay_case_set = forms.ModelChoiceField(
        label=_("Replay from"), queryset=CaseSet.objects.all(), required=False,
        help_text=_("Earlier training data to mix in so the model does not forget. Empty: the files the active version "
                    "and its ancestors were trained on."))
    replay_size = forms.IntegerField(label=_("Replay examples, at most"), min_value=0, max_value=100_000)
    replay_ratio = forms.FloatField(label=_("Replay examples per feedback example"), min_value=0, max_value=1000)
    epochs = forms.FloatField(label=_("Epochs"), initial=3, min_value=0.01, max_value=1000)
    learning_rate = forms.FloatField(label=_("Learning rate"), required=False, help_text=_(
        "Empty: 0.001 for the whole model, 0.0002 for LoRA adapters."))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["replay_size"].initial = settings.MEDPORTAL_REPLAY_SIZE
        self.fields["replay_ratio"].initial = settings.MEDPORTAL_REPLAY_RATIO


@admin.register(ContinualRun)
class ContinualRunAdmin(admin.ModelAdmin):
    list_display = ["number", "status", "base_version", "candidate", "feedback_count", "replay_count", "gate_summary",
                    "created_at"]
    list_filter = ["status"]
    list_select_related = ["base_version", "candidate"]
    change_list_template = "admin/evaluation/continualrun/change_list.html"

    def get_queryset(self, request):
        return selectors.continual_run_list(user=request.user)

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description=_("retraining"), ordering="pk")
    def number(self, continual: ContinualRun) -> str:
        return f"#{continual.pk}"

    @admin.display(description=_("gate"))
    def gate_summary(self, continual: ContinualRun) -> str:
        gate = continual.gate
        if not gate:
            return "—"
        return f"{gate['metric']} {gate['candidate_gate']:.3f} / {gate['active_gate']:.3f}"

    def changelist_view(self, request, extra_context=None):
        waiting = services.feedback_waiting().count() if request.user.has_perm("evaluation.view_feedbackexample") else None
        return super().changelist_view(request, {**(extra_context or {}), "waiting": waiting})

    def get_urls(self):
        return [
            path("<int:object_id>/progress/", self.admin_site.admin_view(self.progress_view),
                 name="evaluation_continualrun_progress"),
            path("<int:object_id>/promote/", self.admin_site.admin_view(self.promote_view),
                 name="evaluation_continualrun_promote"),
            *super().get_urls(),
        ]

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = RetrainForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            parameters = {"epochs": data["epochs"]}
            if data["learning_rate"]:
                parameters["learning_rate"] = data["learning_rate"]
            try:
                continual = services.continual_run_start(
                    actor=request.user, gate_case_set=data["gate_case_set"], replay_case_set=data["replay_case_set"],
                    replay_size=data["replay_size"], replay_ratio=data["replay_ratio"], parameters=parameters)
            except ValidationError as error:
                for key, errors in error.message_dict.items():
                    form.add_error(key if key in form.fields else None, errors)
            else:
                self.message_user(request, _("Training on the feedback is queued; the candidate is evaluated when it is "
                                             "done."), messages.SUCCESS)
                return redirect("admin:evaluation_continualrun_change", continual.pk)
        context = {**self.admin_site.each_context(request), "opts": self.opts, "title": _("Retrain from feedback"),
                   "form": form, "waiting": services.feedback_waiting().count(), "active": model_version_active(),
                   "auto_promote": settings.MEDPORTAL_AUTO_PROMOTE}
        return TemplateResponse(request, "admin/evaluation/continualrun/start.html", context,
                                status=400 if form.errors else 200)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        continual = selectors.continual_run_get(user=request.user, pk=object_id)
        context = {**self.admin_site.each_context(request), "opts": self.opts, "title": str(continual),
                   "continual": continual, "can_promote": request.user.has_perm("evaluation.change_continualrun")}
        return TemplateResponse(request, "admin/evaluation/continualrun/detail.html", context)

    def progress_view(self, request, object_id):
        continual = selectors.continual_run_get(user=request.user, pk=object_id)
        return TemplateResponse(request, "admin/evaluation/continualrun/_progress.html", {
            "continual": continual, "can_promote": request.user.has_perm("evaluation.change_continualrun")})

    @method_decorator(require_POST)
    def promote_view(self, request, object_id):
        continual = selectors.continual_run_get(user=request.user, pk=object_id)
        try:
            version = services.continual_run_promote(continual=continual, actor=request.user)
        except (ValidationError, PermissionDenied) as error:
            self.message_user(request, " ".join(getattr(error, "messages", [str(error)])), messages.ERROR)
        else:
            self.message_user(request, _("%(version)s is now the active model version; new analyses use it.") % {
                "version": version}, messages.SUCCESS)
        return redirect("admin:evaluation_continualrun_change", continual.pk)

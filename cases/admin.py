from django.contrib import admin
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from cases.models import AccessEvent, Case, CaseSet, CaseSetExport, ImportRun, LabelledCase

# Rejected lines shown per import run in the admin; the run's count says how many there were.
SHOWN_ERRORS = 200


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Case)
class CaseAdmin(ReadOnlyAdmin):
    """De-identified cases; the encrypted originals are not shown here."""

    list_display = ["id", "author", "language", "department", "status", "phi_count", "created_at"]
    list_filter = ["language", "department", "status"]
    exclude = ["phi_ciphertext", "patient_pseudonym"]


@admin.register(AccessEvent)
class AccessEventAdmin(ReadOnlyAdmin):
    list_display = ["at", "actor_username", "action", "case_ids", "remote_addr"]
    list_filter = ["action"]
    search_fields = ["actor_username"]


# --- Imported case sets ----------------------------------------------------------------------


@admin.display(description=_("rejected lines"))
def rejected_lines(run: ImportRun) -> str:
    shown = run.errors[:SHOWN_ERRORS]
    lines = format_html_join(
        "\n", "{}<br>", ((_("line %(line)d: %(reason)s") % {"line": e["line"], "reason": e["reason"]},) for e in shown)
    )
    hidden = run.rejected - len(shown)
    if hidden > 0:
        more = ngettext("… and %(count)d more rejected line", "… and %(count)d more rejected lines", hidden) % {"count": hidden}
        return format_html("{}{}", lines, more)
    return lines or "—"


IMPORT_RUN_FIELDS = [
    "source_name", "started_by", "started_at", "finished_at", "rows", "imported", "duplicates", "rejected",
    rejected_lines, "sha256",
]


class ImportRunInline(admin.StackedInline):
    model = ImportRun
    fields = readonly_fields = IMPORT_RUN_FIELDS
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("started_by")


class CaseSetExportInline(admin.TabularInline):
    model = CaseSetExport
    fields = readonly_fields = ["at", "actor_username", "records", "path"]
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


def _count_of(model, **match):
    """A subquery counting rows of `model` per case set; two Count()s over joins would multiply."""
    counts = model.objects.filter(case_set=OuterRef("pk"), **match).order_by().values("case_set")
    return Coalesce(Subquery(counts.annotate(n=Count("pk")).values("n")), 0)


@admin.register(CaseSet)
class CaseSetAdmin(admin.ModelAdmin):
    """Case sets with their size and import history. ML admins create and describe sets; rows come from import_cases."""

    list_display = ["name", "case_count", "import_count", "description", "created_by", "created_at"]
    search_fields = ["name", "description"]
    readonly_fields = ["case_count", "created_by", "created_at"]
    inlines = [ImportRunInline, CaseSetExportInline]

    def get_queryset(self, request):
        return (
            super().get_queryset(request).select_related("created_by")
            .annotate(case_count=_count_of(LabelledCase), import_count=_count_of(ImportRun))
        )

    @admin.display(description=_("cases"), ordering="case_count")
    def case_count(self, case_set):
        return case_set.case_count

    @admin.display(description=_("imports"), ordering="import_count")
    def import_count(self, case_set):
        return case_set.import_count

    def get_readonly_fields(self, request, obj=None):
        # The name is the export file's name and what training runs recorded: fixed once created.
        return [*self.readonly_fields, "name"] if obj else self.readonly_fields

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser  # deleting a set deletes its cases; not an everyday action

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)


@admin.register(ImportRun)
class ImportRunAdmin(ReadOnlyAdmin):
    """Every import, with its counts and rejected lines: the provenance auditors check."""

    list_display = ["started_at", "case_set", "source_name", "started_by", "rows", "imported", "duplicates", "rejected"]
    list_filter = ["case_set"]
    list_select_related = ["case_set", "started_by"]
    fields = readonly_fields = ["case_set", *IMPORT_RUN_FIELDS]


@admin.register(LabelledCase)
class LabelledCaseAdmin(ReadOnlyAdmin):
    """De-identified labelled cases; the encrypted originals and the keyed hashes are never shown."""

    list_display = ["id", "external_id", "case_set", "language", "diagnosis", "phi_count", "source_file", "source_row"]
    list_filter = ["case_set", "language", "diagnosis"]
    list_select_related = ["case_set"]
    search_fields = ["external_id", "diagnosis"]
    fields = readonly_fields = [
        "case_set", "external_id", "language", "text", "diagnosis", "differential", "treatment", "prognosis", "rationale",
        "phi_count", "import_run", "source_file", "source_row", "created_at",
    ]


@admin.register(CaseSetExport)
class CaseSetExportAdmin(ReadOnlyAdmin):
    list_display = ["at", "actor_username", "case_set_name", "records", "path"]
    list_filter = ["case_set_name"]
    search_fields = ["actor_username", "case_set_name"]

"""Reads of case data, always scoped by the acting user."""

from auditlog.models import LogEntry
from auditlog.registry import auditlog
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.db.models import OuterRef, Q, QuerySet, Subquery
from django.http import Http404

from cases.models import AccessEvent, Analysis, Case, CaseSetExport


def case_list(*, user, query: str = "") -> QuerySet[Case]:
    """A doctor's own cases, newest first, optionally filtered by a search phrase."""
    if not user.has_perm("cases.view_case"):
        raise PermissionDenied
    cases = _with_latest_status(Case.objects.filter(author=user))
    query = query.strip()
    if query:
        cases = cases.filter(
            Q(chief_complaint__icontains=query)
            | Q(free_text__icontains=query)
            | Q(present_illness__icontains=query)
            | Q(department__icontains=query)
        )
    return cases


def case_get(*, user, pk: int) -> Case:
    """One of the user's own cases; any other case does not exist for them."""
    if not user.has_perm("cases.view_case"):
        raise PermissionDenied
    try:
        return _with_latest_status(Case.objects.filter(author=user)).get(pk=pk)
    except Case.DoesNotExist:
        raise Http404 from None


def _with_latest_status(cases: QuerySet[Case]) -> QuerySet[Case]:
    """Each case with its latest analysis's status, which the page, the list and the API all show."""
    latest = Analysis.objects.filter(case=OuterRef("pk")).order_by("-queued_at", "-id").values("status")[:1]
    return cases.annotate(latest_analysis_status=Subquery(latest))


def access_event_list(*, user, action: str = "", username: str = "") -> QuerySet[AccessEvent]:
    if not user.has_perm("cases.view_accessevent"):
        raise PermissionDenied
    events = AccessEvent.objects.all()
    if action:
        events = events.filter(action=action)
    if username:
        events = events.filter(actor_username=username)
    return events


def record_change_list(*, user) -> QuerySet[LogEntry]:
    """django-auditlog's change history of every model registered with it: cases (PHI fields masked there), case sets
    and their imports, model versions (registration, promotion), training runs (start, cancel, resume, result), and
    the review side (rubrics, clinical evaluations, review assignments, feedback examples, doctors' ratings)."""
    if not user.has_perm("auditlog.view_logentry"):
        raise PermissionDenied
    types = ContentType.objects.get_for_models(*auditlog.get_models()).values()
    return LogEntry.objects.filter(content_type__in=types).select_related("actor", "content_type")


def case_set_export_list(*, user, username: str = "") -> QuerySet[CaseSetExport]:
    """Exports of case sets' de-identified records (for training), newest first."""
    if not user.has_perm("cases.view_casesetexport"):
        raise PermissionDenied
    exports = CaseSetExport.objects.all()
    return exports.filter(actor_username=username) if username else exports


def analysis_get(*, user, pk: int) -> Analysis:
    """An analysis of one of the user's own cases."""
    if not user.has_perm("cases.view_case"):
        raise PermissionDenied
    try:
        return Analysis.objects.select_related("case", "model_version").get(pk=pk, case__author=user)
    except Analysis.DoesNotExist:
        raise Http404 from None


def case_analyses(*, user, case: Case) -> QuerySet[Analysis]:
    if case.author_id != user.pk:
        raise Http404
    return case.analyses.select_related("model_version", "doctor_feedback")

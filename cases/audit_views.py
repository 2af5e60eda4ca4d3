from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import render
from django.views.decorators.http import require_GET

from cases import selectors
from cases.models import AccessEvent


@login_required
@require_GET
def audit_log(request):
    """The audit trail for auditors: access entries, case set exports and changes to records. No PHI in clear."""
    action = request.GET.get("action", "")
    username = request.GET.get("user", "")
    events = selectors.access_event_list(user=request.user, action=action, username=username)
    changes = selectors.record_change_list(user=request.user)
    exports = selectors.case_set_export_list(user=request.user, username=username)
    context = {
        "events": Paginator(events, 50).get_page(request.GET.get("page")),
        "exports": Paginator(exports, 20).get_page(request.GET.get("exports_page")),
        "changes": Paginator(changes, 20).get_page(request.GET.get("changes_page")),
        "actions": AccessEvent.Action.choices,
        "action": action,
        "username": username,
    }
    return render(request, "cases/audit_log.html", context)

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import render
from django.views.decorators.http import require_GET

from cases import selectors
from cases.models import AccessEvent


@login_required
@require_GET
def audit_log(request):
    """The audit trail for auditors: explicit access entries and case changes. No PHI in clear."""
    action = request.GET.get("action", "")
    username = request.GET.get("user", "")
    events = selectors.access_event_list(user=request.user, action=action, username=username)
    changes = selectors.case_change_list(user=request.user)
    context = {
        "events": Paginator(events, 50).get_page(request.GET.get("page")),
        "changes": Paginator(changes, 20).get_page(request.GET.get("changes_page")),
        "actions": AccessEvent.Action.choices,
        "action": action,
        "username": username,
    }
    return render(request, "cases/audit_log.html", context)

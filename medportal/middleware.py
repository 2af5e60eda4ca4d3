"""Request size limit (a clear 413 before any view reads the body) and the idle-session rule."""

from django.conf import settings
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import JsonResponse
from django.shortcuts import render, resolve_url
from django.utils.cache import patch_vary_headers
from django.utils.translation import gettext as _
from django_htmx.http import HttpResponseClientRedirect

# Sent by htmx polling (hx-headers in the templates) on requests that only refresh what the page shows.
BACKGROUND_REFRESH_HEADER = "X-MedPortal-Refresh"


class RequestSizeLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        limit = settings.MEDPORTAL_MAX_REQUEST_BYTES
        if length > limit:
            message = _("The request is too large (%(size)d KB; the limit is %(limit)d KB).") % {
                "size": length // 1024,
                "limit": limit // 1024,
            }
            if request.path.startswith("/api/"):
                return JsonResponse({"detail": message}, status=413)
            return render(request, "413.html", {"message": message}, status=413)
        return self.get_response(request)


class IdleSessionMiddleware(SessionMiddleware):
    """Django's SessionMiddleware, except that a page's background refresh is not activity.

    Sessions end after MEDPORTAL_SESSION_IDLE_MINUTES without activity (SESSION_SAVE_EVERY_REQUEST renews them).
    A case page or a training run's page refreshes itself every second or two while it waits; those requests carry
    the header BACKGROUND_REFRESH_HEADER and do not renew the session, so a screen left open still logs out.
    """

    def process_response(self, request, response):
        if request.headers.get("HX-Request") and response.status_code == 302 and _to_log_in(response):
            # An expired session's refresh: send the whole page to log-in, not the log-in form into the card.
            response = HttpResponseClientRedirect(response["Location"])
        if request.headers.get(BACKGROUND_REFRESH_HEADER) and not request.session.modified:
            if request.session.accessed:
                patch_vary_headers(response, ("Cookie",))
            return response
        return super().process_response(request, response)


def _to_log_in(response) -> bool:
    return response["Location"].split("?", 1)[0] == resolve_url(settings.LOGIN_URL)

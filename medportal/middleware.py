"""Refuse oversized request bodies with a clear 413 before any view reads them."""

from django.conf import settings
from django.http import JsonResponse
from django.shortcuts import render
from django.utils.translation import gettext as _


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

from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render


@login_required
def home(request):
    """Send each role to where its work is."""
    user = request.user
    if user.has_perm("cases.add_case"):
        return redirect("cases:list")
    if user.has_perm("evaluation.review_answers"):
        return redirect("reviews:queue")
    if user.has_perm("cases.view_accessevent"):
        return redirect("audit:log")
    if user.is_staff:
        return redirect("admin:index")
    return render(request, "home.html")

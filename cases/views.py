from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from cases import selectors, services
from cases.forms import CaseForm, DoctorFeedbackForm
from cases.models import AccessEvent, Case
from modeling.knowledge import condition_names
from modeling.selectors import model_version_choices, model_version_get


def client_addr(request) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


@login_required
@require_GET
def case_list(request):
    query = request.GET.get("q", "")
    page = Paginator(selectors.case_list(user=request.user, query=query), 20).get_page(request.GET.get("page"))
    services.access_record(
        user=request.user, action=AccessEvent.Action.CASE_LIST, cases=page.object_list,
        remote_addr=client_addr(request),
    )
    return render(request, "cases/case_list.html", {"page": page, "query": query})


@login_required
@require_http_methods(["GET", "POST"])
def case_create(request):
    if not request.user.has_perm("cases.add_case"):
        raise PermissionDenied
    form = CaseForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            case, analysis = services.case_submit(author=request.user, data=form.to_input(), remote_addr=client_addr(request))
        except ValidationError as error:
            form.add_error(None, error)
        else:
            messages.success(request, _("Case submitted. Identifiers were replaced before storage."))
            if analysis is None:
                messages.warning(request, _("No model version is active, so no analysis was started."))
            return redirect("cases:detail", pk=case.pk)
    status = 400 if form.errors else 200
    return render(request, "cases/case_form.html", {"form": form}, status=status)


@login_required
@require_GET
def case_detail(request, pk: int):
    case = selectors.case_get(user=request.user, pk=pk)
    services.access_record(
        user=request.user, action=AccessEvent.Action.CASE_VIEW, cases=[case], remote_addr=client_addr(request)
    )
    context = {
        "case": case,
        "analyses": selectors.case_analyses(user=request.user, case=case),
        "versions": model_version_choices(),
        "conditions": condition_names(case.language),
        "sexes": Case.Sex.choices,
    }
    return render(request, "cases/case_detail.html", context)


@login_required
@require_POST
def case_reanalyse(request, pk: int):
    """Run a case again, with the version the doctor picked (or the active one)."""
    case = selectors.case_get(user=request.user, pk=pk)
    version = model_version_get(request.POST.get("model_version") or None)
    try:
        services.analysis_request(case=case, user=request.user, version=version)
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    return redirect("cases:detail", pk=case.pk)


@login_required
@require_GET
def analysis_detail(request, pk: int):
    """The analysis panel; htmx polls it until the analysis is done or failed."""
    analysis = selectors.analysis_get(user=request.user, pk=pk)
    response = render(request, "cases/_analysis.html", {"analysis": analysis})
    if analysis.is_finished:
        response["HX-Trigger"] = "analysis-finished"
    return response


@login_required
@require_POST
def case_reveal(request, pk: int):
    case = selectors.case_get(user=request.user, pk=pk)
    revealed = services.case_reveal_phi(user=request.user, case=case, remote_addr=client_addr(request))
    response = render(request, "cases/case_reveal.html", {"case": case, "revealed": revealed})
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def analysis_feedback(request, pk: int):
    """The submitting doctor rates an analysis: helpful or not, and optionally the diagnosis they hold."""
    analysis = selectors.analysis_get(user=request.user, pk=pk)
    form = DoctorFeedbackForm(request.POST)
    if form.is_valid():
        try:
            services.doctor_feedback_save(
                doctor=request.user, analysis=analysis, helpful=form.cleaned_data["helpful"] == "yes",
                correct_diagnosis=form.cleaned_data["correct_diagnosis"], remote_addr=client_addr(request),
            )
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
        else:
            messages.success(request, _("Thank you. Your rating is saved."))
    else:
        messages.error(request, " ".join(message for errors in form.errors.values() for message in errors))
    return redirect("cases:detail", pk=analysis.case_id)


@login_required
@require_POST
def case_facts(request, pk: int):
    """The doctor corrects the patient's sex and age; a re-run of the analysis uses them."""
    case = selectors.case_get(user=request.user, pk=pk)
    raw_age = (request.POST.get("age") or "").strip()
    try:
        age = int(raw_age) if raw_age else None
    except ValueError:
        messages.error(request, _("Enter an age from 0 to 130."))
        return redirect("cases:detail", pk=case.pk)
    try:
        services.case_update_facts(user=request.user, case=case, sex=request.POST.get("sex", ""), age=age,
                                   remote_addr=client_addr(request))
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(request, _("Sex and age saved. Run the analysis again to use them."))
    return redirect("cases:detail", pk=case.pk)

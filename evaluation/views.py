"""The reviewer's pages: the queue (their home), the blinded scoring form, doctors' corrections to decide."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.utils.translation import get_language
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from cases.models import AccessEvent
from cases.services import access_record
from cases.views import client_addr
from evaluation import selectors, services
from evaluation.models import ReviewAssignment
from evaluation.services import OVERALL, ReviewInput
from modeling.knowledge import condition_names


@login_required
@require_GET
def queue(request):
    user = request.user
    context = {
        "open": selectors.assignment_queue(user=user),
        "done": selectors.assignment_queue(user=user, done=True)[:50],
        "counts": selectors.assignment_counts(user=user),
        "next": selectors.assignment_next(user=user),
        "corrections": list(selectors.doctor_corrections_pending(user=user)[:20]),
    }
    if context["corrections"]:  # the reviewer read these doctors' de-identified cases
        access_record(user=user, action=AccessEvent.Action.FEEDBACK_LIST, cases=[f.analysis.case for f in context["corrections"]],
                      remote_addr=client_addr(request))
    return render(request, "evaluation/queue.html", context)


@login_required
@require_GET
def next_review(request):
    following = selectors.assignment_next(user=request.user)
    return redirect("reviews:review", pk=following.pk) if following else redirect("reviews:queue")


SCORE_VALUES = {"1", "2", "3", "4", "5"}


def review_input(data) -> ReviewInput:
    """The scoring form's fields ("A-safety" = "4", ...) as the service's input; bad numbers stay for it to refuse."""
    ratings: dict[str, dict] = {}
    for name, value in data.items():
        label, dash, key = name.partition("-")
        if dash and label in services.ANSWER_LABELS and key:
            ratings.setdefault(label, {})[key] = int(value) if value in SCORE_VALUES else (value or None)
    return ReviewInput(
        ratings=ratings, preference=data.get("preference", ""), corrected_diagnosis=data.get("corrected_diagnosis", ""),
        corrected_treatment=data.get("corrected_treatment", ""), comment=data.get("comment", ""),
        accept_for_training=data.get("accept_for_training") in ("on", "true", "1", True),
    )


@login_required
@require_http_methods(["GET", "POST"])
def review(request, pk: int):
    user = request.user
    assignment = selectors.assignment_get(user=user, pk=pk)
    errors: dict = {}
    entered = None
    if request.method == "POST":
        data = review_input(request.POST)
        submit = request.POST.get("action") == "submit"
        try:
            services.review_save(reviewer=user, assignment=assignment, data=data, submit=submit,
                                 remote_addr=client_addr(request))
        except services.ReviewAlreadySubmitted as error:
            messages.error(request, " ".join(error.messages))
            return redirect("reviews:review", pk=pk)
        except ValidationError as error:
            errors = error.message_dict if hasattr(error, "error_dict") else {"__all__": error.messages}
            entered = data
        else:
            if not submit:
                messages.success(request, _("Draft saved."))
                return redirect("reviews:review", pk=pk)
            messages.success(request, _("Review submitted."))
            return redirect("reviews:next")
        assignment = selectors.assignment_get(user=user, pk=pk)
    else:
        services.review_open(reviewer=user, assignment=assignment, remote_addr=client_addr(request))
    context = _form_context(assignment, entered, errors)
    return render(request, "evaluation/review.html", context, status=400 if errors else 200)


def _form_context(assignment: ReviewAssignment, entered: ReviewInput | None, errors: dict) -> dict:
    language = get_language() or "en"
    saved = selectors.assignment_ratings(assignment)
    values = entered.ratings if entered else saved
    answers = services.blinded_answers(assignment)
    dimensions = list(assignment.rubric.dimensions.all())
    overall_anchors = [(1, _("Unacceptable")), (2, _("Poor")), (3, _("Acceptable")), (4, _("Good")), (5, _("Excellent"))]
    rows = []
    for dimension in dimensions:
        for label, _answer in answers:
            rows.append(_row(label, dimension.key, dimension.name(language), dimension.anchors(language), values, errors))
    for label, _answer in answers:
        rows.append(_row(label, OVERALL, _("Overall"), overall_anchors, values, errors))
    source = entered or assignment
    return {
        "assignment": assignment,
        "answers": answers,
        "rows": rows,
        "two": len(answers) == 2,
        "preference": source.preference,
        "preference_error": errors.get("preference"),
        "preferences": ReviewAssignment.Preference.choices,
        "corrected_diagnosis": source.corrected_diagnosis,
        "corrected_treatment": source.corrected_treatment,
        "comment": source.comment,
        "accept_for_training": source.accept_for_training,
        "form_errors": errors.get("__all__") or errors.get("ratings"),
        "error_count": len(errors),
        "conditions": condition_names(assignment.item.language),
        "read_only": assignment.is_submitted,
    }


def _row(label: str, key: str, name: str, anchors, values: dict, errors: dict) -> dict:
    value = (values.get(label) or {}).get(key)
    field = f"{label}-{key}"
    return {"field": field, "label": label, "name": name, "value": value, "error": errors.get(field),
            "choices": [{"score": score, "anchor": anchor, "checked": value == score} for score, anchor in anchors]}


@login_required
@require_POST
def correction_decide(request, pk: int):
    """A reviewer accepts or declines a doctor's corrected diagnosis."""
    feedback = selectors.doctor_correction_get(user=request.user, pk=pk)
    accept = request.POST.get("decision") == "accept"
    try:
        services.doctor_feedback_decide(reviewer=request.user, feedback=feedback, accept=accept,
                                        remote_addr=client_addr(request))
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(request, _("Accepted for training.") if accept else _("Declined."))
    return redirect("reviews:queue")

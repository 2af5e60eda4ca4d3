"""Writes of the review half of the product: assignments, reviews, clinical evaluations, feedback examples."""

import contextlib
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta

from auditlog.context import set_actor
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Count, Max, Q
from django.utils import timezone
from django.utils.translation import gettext as _

from cases import roles
from cases.deid import Deidentifier
from cases.models import AccessEvent, Analysis, Case, CaseSet, DoctorFeedback, LabelledCase
from cases.services import (
    ANSWER_TEXT_FIELDS,
    access_record,
    access_record_many,
    doctor_feedback_set_decision,
    model_answers,
)
from evaluation.models import (
    AnswerRating,
    ClinicalEvaluation,
    FeedbackExample,
    ItemAnswer,
    ReviewAssignment,
    ReviewItem,
    Rubric,
    RubricDimension,
)
from modeling.models import ModelVersion
from modeling.runtime import GenerationParams, ModelLoadError

logger = logging.getLogger(__name__)

# Answers of an evaluation are generated this many at a time; progress is saved after each batch.
GENERATION_BATCH_SIZE = 8
MAX_SAMPLE_SIZE = 500
MAX_REVIEWERS_PER_ANSWER = 10
ANSWER_LABELS = ("A", "B")
OVERALL = "overall"


# --- Rubrics ------------------------------------------------------------------------------------------------


def rubric_new_version(*, rubric: Rubric, actor=None) -> Rubric:
    """A copy of the rubric (dimensions and anchors) as the next, current version; the old one keeps its reviews."""
    with transaction.atomic(), set_actor(actor) if actor else contextlib.nullcontext():
        latest = Rubric.objects.select_for_update().filter(name=rubric.name).order_by("-version").first()
        Rubric.objects.filter(name=rubric.name, is_current=True).update(is_current=False)
        new = Rubric.objects.create(
            name=rubric.name, version=latest.version + 1, description=rubric.description, is_current=True,
            created_by=actor,
        )
        dimensions = list(RubricDimension.objects.filter(rubric=rubric))
        for dimension in dimensions:
            dimension.pk, dimension.rubric = None, new
        RubricDimension.objects.bulk_create(dimensions)
    return new


# --- Assignments ----------------------------------------------------------------------------------------------


def reviewers_available() -> list:
    """Active users of the Reviewer group who may review, in a stable order."""
    return list(
        get_user_model().objects.filter(is_active=True)
        .filter(Q(groups__name=roles.REVIEWER) | Q(user_permissions__codename="review_answers"))
        .distinct().order_by("pk")
    )


def assignments_make(
    *, items: list[ReviewItem], reviewers_per_answer: int, rubric: Rubric, due_date: date | None, actor,
    seed: int | None = None, remote_addr: str | None = None, exclude: frozenset[int] = frozenset(),
) -> list[ReviewAssignment]:
    """Give each item to `reviewers_per_answer` reviewers: the least loaded first, never the doctor who submitted the
    case, never a reviewer the item already has. Nothing is written unless every item can be covered."""
    rng = random.Random(seed)
    reviewers = reviewers_available()
    rng.shuffle(reviewers)  # ties in load are broken at random, not by user id
    load = Counter(
        dict(ReviewAssignment.objects.exclude(status=ReviewAssignment.Status.SUBMITTED)
             .values_list("reviewer").annotate(n=Count("pk")).values_list("reviewer", "n"))
    )
    already = {
        (item_id, reviewer_id)
        for item_id, reviewer_id in ReviewAssignment.objects.filter(item__in=items).values_list("item", "reviewer")
    }
    taken_by_item = Counter(item_id for item_id, _reviewer in already)
    authors = dict(Case.objects.filter(pk__in=[i.case_id for i in items if i.case_id]).values_list("pk", "author"))
    plan: list[ReviewAssignment] = []
    for item in items:
        author = authors.get(item.case_id)
        taken = taken_by_item[item.pk]
        eligible = [r for r in reviewers if r.pk != author and r.pk not in exclude and (item.pk, r.pk) not in already]
        wanted = reviewers_per_answer - taken
        if wanted <= 0:
            continue
        if len(eligible) < wanted:
            raise ValidationError({"reviewers_per_answer": _(
                "Only %(available)d reviewers can review this case (the submitting doctor and reviewers it already has "
                "are left out); ask for fewer reviewers per answer or add reviewers."
            ) % {"available": len(eligible) + taken}})
        # Stable sort on load keeps the shuffled order among equally loaded reviewers.
        for reviewer in sorted(eligible, key=lambda r: load[r.pk])[:wanted]:
            load[reviewer.pk] += 1
            plan.append(ReviewAssignment(
                item=item, reviewer=reviewer, rubric=rubric, due_date=due_date, assigned_by=actor,
                swapped=rng.random() < 0.5,
            ))
    with transaction.atomic():
        made = ReviewAssignment.objects.bulk_create(plan)
        access_record_many(
            user=actor, action=AccessEvent.Action.REVIEW_ASSIGN, remote_addr=remote_addr,
            targets=[f"review {a.pk} of item {a.item_id} to {a.reviewer.get_username()}" for a in made],
        )
    return made


def analyses_assign(
    *, analyses: list[Analysis], reviewers_per_answer: int, due_date: date | None, actor, rubric: Rubric | None = None,
    remote_addr: str | None = None,
) -> list[ReviewAssignment]:
    """Ad hoc review: an ML admin sends recent analyses to reviewers. An analysis already under ad hoc review gets
    only the reviewers it is missing."""
    _require(actor, "evaluation.add_reviewassignment", _("Only ML admins assign answers for review."))
    rubric = rubric or _current_rubric()
    if not analyses:
        raise ValidationError({"analyses": _("Choose at least one analysis.")})
    if any(analysis.status != Analysis.Status.DONE for analysis in analyses):
        raise ValidationError({"analyses": _("Only finished analyses can be reviewed.")})
    with transaction.atomic():
        # Two admins (or a double click) assigning the same analysis at once take turns: the second finds the item the
        # first made and adds only the reviewers it still lacks.
        list(Analysis.objects.select_for_update().filter(pk__in=[a.pk for a in analyses]).order_by("pk"))
        items = []
        for analysis in analyses:
            answer = ItemAnswer.objects.filter(analysis=analysis, item__evaluation=None).select_related("item").first()
            if answer is None:
                item = ReviewItem.objects.create(
                    case=analysis.case, language=analysis.case.language, case_text=analysis.case.model_text,
                )
                ItemAnswer.objects.create(
                    item=item, model_version=analysis.model_version, analysis=analysis, status=ItemAnswer.Status.DONE,
                    diagnosis=analysis.diagnosis, differential=analysis.differential, treatment=analysis.treatment,
                    prognosis=analysis.prognosis, rationale=analysis.rationale, raw_output=analysis.raw_output,
                    generated_at=analysis.finished_at,
                )
                items.append(item)
            else:
                items.append(answer.item)
        return assignments_make(
            items=items, reviewers_per_answer=reviewers_per_answer, rubric=rubric, due_date=due_date, actor=actor,
            remote_addr=remote_addr,
        )


def assignments_reassign(*, assignments: list[ReviewAssignment], actor, remote_addr: str | None = None
                         ) -> list[ReviewAssignment]:
    """Move open reviews (of a reviewer who left, say) to other reviewers under the same rules; a draft there is
    dropped. Submitted reviews stay where they are. Nothing moves unless every one can."""
    _require(actor, "evaluation.add_reviewassignment", _("Only ML admins reassign reviews."))
    with transaction.atomic():
        locked = list(ReviewAssignment.objects.select_for_update().filter(pk__in=[a.pk for a in assignments])
                      .select_related("item", "reviewer", "rubric").order_by("pk"))
        if any(a.is_submitted for a in locked):
            raise ValidationError(_("A submitted review cannot be reassigned."))
        made = []
        for old in locked:
            item, leaving = old.item, old.reviewer_id
            old.delete()
            made += assignments_make(items=[item], reviewers_per_answer=item.assignments.count() + 1, rubric=old.rubric,
                                     due_date=old.due_date, actor=actor, remote_addr=remote_addr,
                                     exclude=frozenset({leaving}))
    return made


def _current_rubric() -> Rubric:
    rubric = Rubric.objects.filter(name="default", is_current=True).first() or Rubric.objects.filter(is_current=True).first()
    if rubric is None:
        raise ValidationError(_("There is no rubric. An ML admin must create one."))
    return rubric


def _require(user, permission: str, message: str) -> None:
    if user is None or not user.has_perm(permission):
        raise PermissionDenied(message)


# --- The reviewer's work ---------------------------------------------------------------------------------------


def blinded_answers(assignment: ReviewAssignment) -> list[tuple[str, ItemAnswer]]:
    """The item's answers as this reviewer sees them: labelled A (and B), in this assignment's random order."""
    answers = sorted(assignment.item.answers.all(), key=lambda answer: answer.pk)
    if assignment.swapped:
        answers.reverse()
    return list(zip(ANSWER_LABELS, answers, strict=False))


@dataclass
class ReviewInput:
    """What a reviewer enters: per answer label ("A", "B") a score per dimension key and "overall"."""

    ratings: dict[str, dict[str, int | None]] = field(default_factory=dict)
    preference: str = ""  # "A", "B" or "tie": only with two answers
    corrected_diagnosis: str = ""
    corrected_treatment: str = ""
    comment: str = ""
    accept_for_training: bool = False


class ReviewAlreadySubmitted(ValidationError):
    """A submitted review is final."""


def review_open(*, reviewer, assignment: ReviewAssignment, remote_addr: str | None = None) -> None:
    """The reviewer opened an item (read its de-identified case): audited."""
    access_record(user=reviewer, action=AccessEvent.Action.REVIEW_VIEW, target=f"review {assignment.pk}",
                  remote_addr=remote_addr)


def review_save(
    *, reviewer, assignment: ReviewAssignment, data: ReviewInput, submit: bool, remote_addr: str | None = None
) -> ReviewAssignment:
    """Save the reviewer's draft, or submit it (once). On a submit with missing scores the draft is kept and a
    ValidationError names each missing field; a second submit raises ReviewAlreadySubmitted."""
    _require(reviewer, "evaluation.review_answers", _("Only reviewers review answers."))
    if assignment.reviewer_id != reviewer.pk:
        raise PermissionDenied(_("This review is assigned to someone else."))
    dimensions = list(assignment.rubric.dimensions.all())
    labelled = blinded_answers(assignment)
    errors = _check_values(data, dimensions, labelled)
    if errors:
        raise ValidationError(errors)
    missing = _missing(data, dimensions, labelled) if submit else {}
    # One transaction under the row lock: a draft saved from another tab cannot slip in between the check and the
    # submit. The draft is written first, so a submit refused for missing scores loses nothing that was entered.
    with transaction.atomic(), set_actor(reviewer, remote_addr=remote_addr):
        locked = ReviewAssignment.objects.select_for_update().get(pk=assignment.pk)
        if locked.is_submitted:
            raise ReviewAlreadySubmitted(_("This review was already submitted; a submitted review cannot be changed."))
        _write_draft(locked, data, labelled)
        locked.status = ReviewAssignment.Status.IN_PROGRESS
        if submit and not missing:
            locked.status, locked.submitted_at = ReviewAssignment.Status.SUBMITTED, timezone.now()
        locked.save()
        if locked.is_submitted:
            _after_submit(locked, labelled, reviewer=reviewer, remote_addr=remote_addr)
    if missing:
        raise ValidationError(missing)
    return locked


def _after_submit(assignment: ReviewAssignment, labelled, *, reviewer, remote_addr: str | None) -> None:
    if assignment.accept_for_training and (assignment.corrected_diagnosis or assignment.corrected_treatment):
        _feedback_from_review(assignment, labelled)
    access_record(user=reviewer, action=AccessEvent.Action.REVIEW_SUBMIT, target=f"review {assignment.pk}",
                  remote_addr=remote_addr)
    evaluation_id = assignment.item.evaluation_id
    if evaluation_id:
        # Locked, so that of two last reviews submitted at once the later one sees the other and completes the batch.
        evaluation = ClinicalEvaluation.objects.select_for_update().filter(pk=evaluation_id).first()
        open_work = ReviewAssignment.objects.filter(item__evaluation_id=evaluation_id).exclude(
            status=ReviewAssignment.Status.SUBMITTED)
        if evaluation and evaluation.status == ClinicalEvaluation.Status.REVIEWING and not open_work.exists():
            evaluation.status = ClinicalEvaluation.Status.COMPLETE
            evaluation.save(update_fields=["status"])


def _field(label: str, key: str) -> str:
    return f"{label}-{key}"


def _check_values(data: ReviewInput, dimensions: list[RubricDimension], labelled) -> dict:
    """Scores out of range, unknown answers or dimensions: refused even in a draft."""
    errors: dict[str, str] = {}
    labels = {label for label, _answer in labelled}
    keys = {d.key for d in dimensions} | {OVERALL}
    for label, scores in data.ratings.items():
        if label not in labels:
            errors["ratings"] = _("There is no answer %(label)s in this review.") % {"label": label}
            continue
        for key, value in scores.items():
            if key not in keys:
                errors[_field(label, key)] = _("Unknown rubric dimension %(key)s.") % {"key": key}
            elif value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5):
                errors[_field(label, key)] = _("Choose a score from 1 to 5.")
    if data.preference and (len(labelled) < 2 or data.preference not in ReviewAssignment.Preference.values):
        errors["preference"] = _("Choose A, B or about the same.")
    return errors


def _missing(data: ReviewInput, dimensions: list[RubricDimension], labelled) -> dict:
    missing: dict[str, str] = {}
    for label, _answer in labelled:
        scores = data.ratings.get(label, {})
        for key in [d.key for d in dimensions] + [OVERALL]:
            if scores.get(key) is None:
                missing[_field(label, key)] = _("Choose a score.")
    if len(labelled) == 2 and not data.preference:
        missing["preference"] = _("Say which answer is better, or that they are about the same.")
    return missing


def _write_draft(assignment: ReviewAssignment, data: ReviewInput, labelled) -> None:
    deidentifier = Deidentifier()
    language = assignment.item.language

    def clean(text: str) -> str:
        text = (text or "").strip()
        return deidentifier.deidentify(text, language, echo_names=False) if text else ""

    assignment.preference = data.preference if len(labelled) == 2 else ""
    assignment.corrected_diagnosis = clean(" ".join((data.corrected_diagnosis or "").split()))[:300]
    assignment.corrected_treatment = clean(data.corrected_treatment)
    assignment.comment = clean(data.comment)
    assignment.accept_for_training = bool(data.accept_for_training)
    for label, answer in labelled:
        scores = data.ratings.get(label, {})
        AnswerRating.objects.update_or_create(
            assignment=assignment, answer=answer,
            defaults={"scores": {k: v for k, v in scores.items() if k != OVERALL and v is not None},
                      "overall": scores.get(OVERALL)},
        )


def _feedback_from_review(assignment: ReviewAssignment, labelled) -> FeedbackExample:
    """The corrected answer becomes training data. With two answers the correction is of the one the reviewer did not
    prefer (the first shown on a tie): that is the version it teaches."""
    answers = dict(labelled)
    corrected = answers["A"]
    if len(answers) == 2 and assignment.preference == ReviewAssignment.Preference.LEFT:
        corrected = answers["B"]
    diagnosis = assignment.corrected_diagnosis or corrected.diagnosis
    # A new diagnosis without a new treatment keeps no treatment: the model's was for its own diagnosis.
    treatment = assignment.corrected_treatment or ("" if assignment.corrected_diagnosis else corrected.treatment)
    return FeedbackExample.objects.create(
        source=FeedbackExample.Source.REVIEW, language=assignment.item.language, case_text=assignment.item.case_text,
        diagnosis=diagnosis, treatment=treatment, reviewer=assignment.reviewer, assignment=assignment,
        analysis=corrected.analysis, model_version=corrected.model_version, rubric=assignment.rubric,
    )


def doctor_feedback_decide(
    *, reviewer, feedback: DoctorFeedback, accept: bool, remote_addr: str | None = None
) -> FeedbackExample | None:
    """A reviewer accepts (a training example is made) or declines a doctor's corrected diagnosis."""
    _require(reviewer, "evaluation.review_answers", _("Only reviewers decide on doctors' corrections."))
    if feedback.doctor_id == reviewer.pk:
        raise PermissionDenied(_("A doctor's correction is decided by another reviewer."))
    with transaction.atomic():
        feedback = DoctorFeedback.objects.select_for_update().select_related("analysis__case").get(pk=feedback.pk)
        doctor_feedback_set_decision(feedback=feedback, accepted=accept, reviewer=reviewer)
        access_record(user=reviewer, action=AccessEvent.Action.FEEDBACK_DECIDE, cases=[feedback.analysis.case],
                      target=f"doctor feedback {feedback.pk}: {'accepted' if accept else 'declined'}",
                      remote_addr=remote_addr)
        if not accept:
            return None
        analysis = feedback.analysis
        return FeedbackExample.objects.create(
            source=FeedbackExample.Source.DOCTOR, language=analysis.case.language, case_text=analysis.case.model_text,
            diagnosis=feedback.correct_diagnosis, reviewer=reviewer, doctor_feedback=feedback, analysis=analysis,
            model_version=analysis.model_version,
        )


# --- Clinical evaluations ---------------------------------------------------------------------------------------


def evaluation_create(
    *, name: str, source: str, sample_size: int, version_a: ModelVersion, reviewers_per_answer: int, rubric: Rubric,
    due_date: date, actor, case_set: CaseSet | None = None, recent_days: int = 30, version_b: ModelVersion | None = None,
    max_new_tokens: int = 256, seed: int | None = None,
) -> ClinicalEvaluation:
    """Sample the cases, queue the answers on the `evaluation` queue; assignments follow when answers are ready."""
    _require(actor, "evaluation.add_clinicalevaluation", _("Only ML admins create clinical evaluations."))
    errors: dict[str, str] = {}
    if not 1 <= sample_size <= MAX_SAMPLE_SIZE:
        errors["sample_size"] = _("Sample between 1 and %(n)d cases.") % {"n": MAX_SAMPLE_SIZE}
    if version_b is not None and version_b.pk == version_a.pk:
        errors["version_b"] = _("Choose a different second version, or none.")
    if not 1 <= reviewers_per_answer <= MAX_REVIEWERS_PER_ANSWER:
        errors["reviewers_per_answer"] = _("Between 1 and %(n)d reviewers per answer.") % {"n": MAX_REVIEWERS_PER_ANSWER}
    elif reviewers_per_answer > (available := len(reviewers_available())):
        errors["reviewers_per_answer"] = _("There are only %(n)d reviewers.") % {"n": available}
    if due_date < timezone.localdate():
        errors["due_date"] = _("The due date is in the past.")
    if not 1 <= max_new_tokens <= 1024:
        errors["max_new_tokens"] = _("Between 1 and 1024 tokens.")
    if source == ClinicalEvaluation.Source.CASE_SET and case_set is None:
        errors["case_set"] = _("Choose a case set.")
    if errors:
        raise ValidationError(errors)
    seed = random.SystemRandom().randrange(2**31) if seed is None else seed
    cases = _sample(source=source, case_set=case_set, recent_days=recent_days, size=sample_size, seed=seed)
    if not cases:
        raise ValidationError({"case_set" if source == ClinicalEvaluation.Source.CASE_SET else "recent_days":
                               _("There are no cases to sample from.")})
    from evaluation.tasks import generate_answers

    with transaction.atomic(), set_actor(actor):
        evaluation = ClinicalEvaluation.objects.create(
            name=name, source=source, case_set=case_set if source == ClinicalEvaluation.Source.CASE_SET else None,
            recent_days=recent_days, sample_size=sample_size, version_a=version_a, version_b=version_b,
            reviewers_per_answer=reviewers_per_answer, rubric=rubric, due_date=due_date, seed=seed,
            max_new_tokens=max_new_tokens, created_by=actor, generation_started_at=timezone.now(),
        )
        items = ReviewItem.objects.bulk_create([_item(evaluation, case) for case in cases])
        ItemAnswer.objects.bulk_create(
            [ItemAnswer(item=item, model_version=version) for item in items for version in evaluation.versions]
        )
        transaction.on_commit(lambda: generate_answers.delay(evaluation.pk))
    return evaluation


def _sample(*, source: str, case_set: CaseSet | None, recent_days: int, size: int, seed: int) -> list:
    if source == ClinicalEvaluation.Source.CASE_SET:
        pool = list(LabelledCase.objects.filter(case_set=case_set).order_by("pk").values_list("pk", flat=True))
        model = LabelledCase
    else:
        since = timezone.now() - timedelta(days=recent_days)
        pool = list(Case.objects.filter(created_at__gte=since).order_by("pk").values_list("pk", flat=True))
        model = Case
    chosen = sorted(random.Random(seed).sample(pool, min(size, len(pool))))
    return list(model.objects.filter(pk__in=chosen).order_by("pk"))


def _item(evaluation: ClinicalEvaluation, case) -> ReviewItem:
    if isinstance(case, LabelledCase):
        return ReviewItem(evaluation=evaluation, labelled_case=case, language=case.language, case_text=case.text,
                          reference_diagnosis=case.diagnosis)
    return ReviewItem(evaluation=evaluation, case=case, language=case.language, case_text=case.model_text)


def evaluation_generate(*, evaluation_id: int) -> None:
    """The `evaluation` task: generate the queued answers batch by batch, then make the assignments. Idempotent: a
    redelivered task continues with the answers still queued."""
    evaluation = ClinicalEvaluation.objects.select_related("version_a", "version_b", "rubric", "created_by").get(
        pk=evaluation_id)
    if evaluation.status != ClinicalEvaluation.Status.GENERATING:
        return
    params = GenerationParams(max_new_tokens=evaluation.max_new_tokens)
    for version in evaluation.versions:
        while batch := _claim_answers(evaluation, version):
            try:
                answers = model_answers(
                    version=version, cases=[(a.item.case_text, a.item.language) for a in batch], params=params
                )
            except Exception as error:  # the admin reads this on the batch page; the worker log has the traceback
                if not isinstance(error, ModelLoadError):
                    logger.exception("evaluation %s: generation failed", evaluation.pk)
                message = str(error) if isinstance(error, ModelLoadError) else _(
                    "The model run failed (%(kind)s).") % {"kind": type(error).__name__}
                _evaluation_fail(evaluation, batch, f"{version.name}: {message}")
                return
            now = timezone.now()
            with transaction.atomic():
                for row, answer in zip(batch, answers, strict=True):
                    for name in ANSWER_TEXT_FIELDS:
                        setattr(row, name, getattr(answer, name))
                    row.status, row.generated_at = ItemAnswer.Status.DONE, now
                ItemAnswer.objects.bulk_update(batch, [*ANSWER_TEXT_FIELDS, "status", "generated_at"])
    if ItemAnswer.objects.filter(item__evaluation=evaluation).exclude(status=ItemAnswer.Status.DONE).exists():
        return  # another worker is still generating some (it assigns when it finishes), or some failed
    with transaction.atomic():
        evaluation = ClinicalEvaluation.objects.select_for_update().get(pk=evaluation.pk)
        if evaluation.status != ClinicalEvaluation.Status.GENERATING or evaluation.assigned_at:
            return
        actor = evaluation.created_by
        try:
            assignments_make(
                items=list(evaluation.items.all()), reviewers_per_answer=evaluation.reviewers_per_answer,
                rubric=evaluation.rubric, due_date=evaluation.due_date, actor=actor, seed=evaluation.seed,
            )
        except ValidationError as error:
            evaluation.status, evaluation.error = ClinicalEvaluation.Status.FAILED, " ".join(error.messages)
        else:
            evaluation.status, evaluation.assigned_at = ClinicalEvaluation.Status.REVIEWING, timezone.now()
        with set_actor(actor) if actor else contextlib.nullcontext():
            evaluation.save()


def _claim_answers(evaluation: ClinicalEvaluation, version: ModelVersion) -> list[ItemAnswer]:
    """Take the next queued answers of one version for this worker. Two workers (a redelivered task beside the first,
    or a retry) never generate the same answer twice, unless a claim is older than the stale limit: its worker died."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.MEDPORTAL_ANALYSIS_STALE_SECONDS)
    with transaction.atomic():
        batch = list(
            ItemAnswer.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(item__evaluation=evaluation, model_version=version, status=ItemAnswer.Status.QUEUED)
            .filter(Q(claimed_at__isnull=True) | Q(claimed_at__lt=stale))
            .select_related("item").order_by("pk")[:GENERATION_BATCH_SIZE]
        )
        ItemAnswer.objects.filter(pk__in=[a.pk for a in batch]).update(claimed_at=now)
    return batch


def _evaluation_fail(evaluation: ClinicalEvaluation, batch: list[ItemAnswer], message: str) -> None:
    with transaction.atomic():
        ItemAnswer.objects.filter(pk__in=[a.pk for a in batch]).update(status=ItemAnswer.Status.FAILED, error=message)
        ClinicalEvaluation.objects.filter(pk=evaluation.pk).update(status=ClinicalEvaluation.Status.FAILED, error=message)


def evaluation_is_stalled(evaluation: ClinicalEvaluation, *, now=None) -> bool:
    """Generating, but no answer came for MEDPORTAL_ANALYSIS_STALE_SECONDS: its worker may have died with the task."""
    if evaluation.status != ClinicalEvaluation.Status.GENERATING:
        return False
    marks = ItemAnswer.objects.filter(item__evaluation=evaluation).aggregate(
        generated=Max("generated_at"), claimed=Max("claimed_at"))
    quiet_since = max(filter(None, (marks["generated"], marks["claimed"], evaluation.generation_started_at,
                                    evaluation.created_at)))
    return ((now or timezone.now()) - quiet_since).total_seconds() > settings.MEDPORTAL_ANALYSIS_STALE_SECONDS


def evaluation_retry(*, evaluation: ClinicalEvaluation, actor) -> ClinicalEvaluation:
    """Generate the missing answers again: after a failure (the admin fixed the model version, say), or when generation
    has stalled (a worker killed mid-batch whose task the broker has not redelivered). The task is idempotent."""
    _require(actor, "evaluation.change_clinicalevaluation", _("Only ML admins manage clinical evaluations."))
    from evaluation.tasks import generate_answers

    with transaction.atomic(), set_actor(actor):
        evaluation = ClinicalEvaluation.objects.select_for_update().get(pk=evaluation.pk)
        if evaluation.status != ClinicalEvaluation.Status.FAILED and not evaluation_is_stalled(evaluation):
            raise ValidationError(_("Only a failed or stalled evaluation can be retried."))
        ItemAnswer.objects.filter(item__evaluation=evaluation).exclude(status=ItemAnswer.Status.DONE).update(
            status=ItemAnswer.Status.QUEUED, error="", claimed_at=None)
        evaluation.status, evaluation.error = ClinicalEvaluation.Status.GENERATING, ""
        evaluation.generation_started_at = timezone.now()
        evaluation.save()
        transaction.on_commit(lambda: generate_answers.delay(evaluation.pk))
    return evaluation


def evaluation_report_viewed(*, user, evaluation: ClinicalEvaluation, export: bool = False,
                             remote_addr: str | None = None) -> None:
    action = AccessEvent.Action.EVALUATION_EXPORT if export else AccessEvent.Action.EVALUATION_REPORT_VIEW
    access_record(user=user, action=action, target=f"clinical evaluation {evaluation.pk}", remote_addr=remote_addr)

"""Writes of the review half of the product: assignments, reviews, clinical evaluations, feedback examples."""

import contextlib
import hashlib
import logging
import random
import shutil
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from auditlog.context import set_actor
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Count, Max, Q
from django.utils import timezone
from django.utils.translation import gettext as _

from cases import roles, training_data
from cases.deid import Deidentifier
from cases.models import AccessEvent, Analysis, Case, CaseSet, DoctorFeedback, LabelledCase
from cases.services import (
    ANSWER_TEXT_FIELDS,
    access_record,
    access_record_many,
    case_set_import,
    doctor_feedback_set_decision,
    labelled_case_group,
    labelled_case_record,
    model_answers,
)
from evaluation import baseline, metrics
from evaluation.models import (
    AnswerRating,
    ClinicalEvaluation,
    ContinualRun,
    EvaluationPrediction,
    EvaluationRun,
    FeedbackExample,
    ItemAnswer,
    ReviewAssignment,
    ReviewItem,
    Rubric,
    RubricDimension,
)
from modeling.dataprep import split_key, stratified_sample
from modeling.models import ModelVersion, TrainingRun
from modeling.records import Record, read_records, write_records
from modeling.runtime import GenerationParams, ModelLoadError
from modeling.selectors import model_version_active, model_version_lineage
from modeling.services import (
    model_version_activate,
    training_parameters_clean,
    training_run_create,
    training_run_request_errors,
)

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


# --- Automatic evaluation runs ---------------------------------------------------------------------------------------

EVALUATION_RUN_BATCH_SIZE = 8
BASELINE_FOLDS = 5


def evaluation_run_create(
    *,
    version: ModelVersion,
    case_set: CaseSet,
    started_by=None,
    baseline_case_set: CaseSet | None = None,
    limit: int | None = None,
    max_new_tokens: int = 96,
    purpose: str = EvaluationRun.Purpose.MANUAL,
    training_run=None,
    enqueue: bool = True,
) -> EvaluationRun:
    """Queue an automatic evaluation of `version` on `case_set`; the evaluation task starts once this commits.

    `started_by` None is the product itself (a promotion gate); a person needs the permission to add runs.
    """
    if started_by is not None:
        _require(started_by, "evaluation.add_evaluationrun", _("Only ML admins can start evaluation runs."))
    errors = {}
    if version.status == ModelVersion.Status.RETIRED and purpose == EvaluationRun.Purpose.MANUAL:
        errors["model_version"] = _("%(version)s is retired; activate or re-register it to evaluate it again.") % {
            "version": version.name}
    size = LabelledCase.objects.filter(case_set=case_set).count()
    if not size:
        errors["case_set"] = _("The case set has no cases.")
    if limit is not None and limit < 1:
        errors["limit"] = _("Enter a number of cases of at least 1, or leave it empty for all of them.")
    if not 1 <= max_new_tokens <= 2048:
        errors["max_new_tokens"] = _("Enter a number of new tokens between 1 and 2048.")
    if baseline_case_set is not None and baseline_case_set == case_set:
        errors["baseline_case_set"] = _(
            "The baseline must learn from other cases than those it is scored on; leave it empty to cross-fit it.")
    if errors:
        raise ValidationError(errors)
    with transaction.atomic(), set_actor(started_by) if started_by else contextlib.nullcontext():
        run = EvaluationRun.objects.create(
            model_version=version, case_set=case_set, baseline_case_set=baseline_case_set, purpose=purpose,
            training_run=training_run, limit=limit, max_new_tokens=max_new_tokens, started_by=started_by,
            total=min(size, limit) if limit else size,
        )
        if enqueue:  # the `evaluate` command runs it in its own process instead
            transaction.on_commit(lambda: _evaluation_task().delay(run.pk))
    return run


def _evaluation_task():
    from evaluation.tasks import run_evaluation

    return run_evaluation


def _run_cases(run: EvaluationRun):
    cases = LabelledCase.objects.filter(case_set=run.case_set).order_by("pk")
    return cases[: run.limit] if run.limit else cases


def case_set_labels(case_set: CaseSet) -> list[str]:
    """The set's diagnoses, most frequent first: the label set its cases are ranked over."""
    counts = (LabelledCase.objects.filter(case_set=case_set).values("diagnosis").annotate(n=Count("id"))
              .order_by("-n", "diagnosis"))
    return [row["diagnosis"] for row in counts]


def _gold(case: LabelledCase) -> dict:
    differential = [name for name in case.differential if isinstance(name, str)]
    return {
        "case_id": str(case.pk), "language": case.language, "gold": case.diagnosis, "gold_differential": differential,
        "gold_text": "\n".join([case.diagnosis, *differential, case.treatment or ""]),
    }


def evaluation_run_execute(*, run_id: int) -> None:
    """The `evaluation` task: predict the cases not yet predicted, batch by batch, then score the version and the
    baseline. Idempotent: a redelivered task goes on where the last one stopped."""
    with transaction.atomic():
        run = EvaluationRun.objects.select_for_update().select_related("model_version", "case_set").filter(pk=run_id).first()
        if run is None or run.status not in (EvaluationRun.Status.QUEUED, EvaluationRun.Status.RUNNING):
            return
        now = timezone.now()
        run.status, run.heartbeat_at = EvaluationRun.Status.RUNNING, now
        run.started_at = run.started_at or now
        run.save(update_fields=["status", "started_at", "heartbeat_at"])
    version, labels = run.model_version, case_set_labels(run.case_set)
    params = GenerationParams(max_new_tokens=run.max_new_tokens)
    normalise = metrics.Normaliser()
    done = set(EvaluationPrediction.objects.filter(run=run).values_list("case_id", flat=True))
    pending = [case for case in _run_cases(run) if case.pk not in done]
    for start in range(0, len(pending), EVALUATION_RUN_BATCH_SIZE):
        batch = pending[start : start + EVALUATION_RUN_BATCH_SIZE]
        try:
            answers = model_answers(version=version, cases=[(c.text, c.language) for c in batch], params=params,
                                    labels=labels)
        except Exception as error:  # the admin reads this on the run's page; the worker log has the traceback
            if not isinstance(error, ModelLoadError):
                logger.exception("evaluation run %s: generation failed", run.pk)
            message = str(error) if isinstance(error, ModelLoadError) else _(
                "The model run failed (%(kind)s).") % {"kind": type(error).__name__}
            EvaluationRun.objects.filter(pk=run.pk).update(status=EvaluationRun.Status.FAILED, error=message,
                                                           finished_at=timezone.now())
            run.refresh_from_db()
            _continual_after_evaluation(run)
            return
        rows = []
        for case, answer in zip(batch, answers, strict=True):
            prediction = metrics.CasePrediction(
                **_gold(case), diagnosis=answer.diagnosis,
                ranked=[(item["name"], item["probability"]) for item in answer.differential],
                answer_text="\n".join([answer.diagnosis, *(i["name"] for i in answer.differential[:5]), answer.treatment]),
            )
            rows.append(EvaluationPrediction(run=run, case=case, prediction=prediction.to_dict(),
                                             correct=metrics.correct(prediction, normalise)))
        with transaction.atomic():
            EvaluationPrediction.objects.bulk_create(rows, ignore_conflicts=True)
            count = EvaluationPrediction.objects.filter(run=run).count()
            EvaluationRun.objects.filter(pk=run.pk).update(done=count, heartbeat_at=timezone.now())
    _evaluation_run_finish(run)


def _evaluation_run_finish(run: EvaluationRun) -> None:
    normalise = metrics.Normaliser()
    rows = list(EvaluationPrediction.objects.filter(run=run).select_related("case"))
    baseline_predictions, trained_on = _baseline_predictions(run, [row.case for row in rows])
    for row in rows:
        if row.case_id in baseline_predictions:
            row.baseline = baseline_predictions[row.case_id].to_dict()
            row.baseline_correct = metrics.correct(baseline_predictions[row.case_id], normalise)
    model_cases = [metrics.CasePrediction.from_dict(row.prediction) for row in rows]
    baseline_cases = [baseline_predictions[row.case_id] for row in rows if row.case_id in baseline_predictions]
    with transaction.atomic():
        EvaluationPrediction.objects.bulk_update(rows, ["baseline", "baseline_correct"])
        run = EvaluationRun.objects.select_for_update().get(pk=run.pk)
        if run.status != EvaluationRun.Status.RUNNING:
            return
        run.metrics = metrics.summarise(model_cases, normalise=normalise, seed=run.seed)
        run.baseline = {**metrics.summarise(baseline_cases, normalise=normalise, seed=run.seed), "trained_on": trained_on}
        run.baseline["comparison"] = metrics.compare(baseline_cases, model_cases, normalise=normalise, seed=run.seed)
        run.errors = metrics.frequent_errors(model_cases, normalise=normalise)
        run.done, run.status, run.finished_at = len(rows), EvaluationRun.Status.SUCCEEDED, timezone.now()
        with set_actor(run.started_by) if run.started_by else contextlib.nullcontext():
            run.save()
    _continual_after_evaluation(run)


def _baseline_predictions(run: EvaluationRun, cases: list[LabelledCase]) -> tuple[dict, str]:
    """The baseline's prediction per case id, and what it was trained on (said in the report)."""
    groups = {labelled_case_group(case) for case in cases}
    training: list[baseline.LabelledText] = []
    if run.baseline_case_set_id:
        trained_on = _("case set %(name)s") % {"name": run.baseline_case_set.name}
        training = [baseline.LabelledText(c.text, c.diagnosis, c.language)
                    for c in LabelledCase.objects.filter(case_set=run.baseline_case_set)
                    if labelled_case_group(c) not in groups]
    else:
        source = (TrainingRun.objects.filter(result_version=run.model_version).order_by("-pk").first()
                  or (run.training_run if run.training_run and run.training_run.result_version_id == run.model_version_id
                      else None))
        trained_on = ""
        if source is not None:
            try:
                records = read_records(source.train_file)
            except (OSError, ValueError):
                records = []
            training = [baseline.LabelledText(r.text, r.diagnosis, r.language or "en")
                        for r in records if split_key(r) not in groups]
            if training:
                trained_on = _("the training file of training run %(id)s") % {"id": source.pk}
    try:
        if training:
            model = baseline.TfidfBaseline(seed=run.seed).fit(training)
            return {case.pk: model.predict(**_baseline_args(case)) for case in cases}, trained_on
        return _cross_fitted(cases, run.seed), _("the evaluated cases, cross-fitted in %(k)d folds by patient") % {
            "k": BASELINE_FOLDS}
    except baseline.BaselineError as error:
        logger.warning("evaluation run %s: no baseline: %s", run.pk, error)
        return {}, str(error)


def _baseline_args(case: LabelledCase) -> dict:
    gold = _gold(case)
    return {"case_id": gold["case_id"], "text": case.text, "language": case.language, "gold": case.diagnosis,
            "gold_differential": gold["gold_differential"], "gold_text": gold["gold_text"]}


def _cross_fitted(cases: list[LabelledCase], seed: int) -> dict:
    """Each case predicted by a baseline trained on the other folds (a patient's cases share a fold)."""
    fold = {case.pk: int(hashlib.sha256(f"{seed}:{labelled_case_group(case)}".encode()).hexdigest(), 16) % BASELINE_FOLDS
            for case in cases}
    predictions = {}
    for k in range(BASELINE_FOLDS):
        held = [case for case in cases if fold[case.pk] == k]
        if not held:
            continue
        model = baseline.TfidfBaseline(seed=seed).fit(
            [baseline.LabelledText(c.text, c.diagnosis, c.language) for c in cases if fold[c.pk] != k])
        predictions.update({case.pk: model.predict(**_baseline_args(case)) for case in held})
    return predictions


def evaluation_run_retry(*, run: EvaluationRun, actor) -> EvaluationRun:
    """Queue a failed (or stalled) run again: the cases predicted are kept, the rest are predicted."""
    _require(actor, "evaluation.add_evaluationrun", _("Only ML admins can start evaluation runs."))
    with transaction.atomic(), set_actor(actor):
        run = EvaluationRun.objects.select_for_update().get(pk=run.pk)
        if run.status == EvaluationRun.Status.SUCCEEDED:
            raise ValidationError(_("This evaluation run has already finished."))
        if run.status in (EvaluationRun.Status.QUEUED, EvaluationRun.Status.RUNNING) and not evaluation_run_is_stalled(run):
            raise ValidationError(_("This evaluation run is still in progress."))
        run.status, run.error, run.finished_at = EvaluationRun.Status.QUEUED, "", None
        run.save()
        transaction.on_commit(lambda: _evaluation_task().delay(run.pk))
    return run


def evaluation_run_is_stalled(run: EvaluationRun, *, now=None) -> bool:
    """Running, and no batch has come in for the stale period: its worker has likely stopped."""
    if run.status != EvaluationRun.Status.RUNNING:
        return False
    since = run.heartbeat_at or run.started_at or run.created_at
    return (now or timezone.now()) - since > timedelta(seconds=settings.MEDPORTAL_ANALYSIS_STALE_SECONDS)


def evaluation_run_predictions_viewed(*, user, run: EvaluationRun, remote_addr: str | None = None) -> None:
    access_record(user=user, action=AccessEvent.Action.EVALUATION_REPORT_VIEW, target=f"evaluation run {run.pk} predictions",
                  remote_addr=remote_addr)


# --- Training on case sets (modeling trains files; this layer exports the case records for it) ------------------------


def training_run_start(
    *,
    kind: str,
    dataset_key: str,
    base_version: ModelVersion | None,
    parameters: dict,
    started_by,
    teacher_version: ModelVersion | None = None,
    val_dataset_key: str = "",
) -> TrainingRun:
    """The admin's "Start a training run": export the chosen case set(s) to JSONL, then queue the run on them (modeling
    trains files; the case records and their export are cases', and this layer joins the two)."""
    if not started_by.has_perm("modeling.add_trainingrun"):
        raise PermissionDenied(_("Only ML admins can start training runs."))
    errors = training_run_request_errors(kind=kind, base_version=base_version, teacher_version=teacher_version)
    try:
        training_parameters_clean(parameters, kind=kind)
    except ValidationError as error:
        errors = {**error.message_dict, **errors}
    provider = training_data
    offered = dict(provider.choices())
    if dataset_key not in offered:
        errors["dataset"] = _("Choose one of the case sets offered.")
    if val_dataset_key and val_dataset_key not in offered:
        errors["val_dataset"] = _("Choose one of the case sets offered.")
    elif val_dataset_key and val_dataset_key == dataset_key:
        errors["val_dataset"] = _("Validate on another case set than the one trained on, or leave it empty.")
    if errors:  # before exporting anything
        raise ValidationError(errors)
    directory = Path(settings.MEDPORTAL_TRAINING_DIR) / "data" / f"{timezone.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:8]}"
    try:
        # One transaction: a run that cannot be queued leaves no export behind (the provider audits its exports).
        with transaction.atomic():
            train_file, description = _export_case_set(provider, dataset_key, directory / "train", "dataset", started_by)
            val_file = None
            if val_dataset_key:
                val_file, val_description = _export_case_set(provider, val_dataset_key, directory / "validation", "val_dataset",
                                                    started_by)
                description = _("%(train)s; validated on %(validation)s") % {"train": description, "validation": val_description}
            return training_run_create(
                kind=kind, dataset=str(description)[:300], train_file=train_file, val_file=val_file,
                base_version=base_version, parameters=parameters, started_by=started_by, teacher_version=teacher_version,
            )
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)  # nothing trains on it
        raise


def _export_case_set(provider, key: str, directory: Path, field: str, actor) -> tuple[Path, str]:
    directory.mkdir(parents=True, exist_ok=True)
    try:
        return provider.export(key, directory, actor=actor)
    except ValidationError as error:
        raise ValidationError({field: error.messages}) from None
    except ValueError as error:  # e.g. an empty case set
        raise ValidationError({field: str(error)}) from None


# --- Retraining from feedback, the gate, promotion --------------------------------------------------------------------

CONTINUAL_DEFAULT_PARAMETERS = {"epochs": 3}


def feedback_waiting():
    """Accepted feedback examples not yet used by a retraining (one that failed gave its examples back)."""
    used = ContinualRun.objects.exclude(status=ContinualRun.Status.FAILED).aggregate(until=Max("feedback_until"))["until"]
    examples = FeedbackExample.objects.order_by("created_at", "pk")
    return examples.filter(created_at__gt=used) if used else examples


def _feedback_record(example: FeedbackExample) -> Record:
    return Record(text=example.case_text, diagnosis=example.diagnosis, treatment=example.treatment,
                  language=example.language, id=f"feedback-{example.pk}")


def _replay_pool(version: ModelVersion, replay_case_set: CaseSet | None, exclude_groups: set[str]) -> list[Record]:
    """Earlier training data: the chosen case set, else the files the version's lineage was trained on; never a case
    of the gate set's patients (the gate stays a fair test) and never earlier feedback (replay is what came before)."""
    if replay_case_set is not None:
        records = [labelled_case_record(case, replay_case_set)
                   for case in LabelledCase.objects.filter(case_set=replay_case_set).order_by("pk")]
    else:
        records = []
        for step in model_version_lineage(version):
            if step["run"] is not None:
                try:
                    records += read_records(step["run"].train_file)
                except (OSError, ValueError):
                    continue  # a file cleaned away: the rest of the lineage still counts
    seen, pool = set(), []
    for record in records:
        key = (record.text, record.diagnosis)
        if key in seen or record.id.startswith("feedback-") or split_key(record) in exclude_groups:
            continue
        seen.add(key)
        pool.append(record)
    return pool


def continual_run_start(
    *,
    actor,
    gate_case_set: CaseSet,
    replay_case_set: CaseSet | None = None,
    replay_size: int | None = None,
    replay_ratio: float | None = None,
    parameters: dict | None = None,
    seed: int = 0,
) -> ContinualRun:
    """"Retrain from feedback": the accepted feedback since the last retraining plus a replay sample of earlier
    training data (stratified by diagnosis) become a training set; a continual training run of the active version is
    queued on it. `actor` None is the product itself (the beat schedule)."""
    if actor is not None:
        _require(actor, "evaluation.add_continualrun", _("Only ML admins can retrain from feedback."))
    replay_size = settings.MEDPORTAL_REPLAY_SIZE if replay_size is None else replay_size
    replay_ratio = settings.MEDPORTAL_REPLAY_RATIO if replay_ratio is None else replay_ratio
    active = model_version_active()
    feedback = list(feedback_waiting())
    errors = {}
    if active is None:
        errors["__all__"] = _("There is no active model version to continue.")
    if not feedback:
        errors["__all__"] = _("No accepted feedback has arrived since the last retraining.")
    if not LabelledCase.objects.filter(case_set=gate_case_set).exists():
        errors["gate_case_set"] = _("The gate set has no cases.")
    if replay_case_set is not None and replay_case_set == gate_case_set:
        errors["replay_case_set"] = _("Replay earlier training data, not the gate set: the gate must stay unseen.")
    if replay_size < 0 or replay_ratio < 0:
        errors["replay_size"] = _("The replay size and ratio cannot be negative.")
    if errors:
        raise ValidationError(errors)
    gate_groups = {labelled_case_group(case) for case in LabelledCase.objects.filter(case_set=gate_case_set)}
    pool = _replay_pool(active, replay_case_set, gate_groups)
    wanted = min(replay_size, round(replay_ratio * len(feedback)))
    replay = stratified_sample(pool, wanted, seed=seed)
    parameters = {**CONTINUAL_DEFAULT_PARAMETERS, **(parameters or {})}
    directory = Path(settings.MEDPORTAL_TRAINING_DIR) / "data" / f"retrain-{timezone.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:8]}"
    directory.mkdir(parents=True, exist_ok=True)
    train_file, replay_file = directory / "train.jsonl", directory / "replay.jsonl"
    write_records([*map(_feedback_record, feedback), *replay], train_file)
    write_records(replay, replay_file)
    try:
        with transaction.atomic(), set_actor(actor) if actor else contextlib.nullcontext():
            replay_set = None
            if replay:  # the forgetting check needs the replay cases as a case set; named after the run below
                replay_set = case_set_import(path=replay_file, case_set=f"retrain-replay-{uuid.uuid4().hex[:8]}",
                                             actor=actor, description=_("Replay sample of a retraining from feedback"))
                replay_set = replay_set.case_set
            description = _("%(feedback)d accepted feedback examples and %(replay)d replay examples") % {
                "feedback": len(feedback), "replay": len(replay)}
            run = training_run_create(kind=TrainingRun.Kind.CONTINUAL, dataset=str(description)[:300],
                                      train_file=train_file, base_version=active, parameters=parameters,
                                      started_by=actor)
            return ContinualRun.objects.create(
                base_version=active, training_run=run, gate_case_set=gate_case_set, replay_case_set=replay_set,
                feedback_count=len(feedback), replay_count=len(replay), feedback_until=feedback[-1].created_at,
                feedback_ids=[example.pk for example in feedback], margin=settings.MEDPORTAL_GATE_MARGIN,
                forgetting_bound=settings.MEDPORTAL_FORGETTING_BOUND, gate_metric=settings.MEDPORTAL_GATE_METRIC,
                auto_promote=settings.MEDPORTAL_AUTO_PROMOTE, started_by=actor,
            )
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def continual_run_training_ended(*, training_run_id: int) -> None:
    """The training run of a retraining ended: evaluate its candidate and the active version on the gate set and the
    replay set (four runs on the evaluation queue), or record why there is no candidate."""
    with transaction.atomic():
        continual = (ContinualRun.objects.select_for_update(of=("self",)).select_related("training_run", "base_version")
                     .filter(training_run_id=training_run_id).first())
        if continual is None or continual.status != ContinualRun.Status.TRAINING:
            return
        run = continual.training_run
        if run.status != TrainingRun.Status.SUCCEEDED or run.result_version_id is None:
            continual.status, continual.finished_at = ContinualRun.Status.FAILED, timezone.now()
            continual.error = run.error or _("The training run was %(status)s.") % {"status": run.get_status_display()}
            continual.save()
            return
        continual.candidate = run.result_version
        for field, version, case_set, purpose in (
            ("candidate_gate_run", continual.candidate, continual.gate_case_set, EvaluationRun.Purpose.GATE),
            ("active_gate_run", continual.base_version, continual.gate_case_set, EvaluationRun.Purpose.GATE),
            ("candidate_replay_run", continual.candidate, continual.replay_case_set, EvaluationRun.Purpose.REPLAY),
            ("active_replay_run", continual.base_version, continual.replay_case_set, EvaluationRun.Purpose.REPLAY),
        ):
            if case_set is not None:
                setattr(continual, field, evaluation_run_create(version=version, case_set=case_set, purpose=purpose,
                                                                training_run=run))
        continual.status = ContinualRun.Status.EVALUATING
        continual.save()


def gate_decision(*, metric: str, margin: float, bound: float, candidate_gate: float, active_gate: float,
                  candidate_replay: float | None, active_replay: float | None) -> dict:
    """Passed: on the gate set the candidate is at most `margin` below the active version, and on the replay set it
    forgot at most `bound` (the active version's value minus its own). The numbers are kept with the verdict."""
    reasons = []
    if candidate_gate < active_gate - margin:
        reasons.append("gate")
    forgetting = None
    if candidate_replay is not None and active_replay is not None:
        forgetting = active_replay - candidate_replay
        if forgetting > bound:
            reasons.append("forgetting")
    return {"metric": metric, "margin": margin, "bound": bound, "candidate_gate": candidate_gate,
            "active_gate": active_gate, "candidate_replay": candidate_replay, "active_replay": active_replay,
            "forgetting": forgetting, "passed": not reasons, "failed_on": reasons}


def _metric(run: EvaluationRun | None, name: str) -> float | None:
    if run is None:
        return None
    block = (run.metrics.get("overall") or {}).get(name)
    return block["value"] if block else 0.0


def _continual_after_evaluation(run: EvaluationRun) -> None:
    """An evaluation run ended: when it was the last of a retraining's four, decide the gate (and promote when the
    settings say so and the active version is still the one the candidate was measured against)."""
    if run.purpose == EvaluationRun.Purpose.MANUAL:
        return
    with transaction.atomic():
        continual = (ContinualRun.objects.select_for_update(of=("self",))
                     .select_related("candidate_gate_run", "active_gate_run", "candidate_replay_run", "active_replay_run",
                                     "candidate", "base_version")
                     .filter(Q(candidate_gate_run=run) | Q(active_gate_run=run) | Q(candidate_replay_run=run)
                             | Q(active_replay_run=run)).first())
        if continual is None or continual.status != ContinualRun.Status.EVALUATING:
            return
        runs = continual.evaluation_runs
        failed = [r for r in runs if r.status == EvaluationRun.Status.FAILED]
        if failed:
            continual.status, continual.finished_at = ContinualRun.Status.FAILED, timezone.now()
            continual.error = _("Evaluation run #%(id)s failed: %(error)s") % {"id": failed[0].pk, "error": failed[0].error}
            continual.save()
            return
        if any(r.status != EvaluationRun.Status.SUCCEEDED for r in runs):
            return
        metric = continual.gate_metric
        continual.gate = gate_decision(
            metric=metric, margin=continual.margin, bound=continual.forgetting_bound,
            candidate_gate=_metric(continual.candidate_gate_run, metric), active_gate=_metric(continual.active_gate_run, metric),
            candidate_replay=_metric(continual.candidate_replay_run, metric),
            active_replay=_metric(continual.active_replay_run, metric),
        )
        continual.status = ContinualRun.Status.PASSED if continual.gate["passed"] else ContinualRun.Status.FAILED_GATE
        continual.finished_at = timezone.now()
        if (continual.gate["passed"] and continual.auto_promote
                and model_version_active() == continual.base_version):
            model_version_activate(version=continual.candidate, actor=continual.started_by)
            continual.status = ContinualRun.Status.PROMOTED
        with set_actor(continual.started_by) if continual.started_by else contextlib.nullcontext():
            continual.save()


def continual_run_promote(*, continual: ContinualRun, actor) -> ModelVersion:
    """An ML admin makes the candidate that passed the gate the active version (audited)."""
    _require(actor, "evaluation.change_continualrun", _("Only ML admins can promote a candidate."))
    with transaction.atomic(), set_actor(actor):
        continual = ContinualRun.objects.select_for_update(of=("self",)).select_related("candidate").get(pk=continual.pk)
        if continual.status != ContinualRun.Status.PASSED:
            raise ValidationError(_("Only a candidate that passed the gate is promoted here (this one: %(status)s). "
                                    "Any version can still be made active from its own page, with the comparison.") % {
                "status": continual.get_status_display()})
        model_version_activate(version=continual.candidate, actor=actor)
        continual.status = ContinualRun.Status.PROMOTED
        continual.save()
    return continual.candidate


def retrain_when_feedback_waits() -> ContinualRun | None:
    """The beat schedule's check: retrain once MEDPORTAL_RETRAIN_AFTER accepted examples wait and nothing is retraining."""
    needed, gate_name = settings.MEDPORTAL_RETRAIN_AFTER, settings.MEDPORTAL_GATE_CASE_SET
    if not needed or not gate_name:
        return None
    gate = CaseSet.objects.filter(name=gate_name).first()
    busy = ContinualRun.objects.filter(status__in=(ContinualRun.Status.TRAINING, ContinualRun.Status.EVALUATING)).exists()
    if gate is None or busy or feedback_waiting().count() < needed:
        return None
    return continual_run_start(actor=None, gate_case_set=gate)

"""Reads of the review half, always given the acting user: reviewers see only their own work, blinded."""

import csv
import io
from collections import defaultdict
from dataclasses import dataclass

from django.core.exceptions import PermissionDenied
from django.db.models import Count, F, Q, QuerySet
from django.http import Http404
from django.utils.translation import get_language, gettext_lazy
from django.utils.translation import gettext as _

from cases.models import Analysis, DoctorFeedback
from evaluation import metrics, statistics
from evaluation.models import (
    AnswerRating,
    ClinicalEvaluation,
    ContinualRun,
    EvaluationPrediction,
    EvaluationRun,
    ItemAnswer,
    ReviewAssignment,
    ReviewItem,
    Rubric,
)
from evaluation.services import OVERALL, blinded_answers

OPEN = (ReviewAssignment.Status.ASSIGNED, ReviewAssignment.Status.IN_PROGRESS)
# The earliest due first; work without a due date after all dated work (SQLite and PostgreSQL differ by default).
DUE_FIRST = F("due_date").asc(nulls_last=True)


def _require_reviewer(user) -> None:
    if not user.has_perm("evaluation.review_answers"):
        raise PermissionDenied


def assignment_queue(*, user, done: bool = False) -> QuerySet[ReviewAssignment]:
    """The reviewer's own open assignments (drafts before untouched ones, the earliest due first), or the done ones
    (the latest first)."""
    _require_reviewer(user)
    assignments = ReviewAssignment.objects.filter(reviewer=user).select_related("item").annotate(
        answer_count=Count("item__answers"))
    if done:
        return assignments.filter(status=ReviewAssignment.Status.SUBMITTED).order_by("-submitted_at", "-pk")
    # "in_progress" sorts after "assigned": descending puts drafts first.
    return assignments.filter(status__in=OPEN).order_by("-status", DUE_FIRST, "pk")


def assignment_counts(*, user) -> dict[str, int]:
    _require_reviewer(user)
    counts = dict(ReviewAssignment.objects.filter(reviewer=user).values_list("status").annotate(n=Count("pk")))
    return {status: counts.get(status, 0) for status in ReviewAssignment.Status.values}


def assignment_next(*, user, after: int | None = None) -> ReviewAssignment | None:
    """The next open assignment: a draft before untouched work, the earliest due first; skipping `after`."""
    _require_reviewer(user)
    queue = ReviewAssignment.objects.filter(reviewer=user, status__in=OPEN)
    if after:
        queue = queue.exclude(pk=after)
    return queue.order_by("-status", DUE_FIRST, "pk").first()


def assignment_get(*, user, pk: int) -> ReviewAssignment:
    """One of the reviewer's own assignments; anyone else's does not exist for them."""
    _require_reviewer(user)
    try:
        return ReviewAssignment.objects.select_related("item", "rubric").prefetch_related(
            "item__answers", "ratings", "rubric__dimensions").get(pk=pk, reviewer=user)
    except ReviewAssignment.DoesNotExist:
        raise Http404 from None


def assignment_ratings(assignment: ReviewAssignment) -> dict[str, dict[str, int | None]]:
    """The reviewer's saved scores by answer label: {"A": {"safety": 4, ..., "overall": 3}}."""
    by_answer = {rating.answer_id: rating for rating in assignment.ratings.all()}
    saved = {}
    for label, answer in blinded_answers(assignment):
        rating = by_answer.get(answer.pk)
        saved[label] = {**(rating.scores if rating else {}), OVERALL: rating.overall if rating else None}
    return saved


def doctor_corrections_pending(*, user) -> QuerySet[DoctorFeedback]:
    """Doctors' corrected diagnoses waiting for a reviewer (not the reviewer's own, when a doctor also reviews)."""
    _require_reviewer(user)
    # A case the reviewer scores blinded (now or later) is left out: the doctor's verdict must not colour that review.
    reviewing = ReviewItem.objects.filter(assignments__reviewer=user, case__isnull=False).values("case")
    return (
        DoctorFeedback.objects.filter(decision=DoctorFeedback.Decision.PENDING)
        .exclude(doctor=user).exclude(analysis__case__author=user).exclude(analysis__case__in=reviewing)
        .select_related("analysis__case").order_by("created_at", "pk")
    )


def doctor_correction_get(*, user, pk: int) -> DoctorFeedback:
    try:
        return doctor_corrections_pending(user=user).get(pk=pk)
    except DoctorFeedback.DoesNotExist:
        raise Http404 from None


def analyses_recent(*, user, limit: int = 50) -> QuerySet[Analysis]:
    """Finished analyses an ML admin may send for ad hoc review, newest first."""
    if not user.has_perm("evaluation.add_reviewassignment"):
        raise PermissionDenied
    return (
        Analysis.objects.filter(status=Analysis.Status.DONE).select_related("case", "model_version")
        .order_by("-finished_at", "-pk")[:limit]
    )


def analyses_review_counts(analysis_ids) -> dict[int, int]:
    """How many reviewers each analysis already has in ad hoc review."""
    return dict(
        ReviewAssignment.objects.filter(item__evaluation=None, item__answers__analysis__in=analysis_ids)
        .values_list("item__answers__analysis").annotate(n=Count("pk", distinct=True))
    )


def rubric_choices() -> QuerySet[Rubric]:
    return Rubric.objects.filter(is_current=True).order_by("name")


def evaluation_list(*, user) -> QuerySet[ClinicalEvaluation]:
    if not user.has_perm("evaluation.view_clinicalevaluation"):
        return ClinicalEvaluation.objects.none()
    return ClinicalEvaluation.objects.select_related("version_a", "version_b", "case_set", "created_by", "rubric")


def evaluation_get(*, user, pk) -> ClinicalEvaluation | None:
    return evaluation_list(user=user).filter(pk=pk).first()


# --- The unblinded report -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    answers_total: int
    answers_done: int
    answers_failed: int
    reviews_total: int
    reviews_done: int

    @property
    def answers_percent(self) -> int:
        return int(100 * self.answers_done / self.answers_total) if self.answers_total else 0

    @property
    def reviews_percent(self) -> int:
        return int(100 * self.reviews_done / self.reviews_total) if self.reviews_total else 0


def evaluation_progress(evaluation: ClinicalEvaluation) -> Progress:
    answers = dict(ItemAnswer.objects.filter(item__evaluation=evaluation).values_list("status").annotate(n=Count("pk")))
    reviews = dict(ReviewAssignment.objects.filter(item__evaluation=evaluation).values_list("status").annotate(n=Count("pk")))
    return Progress(
        answers_total=sum(answers.values()), answers_done=answers.get(ItemAnswer.Status.DONE, 0),
        answers_failed=answers.get(ItemAnswer.Status.FAILED, 0), reviews_total=sum(reviews.values()),
        reviews_done=reviews.get(ReviewAssignment.Status.SUBMITTED, 0),
    )


@dataclass(frozen=True)
class DimensionRow:
    key: str
    name: str
    estimates: list[statistics.Estimate]  # one per version, over items (each item's mean over its reviewers)
    difference: statistics.Estimate | None  # second version minus first, paired by item
    agreement: statistics.Agreement


@dataclass(frozen=True)
class Report:
    evaluation: ClinicalEvaluation
    progress: Progress
    versions: list[str]
    rows: list[DimensionRow]
    preferences: statistics.WinTieLoss | None  # the second version's wins, ties and losses in reviewers' preferences
    chart: dict
    outside: list["VersionFeedback"]  # per version: what doctors and ad hoc reviews said, apart from this evaluation


@dataclass(frozen=True)
class VersionFeedback:
    """What was said about a version outside clinical evaluations: doctors on their own cases, ad hoc reviews."""

    version: str
    doctor_ratings: int
    doctor_helpful: int
    corrections_pending: int
    corrections_accepted: int
    ad_hoc_overall: statistics.Estimate  # over ad hoc reviewed answers, each answer's mean over its reviewers

    @property
    def helpful_percent(self) -> int | None:
        return round(100 * self.doctor_helpful / self.doctor_ratings) if self.doctor_ratings else None


def version_feedback(version) -> VersionFeedback:
    ratings = DoctorFeedback.objects.filter(analysis__model_version=version)
    counts = ratings.aggregate(
        total=Count("pk"), helpful=Count("pk", filter=Q(helpful=True)),
        pending=Count("pk", filter=Q(decision=DoctorFeedback.Decision.PENDING)),
        accepted=Count("pk", filter=Q(decision=DoctorFeedback.Decision.ACCEPTED)),
    )
    per_answer: dict[int, list[int]] = defaultdict(list)
    for answer_id, overall in AnswerRating.objects.filter(
            answer__model_version=version, answer__item__evaluation__isnull=True,
            assignment__status=ReviewAssignment.Status.SUBMITTED, overall__isnull=False).values_list("answer", "overall"):
        per_answer[answer_id].append(overall)
    return VersionFeedback(
        version=version.name, doctor_ratings=counts["total"], doctor_helpful=counts["helpful"],
        corrections_pending=counts["pending"], corrections_accepted=counts["accepted"],
        ad_hoc_overall=statistics.mean_ci([sum(v) / len(v) for v in per_answer.values()]),
    )


def evaluation_report(*, user, evaluation: ClinicalEvaluation) -> Report:
    """Means with 95 % bootstrap intervals per version and dimension, the paired difference and win/tie/loss for two
    versions, and Krippendorff's ordinal alpha per dimension, from the submitted reviews so far."""
    if not user.has_perm("evaluation.view_report"):
        raise PermissionDenied
    language = get_language() or "en"
    versions = evaluation.versions
    dimensions = list(evaluation.rubric.dimensions.all())
    ratings = list(_submitted_ratings(evaluation))
    # scores[key][answer id][reviewer id] = score
    scores: dict[str, dict[int, dict[int, int]]] = defaultdict(lambda: defaultdict(dict))
    answer_item, answer_version = {}, {}
    for rating in ratings:
        answer_item[rating.answer_id] = rating.answer.item_id
        answer_version[rating.answer_id] = rating.answer.model_version_id
        for key, value in [*rating.scores.items(), (OVERALL, rating.overall)]:
            if value is not None:
                scores[key][rating.answer_id][rating.assignment.reviewer_id] = value
    rows = []
    keys = [(d.key, d.name(language)) for d in dimensions] + [(OVERALL, _("Overall"))]
    for key, name in keys:
        per_version: dict[int, dict[int, float]] = defaultdict(dict)  # version -> item -> mean over reviewers
        for answer_id, by_reviewer in scores[key].items():
            per_version[answer_version[answer_id]][answer_item[answer_id]] = sum(by_reviewer.values()) / len(by_reviewer)
        estimates = [statistics.mean_ci(list(per_version[v.pk].values())) for v in versions]
        difference = None
        if len(versions) == 2:
            both = sorted(set(per_version[versions[0].pk]) & set(per_version[versions[1].pk]))
            difference = statistics.paired_difference(
                [per_version[versions[0].pk][i] for i in both], [per_version[versions[1].pk][i] for i in both])
        rows.append(DimensionRow(key=key, name=name, estimates=estimates, difference=difference,
                                 agreement=statistics.ordinal_alpha(scores[key])))
    preferences = None
    if len(versions) == 2:
        first, second = [], []
        for assignment in ReviewAssignment.objects.filter(item__evaluation=evaluation,
                                                          status=ReviewAssignment.Status.SUBMITTED).exclude(preference=""):
            winner = _preferred_version(assignment, versions)
            first.append(1 if winner == versions[0].pk else 0)
            second.append(1 if winner == versions[1].pk else 0)
        preferences = statistics.win_tie_loss(first, second)
    names = [v.name for v in versions]
    chart = statistics.bar_chart(list(zip(names, zip(*[r.estimates for r in rows], strict=True), strict=True)),
                                 groups=[r.name for r in rows])
    return Report(evaluation=evaluation, progress=evaluation_progress(evaluation), versions=names, rows=rows,
                  preferences=preferences, chart=chart, outside=[version_feedback(v) for v in versions])


def _submitted_ratings(evaluation: ClinicalEvaluation):
    return AnswerRating.objects.filter(
        assignment__item__evaluation=evaluation, assignment__status=ReviewAssignment.Status.SUBMITTED
    ).select_related("answer", "assignment")


def _preferred_version(assignment: ReviewAssignment, versions) -> int | None:
    """The version the reviewer preferred (None for a tie), undoing this assignment's A/B order."""
    if assignment.preference == ReviewAssignment.Preference.TIE:
        return None
    order = [versions[0].pk, versions[1].pk]
    if assignment.swapped:
        order.reverse()
    return order[0] if assignment.preference == ReviewAssignment.Preference.LEFT else order[1]


def evaluation_csv(*, user, evaluation: ClinicalEvaluation) -> str:
    """One row per submitted rating (reviewer × answer), every cell neutralised against spreadsheet formulas."""
    if not user.has_perm("evaluation.view_report"):
        raise PermissionDenied
    keys = list(evaluation.rubric.dimensions.values_list("key", flat=True))
    versions = evaluation.versions
    names = {v.pk: v.name for v in versions}
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["evaluation", "item", "language", "model_version", "reviewer", "submitted_at", *keys, OVERALL,
                     "preferred_version", "model_diagnosis", "recorded_diagnosis", "corrected_diagnosis",
                     "corrected_treatment", "comment", "accept_for_training"])
    ratings = _submitted_ratings(evaluation).select_related("answer__item", "assignment__reviewer").order_by(
        "answer__item_id", "assignment_id", "answer_id")
    for rating in ratings:
        assignment, answer = rating.assignment, rating.answer
        preferred = ""
        if len(versions) == 2 and assignment.preference:
            winner = _preferred_version(assignment, versions)
            preferred = names[winner] if winner else "tie"
        row = [evaluation.pk, answer.item_id, answer.item.language, names.get(answer.model_version_id, ""),
               assignment.reviewer.get_username(), assignment.submitted_at.isoformat() if assignment.submitted_at else "",
               *[rating.scores.get(key, "") for key in keys], rating.overall, preferred, answer.diagnosis,
               answer.item.reference_diagnosis, assignment.corrected_diagnosis, assignment.corrected_treatment,
               assignment.comment, "yes" if assignment.accept_for_training else "no"]
        writer.writerow([statistics.csv_cell(cell) for cell in row])
    return out.getvalue()


# --- Automatic evaluation runs ---------------------------------------------------------------------------------------

# Lazy: translated when a page shows them, in that request's language (not the one active when this was imported).
RUN_METRICS = (("accuracy", gettext_lazy("Accuracy (written diagnosis)")), ("gtpa@1", "GTPA@1"), ("gtpa@3", "GTPA@3"),
               ("gtpa@5", "GTPA@5"), ("ddf1", "DDF1"), ("term_precision", gettext_lazy("Medical-term precision")))
CHART_METRICS = ("accuracy", "gtpa@1", "gtpa@3", "ddf1")
PREDICTIONS_PER_PAGE = 50


def _require_run_viewer(user) -> None:
    if not user.has_perm("evaluation.view_evaluationrun"):
        raise PermissionDenied


def evaluation_run_list(*, user) -> QuerySet[EvaluationRun]:
    _require_run_viewer(user)
    return EvaluationRun.objects.select_related("model_version", "case_set", "started_by")


def evaluation_run_get(*, user, pk) -> EvaluationRun:
    run = evaluation_run_list(user=user).filter(pk=pk).first()
    if run is None:
        raise Http404(_("No such evaluation run."))
    return run


def evaluation_runs_comparable(*, user, run: EvaluationRun) -> QuerySet[EvaluationRun]:
    """Other finished runs on the same case set: a paired comparison needs the same cases."""
    return evaluation_run_list(user=user).filter(case_set=run.case_set, status=EvaluationRun.Status.SUCCEEDED).exclude(
        pk=run.pk)


def _estimate(block: dict | None) -> statistics.Estimate | None:
    if not block:
        return None
    return statistics.Estimate(100 * block["value"], 100 * block["low"], 100 * block["high"], block["n"])


@dataclass
class RunReport:
    rows: list[dict]  # per metric: name, model block, baseline block, difference
    groups: list[dict]  # by language and by department: name, n, model and baseline accuracy / GTPA@1
    chart: dict | None
    comparison: dict | None  # against another run on the same cases
    comparison_rows: list[dict]  # its paired-bootstrap rows: key, name, value
    other: EvaluationRun | None
    beats_baseline: bool | None  # GTPA@1 (or accuracy without a ranking) above the baseline's


def evaluation_run_report(*, user, run: EvaluationRun, compare_with: EvaluationRun | None = None) -> RunReport:
    _require_run_viewer(user)
    model, base = run.metrics.get("overall", {}), run.baseline.get("overall", {})
    difference = run.baseline.get("comparison", {})
    rows = [{"key": key, "name": name, "model": model.get(key), "baseline": base.get(key), "difference": difference.get(key)}
            for key, name in RUN_METRICS]
    rows += [{"key": key, "name": name, "model": model.get(key), "baseline": base.get(key), "difference": None, "plain": True}
             for key, name in (("f1_weighted", _("F1, weighted")), ("f1_macro", _("F1, macro")))]
    groups = []
    for kind, label in (("by_language", _("Language")), ("by_department", _("Department"))):
        for name, block in run.metrics.get(kind, {}).items():
            other = run.baseline.get(kind, {}).get(name, {})
            groups.append({"kind": label, "name": name, "n": block["n"], "accuracy": block.get("accuracy"),
                           "gtpa1": block.get("gtpa@1"), "baseline_gtpa1": other.get("gtpa@1")})
    chart = None
    comparison = None
    series = []
    if run.metrics:
        series = [(run.model_version.name, [_estimate(model.get(k)) for k in CHART_METRICS]),
                  (_("baseline (TF-IDF + LR)"), [_estimate(base.get(k)) for k in CHART_METRICS])]
    if compare_with is not None and compare_with.case_set_id == run.case_set_id and compare_with.metrics:
        other_overall = compare_with.metrics.get("overall", {})
        series.append((compare_with.model_version.name, [_estimate(other_overall.get(k)) for k in CHART_METRICS]))
        comparison = metrics.compare(_case_predictions(compare_with), _case_predictions(run))
    if series:
        chart = statistics.bar_chart(series, groups=[name for key, name in RUN_METRICS if key in CHART_METRICS],
                                     lo=0, hi=100, tick_step=20)
    key = "gtpa@1" if model.get("gtpa@1") else "accuracy"
    beats = None
    if model.get(key) and base.get(key):
        beats = model[key]["value"] > base[key]["value"]
    comparison_rows = [{"key": key, "name": name, "value": comparison[key]} for key, name in RUN_METRICS
                       if comparison and key != "accuracy" and comparison.get(key)]
    return RunReport(rows=rows, groups=groups, chart=chart, comparison=comparison, comparison_rows=comparison_rows,
                     other=compare_with, beats_baseline=beats)


def _case_predictions(run: EvaluationRun) -> list:
    return [metrics.CasePrediction.from_dict(p) for p in run.predictions.values_list("prediction", flat=True)]


def evaluation_run_predictions(*, user, run: EvaluationRun, correct: bool | None = None) -> QuerySet[EvaluationPrediction]:
    """The run's per-case predictions (de-identified case texts), optionally only the right or the wrong ones."""
    _require_run_viewer(user)
    if not user.has_perm("evaluation.view_evaluationprediction"):
        raise PermissionDenied
    predictions = run.predictions.select_related("case")
    return predictions if correct is None else predictions.filter(correct=correct)


# --- The version page ------------------------------------------------------------------------------------------------


def version_runs(*, user, version) -> QuerySet[EvaluationRun]:
    return evaluation_run_list(user=user).filter(model_version=version)


def _latest_by_case_set(runs) -> dict:
    latest = {}
    for run in runs.filter(status=EvaluationRun.Status.SUCCEEDED).order_by("-finished_at", "-pk"):
        latest.setdefault(run.case_set_id, run)
    return latest


def version_comparison(*, user, version, other) -> list[dict]:
    """The two versions on every case set both were evaluated on (each one's latest finished run): accuracy and GTPA@1
    with intervals, and the paired difference (version − other) with McNemar's test on the cases both predicted."""
    if other is None:
        return []
    mine = _latest_by_case_set(version_runs(user=user, version=version))
    theirs = _latest_by_case_set(version_runs(user=user, version=other))
    rows = []
    for case_set_id, run in mine.items():
        if case_set_id not in theirs:
            continue
        before = theirs[case_set_id]
        paired = metrics.compare(_case_predictions(before), _case_predictions(run), lexicon=[])
        gtpa1 = paired.get("gtpa@1") or {}
        # Both sides on the cases both runs predicted (runs may have been limited to different numbers of cases).
        rows.append({
            "case_set": run.case_set, "run": run, "other_run": before, "n": paired["n"],
            "accuracy": paired["accuracy"]["b"], "other_accuracy": paired["accuracy"]["a"],
            "gtpa1": gtpa1.get("b"), "other_gtpa1": gtpa1.get("a"),
            "accuracy_difference": paired["accuracy"], "gtpa1_difference": paired.get("gtpa@1"),
        })
    return rows


def version_gates(*, user, version) -> QuerySet[ContinualRun]:
    """The retrainings that produced this version as their candidate, with their gate results."""
    if not user.has_perm("evaluation.view_continualrun"):
        return ContinualRun.objects.none()
    return ContinualRun.objects.filter(candidate=version).select_related("base_version", "gate_case_set")


def continual_run_list(*, user) -> QuerySet[ContinualRun]:
    if not user.has_perm("evaluation.view_continualrun"):
        raise PermissionDenied
    return ContinualRun.objects.select_related("base_version", "candidate", "training_run", "gate_case_set",
                                               "replay_case_set", "started_by")


def continual_run_get(*, user, pk) -> ContinualRun:
    continual = continual_run_list(user=user).filter(pk=pk).first()
    if continual is None:
        raise Http404(_("No such retraining."))
    return continual

"""Physician review of model answers: rubrics, review items and assignments, clinical evaluations, feedback examples.

A review item is one de-identified case with one answer (ad hoc review, or an evaluation of one version) or two
answers (an A/B evaluation). Each item is assigned to several reviewers; an assignment carries the reviewer's work
(a rating per answer, a preference when there are two, corrections) from draft to submitted.
"""

from auditlog.registry import auditlog
from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

SCORES = (1, 2, 3, 4, 5)
score_validators = [MinValueValidator(1), MaxValueValidator(5)]


class Rubric(models.Model):
    """A scoring rubric: named dimensions on a 1–5 scale. Versioned: one with reviews is never edited in place."""

    name = models.CharField(_("name"), max_length=100)
    version = models.PositiveIntegerField(_("version"), default=1)
    description = models.TextField(_("description"), blank=True)
    # The newest version of its name; new evaluations and ad hoc reviews use it.
    is_current = models.BooleanField(_("current"), default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        ordering = ["name", "-version"]
        verbose_name = _("rubric")
        verbose_name_plural = _("rubrics")
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="evaluation_rubric_unique_version"),
            models.UniqueConstraint(fields=["name"], condition=Q(is_current=True), name="evaluation_rubric_one_current"),
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"

    @property
    def is_locked(self) -> bool:
        """Reviews were written against it: changes make a new version."""
        return self.assignments.exists()


class RubricDimension(models.Model):
    """One dimension of a rubric with a short anchor text for each score, in Chinese and English."""

    rubric = models.ForeignKey(Rubric, on_delete=models.CASCADE, related_name="dimensions")
    position = models.PositiveSmallIntegerField(_("position"), default=0)
    key = models.SlugField(_("key"), max_length=50, help_text=_("A stable identifier, e.g. diagnostic_accuracy."))
    name_zh = models.CharField(_("name (Chinese)"), max_length=100)
    name_en = models.CharField(_("name (English)"), max_length=100)
    anchor_1_zh = models.CharField(_("1 (Chinese)"), max_length=200)
    anchor_1_en = models.CharField(_("1 (English)"), max_length=200)
    anchor_2_zh = models.CharField(_("2 (Chinese)"), max_length=200)
    anchor_2_en = models.CharField(_("2 (English)"), max_length=200)
    anchor_3_zh = models.CharField(_("3 (Chinese)"), max_length=200)
    anchor_3_en = models.CharField(_("3 (English)"), max_length=200)
    anchor_4_zh = models.CharField(_("4 (Chinese)"), max_length=200)
    anchor_4_en = models.CharField(_("4 (English)"), max_length=200)
    anchor_5_zh = models.CharField(_("5 (Chinese)"), max_length=200)
    anchor_5_en = models.CharField(_("5 (English)"), max_length=200)

    class Meta:
        ordering = ["rubric", "position", "id"]
        verbose_name = _("rubric dimension")
        verbose_name_plural = _("rubric dimensions")
        constraints = [models.UniqueConstraint(fields=["rubric", "key"], name="evaluation_dimension_unique_key")]

    def __str__(self) -> str:
        return self.name_en

    def name(self, language: str) -> str:
        return self.name_zh if language.startswith("zh") else self.name_en

    def anchors(self, language: str) -> list[tuple[int, str]]:
        suffix = "zh" if language.startswith("zh") else "en"
        return [(score, getattr(self, f"anchor_{score}_{suffix}")) for score in SCORES]


class ClinicalEvaluation(models.Model):
    """A batch: sampled cases, answers by one or two model versions, blinded reviews, a report."""

    class Source(models.TextChoices):
        CASE_SET = "case_set", _("An imported case set")
        RECENT = "recent", _("Recent doctors' cases")

    class Status(models.TextChoices):
        GENERATING = "generating", _("Generating answers")
        REVIEWING = "reviewing", _("In review")
        COMPLETE = "complete", _("Complete")
        FAILED = "failed", _("Failed")

    name = models.CharField(_("name"), max_length=200)
    source = models.CharField(_("cases from"), max_length=16, choices=Source.choices, default=Source.CASE_SET)
    case_set = models.ForeignKey("cases.CaseSet", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                                 verbose_name=_("case set"))
    recent_days = models.PositiveIntegerField(_("recent days"), default=30)
    sample_size = models.PositiveIntegerField(_("cases"))
    version_a = models.ForeignKey("modeling.ModelVersion", on_delete=models.PROTECT, related_name="+",
                                  verbose_name=_("model version"))
    version_b = models.ForeignKey("modeling.ModelVersion", null=True, blank=True, on_delete=models.PROTECT,
                                  related_name="+", verbose_name=_("second model version"))
    reviewers_per_answer = models.PositiveSmallIntegerField(_("reviewers per answer"), default=2)
    rubric = models.ForeignKey(Rubric, on_delete=models.PROTECT, related_name="evaluations", verbose_name=_("rubric"))
    due_date = models.DateField(_("due date"))
    # Sampling and the A/B order derive from it, so a batch can be explained afterwards.
    seed = models.PositiveIntegerField(default=0)
    max_new_tokens = models.PositiveIntegerField(_("maximum new tokens"), default=256)
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.GENERATING)
    error = models.TextField(_("error"), blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+",
                                   verbose_name=_("created by"))
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    assigned_at = models.DateTimeField(_("assigned"), null=True, blank=True)
    # When answers were last asked for (creation or a retry): the clock a stalled generation is measured against.
    generation_started_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("clinical evaluation")
        verbose_name_plural = _("clinical evaluations")
        permissions = [("view_report", "Can see unblinded evaluation reports and export them")]

    def __str__(self) -> str:
        return self.name

    @property
    def versions(self) -> list:
        return [version for version in (self.version_a, self.version_b) if version is not None]

    @property
    def is_ab(self) -> bool:
        return self.version_b_id is not None


class ReviewItem(models.Model):
    """One de-identified case and the answer(s) to review."""

    evaluation = models.ForeignKey(ClinicalEvaluation, null=True, blank=True, on_delete=models.CASCADE,
                                   related_name="items")
    # Where the case came from: a doctor's case (its author never reviews it) or an imported labelled case.
    case = models.ForeignKey("cases.Case", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    labelled_case = models.ForeignKey("cases.LabelledCase", null=True, blank=True, on_delete=models.SET_NULL,
                                      related_name="+")
    language = models.CharField(_("language"), max_length=2)
    # De-identified text only, as the model read it.
    case_text = models.TextField(_("case text"))
    # The case set's recorded diagnosis, for the unblinded report; reviewers judge without it.
    reference_diagnosis = models.TextField(_("recorded diagnosis"), blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        verbose_name = _("review item")
        verbose_name_plural = _("review items")

    def __str__(self) -> str:
        return f"Review item #{self.pk}"


class ItemAnswer(models.Model):
    """A model version's answer to a review item: copied from a doctor's analysis, or generated for an evaluation."""

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        DONE = "done", _("Done")
        FAILED = "failed", _("Failed")

    item = models.ForeignKey(ReviewItem, on_delete=models.CASCADE, related_name="answers")
    model_version = models.ForeignKey("modeling.ModelVersion", on_delete=models.PROTECT, related_name="+")
    analysis = models.ForeignKey("cases.Analysis", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.QUEUED, db_index=True)
    diagnosis = models.TextField(_("diagnosis"), blank=True)
    differential = models.JSONField(_("differential"), default=list, blank=True)
    treatment = models.TextField(_("treatment"), blank=True)
    prognosis = models.TextField(_("prognosis"), blank=True)
    rationale = models.TextField(_("rationale"), blank=True)
    raw_output = models.TextField(blank=True)
    error = models.TextField(blank=True)
    # Taken by a worker's batch; another worker leaves it alone unless the claim went stale (its worker died).
    claimed_at = models.DateTimeField(null=True, blank=True)
    generated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["item", "id"]
        constraints = [
            models.UniqueConstraint(fields=["item", "model_version"], name="evaluation_one_answer_per_version"),
        ]

    def __str__(self) -> str:
        return f"Answer #{self.pk} to item #{self.item_id}"


class ReviewAssignment(models.Model):
    """One reviewer's blinded review of one item: assigned → in progress (a draft) → submitted."""

    class Status(models.TextChoices):
        ASSIGNED = "assigned", _("Assigned")
        IN_PROGRESS = "in_progress", _("In progress")
        SUBMITTED = "submitted", _("Done")

    class Preference(models.TextChoices):
        LEFT = "A", _("Answer A is better")
        TIE = "tie", _("About the same")
        RIGHT = "B", _("Answer B is better")

    item = models.ForeignKey(ReviewItem, on_delete=models.CASCADE, related_name="assignments")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="review_assignments")
    rubric = models.ForeignKey(Rubric, on_delete=models.PROTECT, related_name="assignments")
    # A/B: the second answer is shown as "A" (left) for this reviewer; drawn at random per assignment.
    swapped = models.BooleanField(default=False)
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.ASSIGNED, db_index=True)
    due_date = models.DateField(_("due date"), null=True, blank=True)
    assigned_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    assigned_at = models.DateTimeField(_("assigned"), auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    submitted_at = models.DateTimeField(_("submitted"), null=True, blank=True)
    # The reviewer's work beyond the per-answer ratings. Preference is in display terms (A = left for this reviewer).
    preference = models.CharField(_("which is better"), max_length=3, choices=Preference.choices, blank=True)
    # Free text is de-identified on save: a reviewer may type anything.
    corrected_diagnosis = models.CharField(_("corrected diagnosis"), max_length=300, blank=True)
    corrected_treatment = models.TextField(_("corrected treatment"), blank=True)
    comment = models.TextField(_("comment"), blank=True)
    accept_for_training = models.BooleanField(_("accept for training"), default=False)

    class Meta:
        ordering = ["due_date", "id"]
        verbose_name = _("review assignment")
        verbose_name_plural = _("review assignments")
        permissions = [("review_answers", "Can review model answers assigned to them")]
        constraints = [models.UniqueConstraint(fields=["item", "reviewer"], name="evaluation_one_assignment_per_reviewer")]

    def __str__(self) -> str:
        return f"Review #{self.pk}"

    @property
    def is_submitted(self) -> bool:
        return self.status == self.Status.SUBMITTED


class AnswerRating(models.Model):
    """A reviewer's scores for one answer: one 1–5 score per rubric dimension and an overall score."""

    assignment = models.ForeignKey(ReviewAssignment, on_delete=models.CASCADE, related_name="ratings")
    answer = models.ForeignKey(ItemAnswer, on_delete=models.CASCADE, related_name="ratings")
    scores = models.JSONField(default=dict, blank=True)  # {dimension key: 1..5}
    overall = models.PositiveSmallIntegerField(null=True, blank=True, validators=score_validators)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["assignment", "answer"], name="evaluation_one_rating_per_answer")]

    def __str__(self) -> str:
        return f"Rating of answer #{self.answer_id} in review #{self.assignment_id}"


class FeedbackExample(models.Model):
    """An accepted correction: the de-identified case and the corrected answer, ready for continual learning."""

    class Source(models.TextChoices):
        REVIEW = "review", _("Reviewer's correction")
        DOCTOR = "doctor", _("Doctor's correction, accepted by a reviewer")

    source = models.CharField(_("source"), max_length=8, choices=Source.choices)
    language = models.CharField(_("language"), max_length=2)
    case_text = models.TextField(_("case text"))
    diagnosis = models.TextField(_("diagnosis"))
    treatment = models.TextField(_("treatment"), blank=True)
    # Provenance: who accepted it, for which answer of which version, under which rubric version.
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+",
                                 verbose_name=_("reviewer"))
    assignment = models.OneToOneField(ReviewAssignment, null=True, blank=True, on_delete=models.SET_NULL,
                                      related_name="feedback_example")
    doctor_feedback = models.OneToOneField("cases.DoctorFeedback", null=True, blank=True, on_delete=models.SET_NULL,
                                           related_name="feedback_example")
    analysis = models.ForeignKey("cases.Analysis", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                 verbose_name=_("analysis"))
    model_version = models.ForeignKey("modeling.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL,
                                      related_name="+", verbose_name=_("model version"))
    rubric = models.ForeignKey(Rubric, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                               verbose_name=_("rubric"))
    created_at = models.DateTimeField(_("accepted"), auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("feedback example")
        verbose_name_plural = _("feedback examples")

    def __str__(self) -> str:
        return f"Feedback example #{self.pk}"


class EvaluationRun(models.Model):
    """Automatic evaluation: one model version on one labelled case set, beside the TF-IDF baseline.

    Answers are generated on the evaluation queue in batches (each case's prediction saved as it comes, so a run
    that stops resumes where it was); the metrics of the version and of the baseline, on the same cases, are stored
    when the last batch is in.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        RUNNING = "running", _("Running")
        SUCCEEDED = "succeeded", _("Succeeded")
        FAILED = "failed", _("Failed")

    class Purpose(models.TextChoices):
        MANUAL = "manual", _("Started by an ML admin")
        GATE = "gate", _("Promotion gate")
        REPLAY = "replay", _("Forgetting check (replay set)")

    model_version = models.ForeignKey("modeling.ModelVersion", on_delete=models.PROTECT, related_name="evaluation_runs",
                                      verbose_name=_("model version"))
    case_set = models.ForeignKey("cases.CaseSet", on_delete=models.PROTECT, related_name="+", verbose_name=_("case set"))
    # The cases the baseline learns from: the version's training cases when known; without them the baseline is
    # cross-fitted on the evaluated set (each case predicted by a classifier that never saw its patient).
    baseline_case_set = models.ForeignKey("cases.CaseSet", null=True, blank=True, on_delete=models.SET_NULL,
                                          related_name="+", verbose_name=_("baseline trained on"))
    purpose = models.CharField(_("purpose"), max_length=16, choices=Purpose.choices, default=Purpose.MANUAL)
    training_run = models.ForeignKey("modeling.TrainingRun", null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+", verbose_name=_("training run"))
    limit = models.PositiveIntegerField(_("at most this many cases"), null=True, blank=True)
    max_new_tokens = models.PositiveIntegerField(_("maximum new tokens"), default=96)
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.QUEUED)
    total = models.PositiveIntegerField(_("cases"), default=0)
    done = models.PositiveIntegerField(_("cases done"), default=0)
    metrics = models.JSONField(_("metrics"), default=dict, blank=True)
    baseline = models.JSONField(_("baseline metrics"), default=dict, blank=True)
    errors = models.JSONField(_("frequent errors"), default=list, blank=True)
    error = models.TextField(_("error"), blank=True)
    seed = models.PositiveIntegerField(default=0)
    started_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+", verbose_name=_("started by"))
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    started_at = models.DateTimeField(_("started"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("evaluation run")
        verbose_name_plural = _("evaluation runs")

    def __str__(self) -> str:
        return _("%(version)s on %(case_set)s (#%(id)s)") % {
            "version": self.model_version, "case_set": self.case_set, "id": self.pk,
        }

    @property
    def progress(self) -> int:
        if self.status == self.Status.SUCCEEDED:
            return 100
        return min(100, int(100 * self.done / self.total)) if self.total else 0

    @property
    def is_active(self) -> bool:
        return self.status in (self.Status.QUEUED, self.Status.RUNNING)

    def headline(self, metric: str = "accuracy") -> float | None:
        block = (self.metrics.get("overall") or {}).get(metric)
        return block["value"] if block else None

    @property
    def gtpa1(self) -> float | None:
        return self.headline("gtpa@1")

    @property
    def baseline_gtpa1(self) -> float | None:
        block = (self.baseline.get("overall") or {}).get("gtpa@1")
        return block["value"] if block else None


class EvaluationPrediction(models.Model):
    """One case of an evaluation run: the version's prediction and the baseline's, as metrics.CasePrediction dicts."""

    run = models.ForeignKey(EvaluationRun, on_delete=models.CASCADE, related_name="predictions")
    case = models.ForeignKey("cases.LabelledCase", on_delete=models.CASCADE, related_name="+", verbose_name=_("case"))
    prediction = models.JSONField(default=dict)
    correct = models.BooleanField(_("correct"), default=False)
    baseline = models.JSONField(default=dict, blank=True)
    baseline_correct = models.BooleanField(_("baseline correct"), null=True, blank=True)

    class Meta:
        ordering = ["case_id"]
        constraints = [models.UniqueConstraint(fields=["run", "case"], name="evaluation_prediction_once_per_case")]

    def __str__(self) -> str:
        return f"{self.run_id}/{self.case_id}"

    @property
    def diagnosis(self) -> str:
        return self.prediction.get("diagnosis", "")

    @property
    def top(self) -> list:
        return self.prediction.get("ranked", [])[:5]


class ContinualRun(models.Model):
    """"Retrain from feedback": accepted feedback plus a replay sample of earlier training data → a training run that
    continues the active version → its candidate evaluated against the active version on a frozen gate set and on the
    replay set → passed or failed gate → promoted by an ML admin (or automatically when a setting says so)."""

    class Status(models.TextChoices):
        TRAINING = "training", _("Training")
        EVALUATING = "evaluating", _("Evaluating the candidate")
        PASSED = "passed", _("Passed the gate")
        FAILED_GATE = "failed_gate", _("Failed the gate")
        FAILED = "failed", _("Failed")
        PROMOTED = "promoted", _("Promoted")

    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.TRAINING)
    base_version = models.ForeignKey("modeling.ModelVersion", on_delete=models.PROTECT, related_name="+",
                                     verbose_name=_("active version trained on"))
    training_run = models.OneToOneField("modeling.TrainingRun", null=True, blank=True, on_delete=models.SET_NULL,
                                        related_name="continual_run", verbose_name=_("training run"))
    candidate = models.ForeignKey("modeling.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL,
                                  related_name="gates", verbose_name=_("candidate"))
    gate_case_set = models.ForeignKey("cases.CaseSet", on_delete=models.PROTECT, related_name="+",
                                      verbose_name=_("gate set"))
    replay_case_set = models.ForeignKey("cases.CaseSet", null=True, blank=True, on_delete=models.SET_NULL,
                                        related_name="+", verbose_name=_("replay set"))
    feedback_count = models.PositiveIntegerField(_("feedback examples"), default=0)
    replay_count = models.PositiveIntegerField(_("replay examples"), default=0)
    # The newest accepted feedback example used: the next run takes those accepted after it.
    feedback_until = models.DateTimeField(_("feedback accepted until"), null=True, blank=True)
    feedback_ids = models.JSONField(default=list, blank=True)
    margin = models.FloatField(_("gate margin"))
    forgetting_bound = models.FloatField(_("forgetting bound"))
    gate_metric = models.CharField(_("gate metric"), max_length=16, default="accuracy")
    auto_promote = models.BooleanField(_("promote automatically"), default=False)
    candidate_gate_run = models.ForeignKey(EvaluationRun, null=True, blank=True, on_delete=models.SET_NULL,
                                           related_name="+")
    active_gate_run = models.ForeignKey(EvaluationRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    candidate_replay_run = models.ForeignKey(EvaluationRun, null=True, blank=True, on_delete=models.SET_NULL,
                                             related_name="+")
    active_replay_run = models.ForeignKey(EvaluationRun, null=True, blank=True, on_delete=models.SET_NULL,
                                          related_name="+")
    gate = models.JSONField(_("gate result"), default=dict, blank=True)
    error = models.TextField(_("error"), blank=True)
    started_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+", verbose_name=_("started by"))
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("retraining from feedback")
        verbose_name_plural = _("retraining from feedback")

    def __str__(self) -> str:
        return _("Retraining from feedback #%(id)s") % {"id": self.pk}

    @property
    def is_active(self) -> bool:
        return self.status in (self.Status.TRAINING, self.Status.EVALUATING)

    @property
    def gate_rows(self) -> list[tuple]:
        """(evaluation run, its value of the gate metric or None) for the run's page."""
        return [(run, run.headline(self.gate_metric)) for run in self.evaluation_runs]

    @property
    def evaluation_runs(self) -> list:
        return [run for run in (self.candidate_gate_run, self.active_gate_run, self.candidate_replay_run,
                                self.active_replay_run) if run is not None]


auditlog.register(Rubric)
auditlog.register(ClinicalEvaluation)
auditlog.register(ReviewAssignment, include_fields=["status", "reviewer", "item", "due_date", "submitted_at"])
auditlog.register(FeedbackExample, include_fields=["source", "reviewer", "assignment", "doctor_feedback", "model_version"])
auditlog.register(EvaluationRun, include_fields=["model_version", "case_set", "purpose", "status", "started_by"])
auditlog.register(ContinualRun, include_fields=["status", "candidate", "training_run", "started_by"])

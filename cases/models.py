"""Patient cases (de-identified text, encrypted originals) and explicit access entries."""

from auditlog.registry import auditlog
from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from modeling.prompts import DISCLAIMER
from modeling.red_flags import find_red_flags

# The structured sections of a case, in the order a clinician reads them.
CASE_SECTIONS = (
    ("chief_complaint", _("Chief complaint (主诉)")),
    ("present_illness", _("Present illness (现病史)")),
    ("past_history", _("Past history (既往史)")),
    ("physical_exam", _("Physical exam (体格检查)")),
    ("tests_imaging", _("Tests and imaging (辅助检查)")),
    ("free_text", _("Pasted record")),
)
TEXT_FIELDS = tuple(name for name, _label in CASE_SECTIONS)
_MODEL_LABELS_ZH = {
    "sex": "性别：", "age": "年龄：", "chief_complaint": "主诉：", "present_illness": "现病史：",
    "past_history": "既往史：", "physical_exam": "体格检查：", "tests_imaging": "辅助检查：", "free_text": "",
}
_MODEL_LABELS_EN = {
    "sex": "Sex: ", "age": "Age: ", "chief_complaint": "Chief complaint: ", "present_illness": "Present illness: ",
    "past_history": "Past history: ", "physical_exam": "Physical exam: ", "tests_imaging": "Tests: ", "free_text": "",
}
# Ages over 89 are identifying (HIPAA Safe Harbor): they are stored as this value.
AGE_CAP = 90


class Department(models.TextChoices):
    INTERNAL = "internal", _("Internal medicine")
    CARDIOLOGY = "cardiology", _("Cardiology")
    RESPIRATORY = "respiratory", _("Respiratory medicine")
    GASTRO = "gastroenterology", _("Gastroenterology")
    NEUROLOGY = "neurology", _("Neurology")
    ENDOCRINE = "endocrinology", _("Endocrinology")
    NEPHROLOGY = "nephrology", _("Nephrology")
    INFECTIOUS = "infectious", _("Infectious diseases")
    PAEDIATRICS = "paediatrics", _("Paediatrics")
    OBSTETRICS = "obstetrics", _("Obstetrics and gynaecology")
    SURGERY = "surgery", _("General surgery")
    ORTHOPAEDICS = "orthopaedics", _("Orthopaedics")
    DERMATOLOGY = "dermatology", _("Dermatology")
    ONCOLOGY = "oncology", _("Oncology")
    EMERGENCY = "emergency", _("Emergency medicine")
    OTHER = "other", _("Other")


class Case(models.Model):
    class Sex(models.TextChoices):
        FEMALE = "F", _("Female")
        MALE = "M", _("Male")
        UNKNOWN = "U", _("Unknown")

    class Language(models.TextChoices):
        ZH = "zh", "中文"
        EN = "en", "English"

    class Status(models.TextChoices):
        SUBMITTED = "submitted", _("Submitted")

    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="cases")
    language = models.CharField(_("language"), max_length=2, choices=Language.choices)
    sex = models.CharField(_("sex"), max_length=1, choices=Sex.choices, default=Sex.UNKNOWN)
    age = models.PositiveSmallIntegerField(_("age"), null=True, blank=True, help_text=_("Stored as 90 when over 89."))
    department = models.CharField(_("department"), max_length=32, choices=Department.choices, blank=True)
    # De-identified text only: PHI is replaced by typed placeholders such as [NAME_1].
    chief_complaint = models.TextField(_("chief complaint"), blank=True)
    present_illness = models.TextField(_("present illness"), blank=True)
    past_history = models.TextField(_("past history"), blank=True)
    physical_exam = models.TextField(_("physical exam"), blank=True)
    tests_imaging = models.TextField(_("tests and imaging"), blank=True)
    free_text = models.TextField(_("pasted record"), blank=True)
    # Fernet token (MultiFernet, newest key first) of the original values; see cases.crypto.
    phi_ciphertext = models.TextField(editable=False)
    phi_count = models.PositiveIntegerField(_("identifiers removed"), default=0)
    # Keyed (HMAC) pseudonym of the patient's ID or record number, to link cases of one patient.
    patient_pseudonym = models.CharField(max_length=32, blank=True, db_index=True, editable=False)
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.SUBMITTED)
    created_at = models.DateTimeField(_("submitted"), auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("case")
        verbose_name_plural = _("cases")
        permissions = [("reveal_phi", "Can reveal the original identifiers of own cases")]
        indexes = [models.Index(fields=["author", "-created_at"])]

    def __str__(self) -> str:
        return f"Case #{self.pk}"

    @property
    def sections(self) -> list[tuple[str, str]]:
        """(label, de-identified text) of the sections that have text."""
        return [(label, getattr(self, name)) for name, label in CASE_SECTIONS if getattr(self, name)]

    @property
    def model_text(self) -> str:
        """The de-identified case as the model reads it, labelled in the case's own language."""
        zh = self.language == self.Language.ZH
        labels = _MODEL_LABELS_ZH if zh else _MODEL_LABELS_EN
        sex = {"F": "女" if zh else "female", "M": "男" if zh else "male"}.get(self.sex)
        header = []
        if sex:
            header.append(f"{labels['sex']}{sex}")
        if self.age is not None:
            header.append(f"{labels['age']}{self.age_display}{'岁' if zh else ''}")
        lines = ["  ".join(header)] if header else []
        lines += [f"{labels[name]}{getattr(self, name)}" for name in TEXT_FIELDS if getattr(self, name)]
        return "\n".join(lines)

    @property
    def red_flags(self):
        """Urgent findings the note itself shows (modeling.red_flags), whatever any model says."""
        return find_red_flags(self.model_text, self.language)

    @property
    def summary(self) -> str:
        text = self.chief_complaint or self.free_text
        return text if len(text) <= 80 else text[:79] + "…"

    @property
    def progress(self) -> tuple[str, str]:
        """(status, label) of the latest analysis when the list annotated it (selectors.case_list), else the case's."""
        latest = getattr(self, "latest_analysis_status", None)
        if latest:
            return latest, Analysis.Status(latest).label
        return self.status, self.get_status_display()

    @property
    def age_display(self) -> str:
        if self.age is None:
            return ""
        return "≥90" if self.age >= AGE_CAP else str(self.age)


class AccessEvent(models.Model):
    """An explicit read of case data: page views, API reads and PHI reveals, with the acting user."""

    class Action(models.TextChoices):
        CASE_LIST = "case_list", _("Listed cases")
        CASE_VIEW = "case_view", _("Viewed a case")
        PHI_REVEAL = "phi_reveal", _("Revealed original identifiers")
        API_CASE_LIST = "api_case_list", _("Listed cases (API)")
        API_CASE_READ = "api_case_read", _("Read a case (API)")
        DOCTOR_FEEDBACK = "doctor_feedback", _("Rated an analysis")
        REVIEW_ASSIGN = "review_assign", _("Assigned an answer for review")
        REVIEW_VIEW = "review_view", _("Opened a review")
        REVIEW_SUBMIT = "review_submit", _("Submitted a review")
        FEEDBACK_LIST = "feedback_list", _("Listed doctors' corrections")
        FEEDBACK_DECIDE = "feedback_decide", _("Decided on a doctor's correction")
        EVALUATION_REPORT_VIEW = "evaluation_report", _("Viewed an evaluation report")
        EVALUATION_EXPORT = "evaluation_export", _("Exported an evaluation report")

    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    # Kept as text so the trail survives the user's deletion.
    actor_username = models.CharField(max_length=150)
    action = models.CharField(max_length=32, choices=Action.choices)
    case_ids = models.JSONField(default=list, help_text="Ids of the cases read.")
    # What else the action was about, e.g. "review assignment 17" or "clinical evaluation 3" (never case text).
    target = models.CharField(max_length=200, blank=True)
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = _("access entry")
        verbose_name_plural = _("access entries")

    def __str__(self) -> str:
        what = self.target or self.case_ids
        return f"{self.actor_username} {self.action} {what} at {self.at:%Y-%m-%d %H:%M}"


class Analysis(models.Model):
    """One run of a model version on a case: queued → running → done | failed."""

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        RUNNING = "running", _("Running")
        DONE = "done", _("Done")
        FAILED = "failed", _("Failed")

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="analyses")
    model_version = models.ForeignKey("modeling.ModelVersion", on_delete=models.PROTECT, related_name="analyses")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    max_new_tokens = models.PositiveIntegerField(default=256)
    temperature = models.FloatField(default=0.0)
    top_p = models.FloatField(default=1.0)
    # The structured answer, parsed from raw_output; the disclaimer is added when shown, by code.
    diagnosis = models.TextField(_("diagnosis"), blank=True)
    differential = models.JSONField(_("differential"), default=list, blank=True,
                                    help_text="[{name, probability}] ranked by the model's likelihood")
    treatment = models.TextField(_("treatment"), blank=True)
    prognosis = models.TextField(_("prognosis"), blank=True)
    rationale = models.TextField(_("rationale"), blank=True)
    raw_output = models.TextField(blank=True)
    # Checks made around the model (modeling.answer_quality): per section "ok", "empty" or "degenerate"; whether the
    # written diagnosis and the ranking's first label disagree; whether the headline came from the ranking because
    # the written diagnosis was unusable. A disagreement marks the analysis for review.
    quality = models.JSONField(_("section quality"), default=dict, blank=True)
    ranking_disagrees = models.BooleanField(_("text and ranking disagree"), default=False)
    diagnosis_from_ranking = models.BooleanField(_("diagnosis from the ranking"), default=False)
    needs_review = models.BooleanField(_("needs review"), default=False, db_index=True)
    # The top-ranked diagnosis is less likely than the version's confidence threshold: the page asserts none.
    uncertain = models.BooleanField(_("uncertain"), default=False)
    # Labels left out of the ranking because they cannot fit the patient's sex or age: [{name, reason}].
    excluded = models.JSONField(_("excluded diagnoses"), default=list, blank=True)
    # Findings the rationale cites and what the note says of them: [{finding, status}], status supported |
    # contradicted (the note negates it) | unsupported (the note does not mention it).
    grounding = models.JSONField(_("rationale findings"), default=list, blank=True)
    error = models.TextField(_("error"), blank=True)
    queued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-queued_at", "-id"]
        verbose_name = _("analysis")
        verbose_name_plural = _("analyses")

    def __str__(self) -> str:
        return f"Analysis #{self.pk} of case #{self.case_id}"

    @property
    def disclaimer(self) -> str:
        return DISCLAIMER.get(self.case.language, DISCLAIMER["en"])

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.FAILED)

    @property
    def top_label(self) -> str:
        return self.differential[0]["name"] if self.differential else ""

    @property
    def leading(self) -> list[dict]:
        """The candidates an uncertain answer lists instead of asserting one."""
        return self.differential[:3]

    @property
    def ungrounded(self) -> list[dict]:
        """What the rationale cites that the note does not support."""
        return [claim for claim in self.grounding if claim.get("status") != "supported"]

    @property
    def seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class DoctorFeedback(models.Model):
    """The submitting doctor's own rating of an analysis of their case: helpful or not, and the diagnosis they hold.

    Kept apart from blinded reviews. A corrected diagnosis becomes training data only once a reviewer accepts it
    (evaluation.services.doctor_feedback_decide).
    """

    class Decision(models.TextChoices):
        NONE = "", _("No correction")
        PENDING = "pending", _("Awaiting a reviewer")
        ACCEPTED = "accepted", _("Accepted for training")
        REJECTED = "rejected", _("Not accepted")

    analysis = models.OneToOneField(Analysis, on_delete=models.CASCADE, related_name="doctor_feedback")
    doctor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    helpful = models.BooleanField(_("helpful"))
    # De-identified like the case text: a doctor may type anything here.
    correct_diagnosis = models.CharField(_("correct diagnosis"), max_length=300, blank=True)
    decision = models.CharField(_("decision"), max_length=16, choices=Decision.choices, blank=True, db_index=True)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]
        verbose_name = _("doctor feedback")
        verbose_name_plural = _("doctor feedback")

    def __str__(self) -> str:
        return f"Feedback on analysis #{self.analysis_id}"


# --- Imported case sets ----------------------------------------------------------------------
# Labelled cases imported from files (JSONL / CSV, see modeling.records) for training and evaluation.
# They are de-identified on the way in like a doctor's case; the originals of what was replaced are
# encrypted. A case set exports to the JSONL that training reads (cases.services.case_set_export).

# Case set names become export file names ("<name>.jsonl"), so they must be safe in a path.
case_set_name_validator = RegexValidator(
    r"^\w[\w.-]*\Z",
    _("Use letters, digits, '-', '_' or '.', starting with a letter or a digit."),
)


class CaseSet(models.Model):
    """A named set of imported labelled cases, e.g. "dxy-train"."""

    name = models.CharField(_("name"), max_length=100, unique=True, validators=[case_set_name_validator])
    description = models.TextField(_("description"), blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        verbose_name=_("created by"),
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("case set")
        verbose_name_plural = _("case sets")
        permissions = [
            ("import_caseset", "Can import labelled cases into a case set"),
            ("export_caseset", "Can export a case set's de-identified records for training"),
        ]

    def __str__(self) -> str:
        return self.name


class ImportRun(models.Model):
    """One import of one file into a case set: its provenance, counts and rejected lines."""

    case_set = models.ForeignKey(CaseSet, on_delete=models.CASCADE, related_name="import_runs", verbose_name=_("case set"))
    source_name = models.CharField(_("source file"), max_length=255)
    sha256 = models.CharField(_("file SHA-256"), max_length=64, help_text=_("Checksum of the imported file."))
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        verbose_name=_("started by"), help_text=_("Empty when run from the command line without --user."),
    )
    started_at = models.DateTimeField(_("started"), db_index=True)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)
    rows = models.PositiveIntegerField(_("rows"), default=0)
    imported = models.PositiveIntegerField(_("imported"), default=0)
    duplicates = models.PositiveIntegerField(_("duplicates"), default=0)
    rejected = models.PositiveIntegerField(_("rejected"), default=0)
    # [{"line": n, "reason": "..."}], in file order; reasons name what is wrong, never the row's content.
    errors = models.JSONField(_("rejected lines"), default=list, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        verbose_name = _("import run")
        verbose_name_plural = _("import runs")

    def __str__(self) -> str:
        return f"{self.source_name} ({timezone.localtime(self.started_at):%Y-%m-%d %H:%M})"


class LabelledCase(models.Model):
    """One de-identified, labelled case of a case set, with where it came from."""

    case_set = models.ForeignKey(CaseSet, on_delete=models.CASCADE, related_name="cases", verbose_name=_("case set"))
    import_run = models.ForeignKey(
        ImportRun, on_delete=models.CASCADE, related_name="cases", verbose_name=_("import run")
    )
    source_file = models.CharField(_("source file"), max_length=255)
    source_row = models.PositiveIntegerField(_("line"), help_text=_("Line of the row in the source file."))
    # The file's own case id (not a patient identifier: those are kept only as patient_pseudonym).
    external_id = models.CharField(_("case id"), max_length=200, blank=True)
    language = models.CharField(_("language"), max_length=2, choices=Case.Language.choices)
    # De-identified text only: PHI is replaced by typed placeholders such as [NAME_1].
    text = models.TextField(_("case text"))
    diagnosis = models.TextField(_("diagnosis"))
    treatment = models.TextField(_("treatment"), blank=True)
    prognosis = models.TextField(_("prognosis"), blank=True)
    rationale = models.TextField(_("rationale"), blank=True)
    differential = models.JSONField(_("differential"), default=list, blank=True, help_text="[name, ...]")
    # Fernet token of the originals that de-identification replaced; empty when nothing was.
    phi_ciphertext = models.TextField(blank=True, editable=False)
    phi_count = models.PositiveIntegerField(_("identifiers removed"), default=0)
    # Keyed (HMAC) pseudonym of the patient's ID or record number, to keep one patient's cases in one split.
    patient_pseudonym = models.CharField(max_length=32, blank=True, db_index=True, editable=False)
    # Keyed HMAC of the case id, or of the de-identified text and diagnosis: a re-import does not duplicate.
    dedupe_key = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(_("imported at"), auto_now_add=True)

    class Meta:
        ordering = ["id"]
        verbose_name = _("labelled case")
        verbose_name_plural = _("labelled cases")
        constraints = [
            models.UniqueConstraint(fields=["case_set", "dedupe_key"], name="cases_labelledcase_unique_in_set"),
        ]

    def __str__(self) -> str:
        return self.external_id or f"{self.case_set_id}-{self.pk}"


class CaseSetExport(models.Model):
    """The audit entry of one export of a case set's de-identified records (for training)."""

    # Kept when the set is deleted, like the actor's name when the user is: the trail outlives both.
    case_set = models.ForeignKey(
        CaseSet, null=True, on_delete=models.SET_NULL, related_name="exports", verbose_name=_("case set")
    )
    case_set_name = models.CharField(_("case set"), max_length=100)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    actor_username = models.CharField(_("user"), max_length=150, blank=True)
    records = models.PositiveIntegerField(_("records"))
    path = models.CharField(_("file"), max_length=500)
    at = models.DateTimeField(_("exported"), auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = _("case set export")
        verbose_name_plural = _("case set exports")

    def __str__(self) -> str:
        at = timezone.localtime(self.at)
        return f"{self.actor_username or '-'} exported {self.case_set_name} ({self.records}) at {at:%Y-%m-%d %H:%M}"


# Changes made one by one (the admin, a shell) are in the audit trail. The encrypted originals are
# masked and the clinical text left out: auditors read the trail and see no case text.
auditlog.register(DoctorFeedback, exclude_fields=["correct_diagnosis"])
auditlog.register(CaseSet)
auditlog.register(ImportRun)
auditlog.register(
    LabelledCase,
    mask_fields=["phi_ciphertext"],
    exclude_fields=["text", "diagnosis", "treatment", "prognosis", "rationale", "differential", "dedupe_key"],
)

"""Patient cases (de-identified text, encrypted originals) and explicit access entries."""

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from modeling.prompts import DISCLAIMER

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

    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    # Kept as text so the trail survives the user's deletion.
    actor_username = models.CharField(max_length=150)
    action = models.CharField(max_length=32, choices=Action.choices)
    case_ids = models.JSONField(default=list, help_text="Ids of the cases read.")
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = _("access entry")
        verbose_name_plural = _("access entries")

    def __str__(self) -> str:
        return f"{self.actor_username} {self.action} {self.case_ids} at {self.at:%Y-%m-%d %H:%M}"


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
    def seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None

"""Writes to case data. Every state change of a case goes through one function here."""

import contextlib
import hashlib
import hmac
import logging
import time
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from datetime import timedelta
from pathlib import Path

from auditlog.context import set_actor
from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from cases.crypto import decrypt_phi, encrypt_phi, rotate_token
from cases.deid import Deidentifier, detect_phi, pseudonym, valid_resident_id
from cases.models import (
    AGE_CAP,
    TEXT_FIELDS,
    AccessEvent,
    Analysis,
    Case,
    CaseSet,
    CaseSetExport,
    DoctorFeedback,
    ImportRun,
    LabelledCase,
)
from modeling import answer_quality
from modeling.calibration import Calibration, choose_threshold
from modeling.dataprep import split_of
from modeling.grounding import check_rationale
from modeling.models import ModelVersion
from modeling.patient_facts import PatientFacts, extract_facts, implausible
from modeling.prompts import build_prompt, diagnosis_prompt, parse_answer
from modeling.records import FileFormatError, Record, RowError, read_rows, record_from_row, write_records
from modeling.runtime import EngineConfig, GenerationParams, ModelLoadError, get_engine
from modeling.selectors import model_version_active
from modeling.services import model_version_calibrate

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaseInput:
    """What a doctor submits, before de-identification."""

    sex: str = Case.Sex.UNKNOWN
    age: int | None = None
    department: str = ""
    texts: dict[str, str] = field(default_factory=dict)  # keyed by cases.models.TEXT_FIELDS


def _detect_language(texts: list[str]) -> str:
    joined = "".join(texts)
    cjk = sum(1 for char in joined if "\u4e00" <= char <= "\u9fff")
    return Case.Language.ZH if cjk else Case.Language.EN


def case_create(*, author, data: CaseInput, remote_addr: str | None = None) -> Case:
    """De-identify a submitted case, encrypt its originals and save it."""
    if not author.has_perm("cases.add_case"):
        raise PermissionDenied(_("Only doctors can submit cases."))
    texts = {name: (data.texts.get(name) or "").strip() for name in TEXT_FIELDS}
    if not texts["chief_complaint"] and not texts["free_text"]:
        raise ValidationError(
            {"chief_complaint": _("Enter the chief complaint, or paste the whole record as free text.")}
        )
    language = _detect_language(list(texts.values()))
    deidentifier = Deidentifier()
    clean = {name: deidentifier.deidentify(text, language) for name, text in texts.items()}
    # What the form left unknown is read from the note ("男，23岁", "a 54-year-old man"); the doctor can correct it.
    stated = extract_facts("\n".join(text for text in texts.values() if text))
    sex = data.sex if data.sex in (Case.Sex.FEMALE, Case.Sex.MALE) else (stated.sex or Case.Sex.UNKNOWN)
    given_age = data.age if data.age is not None else (int(stated.age) if stated.age is not None else None)
    age = _capped_age(given_age)
    identifiers = deidentifier.identifiers()
    key = settings.MEDPORTAL_PSEUDONYM_KEY.encode()
    original = {"texts": {name: text for name, text in texts.items() if text}, "age": given_age}
    case = Case(
        author=author,
        language=language,
        sex=sex,
        age=age,
        department=data.department or "",
        phi_ciphertext=encrypt_phi({"original": original, "replacements": deidentifier.replacements}),
        phi_count=len(deidentifier.replacements) + (age != given_age),
        patient_pseudonym=pseudonym(key, *identifiers[0]) if identifiers else "",
        **clean,
    )
    with transaction.atomic(), set_actor(author, remote_addr=remote_addr):
        case.save()
    return case


def _capped_age(age: int | None) -> int | None:
    """Ages over 89 identify a patient (HIPAA Safe Harbor): they are stored as AGE_CAP."""
    return AGE_CAP if age is not None and age > AGE_CAP - 1 else age


def case_update_facts(*, user, case: Case, sex: str, age: int | None, remote_addr: str | None = None) -> Case:
    """The doctor corrects the patient's sex and age (read from the note, or left out); the next analysis uses them."""
    if case.author_id != user.pk:
        raise PermissionDenied(_("Only the doctor who submitted a case can change it."))
    if sex not in Case.Sex.values:
        raise ValidationError({"sex": _("Choose female, male or unknown.")})
    if age is not None and not 0 <= age <= 130:
        raise ValidationError({"age": _("Enter an age from 0 to 130.")})
    case.sex, case.age = sex, _capped_age(age)
    with transaction.atomic(), set_actor(user, remote_addr=remote_addr):
        case.save(update_fields=["sex", "age", "updated_at"])
    return case


def case_submit(*, author, data: CaseInput, remote_addr: str | None = None) -> tuple[Case, Analysis | None]:
    """Save a case and queue its analysis by the active model version, if there is one."""
    with transaction.atomic():
        case = case_create(author=author, data=data, remote_addr=remote_addr)
        version = model_version_active()
        analysis = analysis_request(case=case, user=author, version=version) if version else None
    return case, analysis


def access_record(
    *, user, action: str, cases: list[Case] = (), target: str = "", remote_addr: str | None = None
) -> AccessEvent:
    return AccessEvent.objects.create(
        actor=user,
        actor_username=user.get_username() if user else "",
        action=action,
        case_ids=[case.pk for case in cases],
        target=target[:200],
        remote_addr=remote_addr,
    )


def access_record_many(*, user, action: str, targets: list[str], remote_addr: str | None = None) -> None:
    """One access entry per target (e.g. per review assignment made), written together."""
    AccessEvent.objects.bulk_create([
        AccessEvent(actor=user, actor_username=user.get_username() if user else "", action=action, target=target[:200],
                    remote_addr=remote_addr)
        for target in targets
    ])


@dataclass(frozen=True)
class RevealedIdentifiers:
    replacements: list[tuple[str, str]]  # (placeholder, original), in order of appearance
    age: int | None


def case_reveal_phi(*, user, case: Case, remote_addr: str | None = None) -> RevealedIdentifiers:
    """Decrypt a case's original identifiers for its author, leaving an audit entry."""
    if case.author_id != user.pk or not user.has_perm("cases.reveal_phi"):
        raise PermissionDenied(_("Only the doctor who submitted a case can reveal its identifiers."))
    with transaction.atomic():
        access_record(user=user, action=AccessEvent.Action.PHI_REVEAL, cases=[case], remote_addr=remote_addr)
        payload = decrypt_phi(case.phi_ciphertext)
    return RevealedIdentifiers(
        replacements=list(payload["replacements"].items()), age=payload["original"].get("age")
    )


def cases_rotate_keys(*, batch_size: int = 500) -> int:
    """Re-encrypt every case's originals under the newest key. Returns how many were rotated."""
    rotated = 0
    pks = list(Case.objects.order_by("pk").values_list("pk", flat=True))
    for start in range(0, len(pks), batch_size):
        with transaction.atomic():
            batch = list(Case.objects.select_for_update().filter(pk__in=pks[start : start + batch_size]))
            for case in batch:
                case.phi_ciphertext = rotate_token(case.phi_ciphertext)
            # bulk_update skips auditlog: a rotation changes no value, only the key that hides it.
            Case.objects.bulk_update(batch, ["phi_ciphertext"])
            rotated += len(batch)
    return rotated


# --- Analyses -------------------------------------------------------------------------------

# Analyses of one model version that are queued together are generated together, up to this many.
ANALYSIS_BATCH_SIZE = 32


def analysis_request(
    *, case: Case, user, version: ModelVersion | None = None, params: GenerationParams | None = None
) -> Analysis:
    """Queue an analysis of a case; the inference task is enqueued once the transaction commits."""
    from cases.tasks import run_analysis

    version = version or model_version_active()
    if version is None:
        raise ValidationError({"model_version": _("No model version is active. An ML admin must activate one.")})
    params = params or GenerationParams()
    analysis = Analysis.objects.create(
        case=case, model_version=version, requested_by=user, max_new_tokens=params.max_new_tokens,
        temperature=params.temperature, top_p=params.top_p,
    )
    transaction.on_commit(lambda: run_analysis.delay(analysis.pk))
    return analysis


def _claim_batch(analysis_id: int, *, reclaim: bool = False) -> list[Analysis]:
    """Mark this analysis and other queued ones of the same version and settings as running.

    A `running` analysis is claimed again when the earlier attempt of its task is known to be over (``reclaim``: the
    task is being retried) or has been silent for MEDPORTAL_ANALYSIS_STALE_SECONDS (its worker died and the broker
    redelivered the task); otherwise it would stay "running" on the doctor's page for ever.
    """
    with transaction.atomic():
        first = Analysis.objects.select_for_update().select_related("case", "model_version").get(pk=analysis_id)
        stale_before = timezone.now() - timedelta(seconds=settings.MEDPORTAL_ANALYSIS_STALE_SECONDS)
        abandoned = first.status == Analysis.Status.RUNNING and (reclaim or (first.started_at or stale_before) <= stale_before)
        if first.status != Analysis.Status.QUEUED and not abandoned:
            return []  # done, failed, or running in a live batch: acks_late may deliver a task twice
        companions = (
            Analysis.objects.select_for_update(skip_locked=True)
            .select_related("case", "model_version")
            .filter(status=Analysis.Status.QUEUED, model_version=first.model_version, max_new_tokens=first.max_new_tokens,
                    temperature=first.temperature, top_p=first.top_p)
            .exclude(pk=first.pk)
            .order_by("queued_at")[: ANALYSIS_BATCH_SIZE - 1]
        )
        batch = [first, *companions]
        now = timezone.now()
        Analysis.objects.filter(pk__in=[a.pk for a in batch]).update(status=Analysis.Status.RUNNING, started_at=now)
        for analysis in batch:
            analysis.status, analysis.started_at = Analysis.Status.RUNNING, now
    return batch


def case_ranking(
    *, engine, version: ModelVersion, text: str, language: str, facts: PatientFacts | None = None,
    labels: list[str] | None = None,
) -> tuple[list[dict], list[dict]]:
    """The version's candidate diagnoses (or `labels`: an evaluation ranks a case set's own) in the case's language,
    ranked by the model's likelihood as an analysis ranks them, and those left out because they cannot fit the
    patient's stated sex or age `facts` ([{name, reason}])."""
    prompt = diagnosis_prompt(build_prompt(text, language), language)
    labels = version.label_set if labels is None else labels
    labels = [label for label in labels if (_detect_language([label]) == language)] or labels
    facts = facts or PatientFacts()
    excluded = []
    for label in labels:
        if reason := implausible(label, facts, language):
            excluded.append({"name": label, "reason": reason})
    labels = [label for label in labels if label not in {e["name"] for e in excluded}]
    if not labels:
        return [], excluded
    probabilities = engine.score_candidates(prompt, labels)
    ranked = sorted(zip(labels, probabilities, strict=True), key=lambda pair: pair[1], reverse=True)
    return [{"name": name, "probability": round(float(p), 4)} for name, p in ranked], excluded


@dataclass(frozen=True)
class ModelAnswer:
    """A structured answer of a model version to one case, as the case page and reviewers see it."""

    diagnosis: str
    differential: list[dict]  # [{name, probability}], ranked
    treatment: str
    prognosis: str
    rationale: str
    raw_output: str
    quality: dict = field(default_factory=dict)  # section -> "ok" | "empty" | "degenerate"
    ranking_disagrees: bool = False
    diagnosis_from_ranking: bool = False
    excluded: list = field(default_factory=list)  # [{name, reason}]: labels that cannot fit the patient
    grounding: list = field(default_factory=list)  # [{finding, status}]: the rationale's findings against the note
    uncertain: bool = False  # the ranking's first label is below the version's confidence threshold


# The answer itself (what a review item keeps too), and every field of it (what an analysis keeps).
ANSWER_TEXT_FIELDS = ("diagnosis", "differential", "treatment", "prognosis", "rationale", "raw_output")
ANSWER_FIELDS = tuple(answer_field.name for answer_field in dataclass_fields(ModelAnswer))


def model_answers(*, version: ModelVersion, cases: list[tuple[str, str]], params: GenerationParams,
                  labels: list[str] | None = None) -> list[ModelAnswer]:
    """Answers of a model version to de-identified case texts [(text, language)], generated as one batch.

    The one way the product asks a model about cases: a doctor's analysis and an evaluation batch both come here
    (an automatic evaluation ranks its case set's `labels` instead of the version's label set).
    Raises ModelLoadError when the version's files cannot be loaded.
    """
    engine = get_engine(engine_config(version))
    prompts = [build_prompt(text, language) for text, language in cases]
    generations = engine.generate(prompts, params)
    answers = []
    for (text, language), generation in zip(cases, generations, strict=True):
        parsed = parse_answer(generation.text, language)
        differential, excluded = case_ranking(engine=engine, version=version, text=text, language=language,
                                              facts=extract_facts(text), labels=labels)
        sections = {"diagnosis": parsed.diagnosis, "treatment": parsed.treatment, "prognosis": parsed.prognosis,
                    "rationale": parsed.rationale}
        quality = answer_quality.section_flags(sections, language)
        lead = answer_quality.headline(parsed.diagnosis, quality["diagnosis"], differential)
        answers.append(ModelAnswer(
            diagnosis=lead.text, differential=differential, treatment=parsed.treatment, prognosis=parsed.prognosis,
            rationale=parsed.rationale, raw_output=generation.text, quality=quality, ranking_disagrees=not lead.agrees,
            diagnosis_from_ranking=lead.from_ranking, excluded=excluded,
            grounding=[{"finding": claim.finding, "status": claim.status}
                       for claim in check_rationale(parsed.rationale, text, language)],
            uncertain=is_uncertain(differential, version.confidence_threshold),
        ))
    return answers


def version_calibrate(*, version: ModelVersion, case_set: CaseSet, target_accuracy: float = 0.9, limit: int = 500,
                      actor=None) -> Calibration:
    """Choose a version's abstention threshold on a labelled case set (validation cases, never the training ones):
    each case is ranked as an analysis would rank it, and its top label is right when it names the recorded diagnosis."""
    cases = list(LabelledCase.objects.filter(case_set=case_set).order_by("pk")[:limit])
    if not cases:
        raise ValidationError({"case_set": _("The case set has no cases.")})
    if not version.label_set:
        raise ValidationError({"model_version": _("The version has no label set to rank.")})
    engine = get_engine(engine_config(version))
    scored = []
    for case in cases:
        ranked, _excluded = case_ranking(engine=engine, version=version, text=case.text, language=case.language,
                                         facts=extract_facts(case.text))
        top = ranked[0] if ranked else {"name": "", "probability": 0.0}
        scored.append((top["probability"], answer_quality.concept(top["name"]) == answer_quality.concept(case.diagnosis)))
    calibration = choose_threshold(scored, target_accuracy=target_accuracy)
    model_version_calibrate(version=version, calibration={**calibration.to_dict(), "case_set": case_set.name},
                            actor=actor)
    return calibration


def is_uncertain(ranked: list[dict], threshold: float | None) -> bool:
    """Whether an answer must not assert its top diagnosis: its probability is below the version's threshold."""
    if threshold is None:
        return False
    return not ranked or ranked[0]["probability"] < threshold


def analysis_run(*, analysis_id: int, reclaim: bool = False) -> None:
    """Run the model on a queued analysis (and on others queued with it). Idempotent; see _claim_batch for ``reclaim``."""
    batch = _claim_batch(analysis_id, reclaim=reclaim)
    if not batch:
        return
    version = batch[0].model_version
    params = GenerationParams(
        max_new_tokens=batch[0].max_new_tokens, temperature=batch[0].temperature, top_p=batch[0].top_p
    )
    try:
        answers = model_answers(
            version=version, cases=[(a.case.model_text, a.case.language) for a in batch], params=params
        )
    except ModelLoadError as error:
        _fail(batch, str(error))
        return
    except Exception as error:  # the doctor reads this; the worker log has the traceback
        logger.exception("analysis batch %s failed", [a.pk for a in batch])
        _fail(batch, _("The model run failed (%(kind)s). Try again or ask an ML admin.") % {"kind": type(error).__name__})
        return
    finished = timezone.now()
    with transaction.atomic():
        for analysis, answer in zip(batch, answers, strict=True):
            for name in ANSWER_FIELDS:  # an Analysis stores the whole answer, checks included
                setattr(analysis, name, getattr(answer, name))
            analysis.needs_review = answer.ranking_disagrees
            analysis.status = Analysis.Status.DONE
            analysis.finished_at = finished
            analysis.save()


def _fail(batch: list[Analysis], message: str) -> None:
    Analysis.objects.filter(pk__in=[a.pk for a in batch]).update(
        status=Analysis.Status.FAILED, error=message, finished_at=timezone.now()
    )


def engine_config(version: ModelVersion) -> EngineConfig:
    return EngineConfig(base_model=version.base_model, adapter=version.adapter or None, quantization=version.quantization)


def text_analyze(
    *, author, text: str, version: ModelVersion | None = None, params: GenerationParams | None = None,
    remote_addr: str | None = None,
) -> Analysis:
    """The /api/v1/analyze/ service: one pasted text becomes a de-identified case and its analysis."""
    with transaction.atomic():
        case = case_create(author=author, data=CaseInput(texts={"free_text": text}), remote_addr=remote_addr)
        return analysis_request(case=case, user=author, version=version, params=params)


def analysis_wait(*, analysis: Analysis, seconds: float, poll: float = 0.2) -> Analysis:
    """Wait up to `seconds` for the worker to finish an analysis; returns it as it then stands."""
    deadline = time.monotonic() + seconds
    while not analysis.is_finished and time.monotonic() < deadline:
        time.sleep(poll)
        analysis.refresh_from_db()
    return analysis


# --- Doctors' feedback on analyses of their own cases ----------------------------------------------------

MAX_CORRECT_DIAGNOSIS_CHARS = DoctorFeedback._meta.get_field("correct_diagnosis").max_length


def doctor_feedback_save(
    *, doctor, analysis: Analysis, helpful: bool, correct_diagnosis: str = "", remote_addr: str | None = None
) -> DoctorFeedback:
    """The submitting doctor rates an analysis of their own case (again, if they change their mind).

    A correct diagnosis is de-identified like case text and waits for a reviewer's decision before it can become
    training data; changing it sends it back to the reviewers.
    """
    if analysis.case.author_id != doctor.pk:
        raise PermissionDenied(_("Only the doctor who submitted the case can rate its analysis."))
    if analysis.status != Analysis.Status.DONE:
        raise ValidationError(_("Only a finished analysis can be rated."))
    correct = " ".join((correct_diagnosis or "").split())
    correct = Deidentifier().deidentify(correct, analysis.case.language, echo_names=False) if correct else ""
    if len(correct) > MAX_CORRECT_DIAGNOSIS_CHARS:  # measured after placeholders replaced names
        raise ValidationError({"correct_diagnosis": _("Keep the diagnosis under %(n)d characters.") % {
            "n": MAX_CORRECT_DIAGNOSIS_CHARS}})
    with transaction.atomic(), set_actor(doctor, remote_addr=remote_addr):
        feedback = DoctorFeedback.objects.select_for_update().filter(analysis=analysis).first()
        if feedback is None:
            feedback = DoctorFeedback(analysis=analysis, doctor=doctor)
        changed = feedback.correct_diagnosis != correct
        if changed and feedback.decision == DoctorFeedback.Decision.ACCEPTED:
            # It is training data now, with the diagnosis the reviewer accepted.
            raise ValidationError({"correct_diagnosis": _(
                "A reviewer has accepted your correction for training; it can no longer be changed.")})
        feedback.helpful, feedback.correct_diagnosis = helpful, correct
        if changed or feedback.pk is None:
            feedback.decision = DoctorFeedback.Decision.PENDING if correct else DoctorFeedback.Decision.NONE
            feedback.decided_by, feedback.decided_at = None, None
        feedback.save()
        access_record(user=doctor, action=AccessEvent.Action.DOCTOR_FEEDBACK, cases=[analysis.case],
                      target=f"analysis {analysis.pk}", remote_addr=remote_addr)
    return feedback


def doctor_feedback_set_decision(*, feedback: DoctorFeedback, accepted: bool, reviewer) -> DoctorFeedback:
    """Record a reviewer's decision on a doctor's correction (the caller makes the training example)."""
    if feedback.decision != DoctorFeedback.Decision.PENDING:
        raise ValidationError(_("This correction has already been decided."))
    feedback.decision = DoctorFeedback.Decision.ACCEPTED if accepted else DoctorFeedback.Decision.REJECTED
    feedback.decided_by, feedback.decided_at = reviewer, timezone.now()
    with set_actor(reviewer):
        feedback.save(update_fields=["decision", "decided_by", "decided_at", "updated_at"])
    return feedback


# --- Imported case sets ----------------------------------------------------------------------

# Rows go to the database this many at a time.
IMPORT_BATCH_SIZE = 500
# An import run keeps the first rejected lines; a file with more is the wrong file, and the count says so.
MAX_STORED_ERRORS = 1000
MAX_REASON_CHARS = 300
MAX_ID_CHARS = LabelledCase._meta.get_field("external_id").max_length


class CaseSetImportError(Exception):
    """The file as a whole cannot be imported (unreadable, wrong format); nothing was saved."""


@dataclass
class ImportReport:
    case_set: CaseSet
    import_run: ImportRun
    rows: int
    imported: int
    duplicates: int
    rejected: int
    errors: list[tuple[int, str]]  # (line, reason), in file order


# What a case id must not contain (a date in an id, "case-2024-03-01", is no one's identity).
_PERSONAL_KINDS = ("NAME", "ID", "PHONE", "EMAIL", "ADDRESS")


def _keyed_hash(message: str) -> str:
    return hmac.new(settings.MEDPORTAL_PSEUDONYM_KEY.encode(), message.encode(), hashlib.sha256).hexdigest()


def _labelled_case_from(record: Record) -> LabelledCase:
    """A de-identified LabelledCase (unsaved, without set or run) from a validated record; RowError if unusable."""
    if len(record.id) > MAX_ID_CHARS:
        raise RowError(f"the id has {len(record.id)} characters; the limit is {MAX_ID_CHARS}")
    if record.id and any(span.kind in _PERSONAL_KINDS for span in detect_phi(record.id)):
        # The id is stored in clear and exported; identifiers of the patient belong in patient_id.
        raise RowError("the id looks like a personal identifier; put patient identifiers in patient_id")
    language = record.language
    deidentifier = Deidentifier()  # one per row: one name gets one placeholder across the row's fields
    fields = ("text", "diagnosis", "treatment", "prognosis", "rationale")
    labels = ("diagnosis",)  # and the differential: checked on their own, see Deidentifier.deidentify
    clean = {name: deidentifier.deidentify(getattr(record, name), language, echo_names=name not in labels) for name in fields}
    differential = [deidentifier.deidentify(name, language, echo_names=False) for name in record.differential]
    original = {name: getattr(record, name) for name in fields if clean[name] != getattr(record, name)}
    if differential != record.differential:
        original["differential"] = record.differential
    key = settings.MEDPORTAL_PSEUDONYM_KEY.encode()
    if record.patient_id:
        original["patient_id"] = record.patient_id
        patient = pseudonym(key, "ID" if valid_resident_id(record.patient_id) else "MRN", record.patient_id)
    else:
        identifiers = deidentifier.identifiers()  # as for a doctor's case: the first ID or record number
        patient = pseudonym(key, *identifiers[0]) if identifiers else ""
    replacements = deidentifier.replacements
    protected = {"original": original, "replacements": replacements} if original else None
    if record.id:
        dedupe = _keyed_hash(f"id\x1f{record.id}")
    else:
        dedupe = _keyed_hash(f"text\x1f{clean['text']}\x1f{clean['diagnosis']}")
    return LabelledCase(
        external_id=record.id,
        language=language,
        differential=differential,
        phi_ciphertext=encrypt_phi(protected) if protected else "",
        phi_count=len(replacements) + bool(record.patient_id),
        patient_pseudonym=patient,
        dedupe_key=dedupe,
        **clean,
    )


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def case_set_import(
    *, path, case_set: str, actor=None, source_name: str | None = None, description: str = ""
) -> ImportReport:
    """Import a JSONL or CSV file of labelled cases into the named case set (created if new).

    Every row is de-identified; a bad row is skipped and reported with its line and reason; a row already in the
    set (same case id, or same text and diagnosis when the row has no id) is counted as a duplicate. A file that
    cannot be read as a whole raises CaseSetImportError and saves nothing. One transaction per import.
    """
    if actor is not None and not actor.has_perm("cases.import_caseset"):
        raise PermissionDenied(_("Only ML admins can import case sets."))
    path = Path(path)
    started = timezone.now()
    clock = time.monotonic()
    source_name = source_name or path.name
    candidate = CaseSet(name=case_set, description=description, created_by=actor)
    candidate.full_clean(validate_unique=False)

    # De-identify before the transaction opens: that is the slow part, and it writes nothing.
    prepared: list[tuple[int, LabelledCase]] = []
    errors: list[tuple[int, str]] = []
    rows = 0
    try:
        for line, row in read_rows(path):
            rows += 1
            try:
                if isinstance(row, RowError):
                    raise row
                prepared.append((line, _labelled_case_from(record_from_row(row))))
            except RowError as error:
                errors.append((line, str(error)[:MAX_REASON_CHARS]))
        sha256 = _file_sha256(path)
    except (FileFormatError, OSError) as error:
        raise CaseSetImportError(str(error)) from None

    with transaction.atomic(), set_actor(actor) if actor else contextlib.nullcontext():
        the_set, created = CaseSet.objects.get_or_create(
            name=case_set, defaults={"description": description, "created_by": actor}
        )
        # One import into a set at a time, so two cannot both decide that a row is new.
        the_set = CaseSet.objects.select_for_update().get(pk=the_set.pk)
        if description and not created and the_set.description != description:
            the_set.description = description
            the_set.save(update_fields=["description"])
        seen = set(LabelledCase.objects.filter(case_set=the_set).values_list("dedupe_key", flat=True))
        new: list[LabelledCase] = []
        for line, case in prepared:
            if case.dedupe_key in seen:
                continue
            seen.add(case.dedupe_key)
            case.source_file, case.source_row = source_name, line
            new.append(case)
        run = ImportRun.objects.create(
            case_set=the_set, source_name=source_name, sha256=sha256, started_by=actor, started_at=started,
            finished_at=timezone.now(), rows=rows, imported=len(new), duplicates=len(prepared) - len(new),
            rejected=len(errors), errors=[{"line": line, "reason": reason} for line, reason in errors[:MAX_STORED_ERRORS]],
        )
        for case in new:
            case.case_set, case.import_run = the_set, run
        # bulk_create sends no signals, so auditlog writes no entry per case: the import run is their record.
        LabelledCase.objects.bulk_create(new, batch_size=IMPORT_BATCH_SIZE)
    logger.info(
        "case set import: set=%s run=%s rows=%d imported=%d duplicates=%d rejected=%d seconds=%.1f",
        the_set.pk, run.pk, rows, run.imported, run.duplicates, run.rejected, time.monotonic() - clock,
    )
    return ImportReport(
        case_set=the_set, import_run=run, rows=rows, imported=run.imported, duplicates=run.duplicates,
        rejected=run.rejected, errors=errors,
    )


def case_set_split(*, case_set: CaseSet, test_fraction: float, seed: int = 0, actor=None) -> tuple[CaseSet, CaseSet]:
    """Split a case set by patient into "<name>-train" and "<name>-test" (new sets; the original stays).

    A patient's cases (its keyed pseudonym, else the case id) all go to one side, chosen by a seeded hash, so no patient
    is both trained on and tested on. Either name already taken is refused before anything is written.
    """
    if actor is not None and not actor.has_perm("cases.import_caseset"):
        raise PermissionDenied(_("Only ML admins can split case sets."))
    if not 0 < test_fraction < 1:
        raise ValidationError({"test_fraction": _("The held-out share must be between 0 and 1, e.g. 0.2.")})
    names = (f"{case_set.name}-train", f"{case_set.name}-test")
    taken = list(CaseSet.objects.filter(name__in=names).values_list("name", flat=True))
    if taken:
        raise ValidationError({"case_set": _("A case set named %(name)s already exists.") % {"name": taken[0]}})
    cases = list(LabelledCase.objects.filter(case_set=case_set).order_by("pk"))
    sides: dict[str, list[LabelledCase]] = {"train": [], "test": []}
    for case in cases:
        group = labelled_case_group(case)
        # Salted: a training run splits its validation cases with the same hash, and would otherwise find that the
        # patients it holds out are the ones already held out here (leaving it almost no validation cases).
        sides[split_of(f"holdout:{group}", val_fraction=0.0, test_fraction=test_fraction, seed=seed)].append(case)
    if not sides["train"] or not sides["test"]:
        raise ValidationError({"test_fraction": _("Every patient fell on one side; the set is too small to split.")})
    with transaction.atomic(), set_actor(actor) if actor else contextlib.nullcontext():
        made = []
        for name, side in zip(names, ("train", "test"), strict=True):
            description = _("%(side)s split of %(name)s by patient (%(share)s held out, seed %(seed)s)") % {
                "side": side, "name": case_set.name, "share": test_fraction, "seed": seed}
            target = CaseSet.objects.create(name=name, description=description, created_by=actor)
            copies = []
            for case in sides[side]:
                case.pk, case.case_set = None, target
                copies.append(case)
            LabelledCase.objects.bulk_create(copies, batch_size=IMPORT_BATCH_SIZE)
            made.append(target)
    return made[0], made[1]


def labelled_cases_rotate_keys(*, batch_size: int = 500) -> int:
    """Re-encrypt the originals kept for imported labelled cases under the newest key. Returns how many."""
    rotated = 0
    pks = list(LabelledCase.objects.exclude(phi_ciphertext="").order_by("pk").values_list("pk", flat=True))
    for start in range(0, len(pks), batch_size):
        with transaction.atomic():
            batch = list(LabelledCase.objects.select_for_update().filter(pk__in=pks[start : start + batch_size]))
            for case in batch:
                case.phi_ciphertext = rotate_token(case.phi_ciphertext)
            LabelledCase.objects.bulk_update(batch, ["phi_ciphertext"])  # no value changes: no audit entries
            rotated += len(batch)
    return rotated


def labelled_case_record(case: LabelledCase, case_set: CaseSet) -> Record:
    """A case of the set as the training core reads it (what an export writes, line by line)."""
    return Record(
        text=case.text, diagnosis=case.diagnosis, id=case.external_id or f"{case_set.name}-{case.pk}",
        language=case.language, treatment=case.treatment, prognosis=case.prognosis, rationale=case.rationale,
        differential=list(case.differential), patient_id=case.patient_pseudonym,
    )


def labelled_case_group(case: LabelledCase) -> str:
    """What keeps a case with its patient's others in a split: the keyed patient pseudonym, else the case id."""
    return case.patient_pseudonym or case.external_id or f"{case.case_set_id}-{case.pk}"


def case_set_export(*, case_set: CaseSet, path, actor=None) -> int:
    """Write the set's de-identified records, in import order, as the JSONL that training reads; audited.

    Returns how many records were written. The export entry is saved with the file written, or not at all.
    """
    if actor is not None and not actor.has_perm("cases.export_caseset"):
        raise PermissionDenied(_("Only ML admins can export case sets."))
    path = Path(path)
    cases = LabelledCase.objects.filter(case_set=case_set).order_by("pk")
    records = (labelled_case_record(case, case_set) for case in cases.iterator(chunk_size=IMPORT_BATCH_SIZE))
    with transaction.atomic():
        count = write_records(records, path)
        CaseSetExport.objects.create(
            case_set=case_set, case_set_name=case_set.name, actor=actor,
            actor_username=actor.get_username() if actor else "", records=count, path=str(path),
        )
    logger.info("case set export: set=%s records=%d", case_set.pk, count)
    return count

"""Writes to case data. Every state change of a case goes through one function here."""

import logging
import time
from dataclasses import dataclass, field

from auditlog.context import set_actor
from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from cases.crypto import decrypt_phi, encrypt_phi, rotate_token
from cases.deid import Deidentifier, pseudonym
from cases.models import AGE_CAP, TEXT_FIELDS, AccessEvent, Analysis, Case
from modeling.models import ModelVersion
from modeling.prompts import build_prompt, diagnosis_prompt, parse_answer
from modeling.runtime import EngineConfig, GenerationParams, ModelLoadError, get_engine
from modeling.selectors import model_version_active

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
    age = data.age
    if age is not None and age > AGE_CAP - 1:
        age = AGE_CAP
    identifiers = deidentifier.identifiers()
    key = settings.MEDPORTAL_PSEUDONYM_KEY.encode()
    original = {"texts": {name: text for name, text in texts.items() if text}, "age": data.age}
    case = Case(
        author=author,
        language=language,
        sex=data.sex or Case.Sex.UNKNOWN,
        age=age,
        department=data.department or "",
        phi_ciphertext=encrypt_phi({"original": original, "replacements": deidentifier.replacements}),
        phi_count=len(deidentifier.replacements) + (age != data.age),
        patient_pseudonym=pseudonym(key, *identifiers[0]) if identifiers else "",
        **clean,
    )
    with transaction.atomic(), set_actor(author, remote_addr=remote_addr):
        case.save()
    return case


def case_submit(*, author, data: CaseInput, remote_addr: str | None = None) -> tuple[Case, Analysis | None]:
    """Save a case and queue its analysis by the active model version, if there is one."""
    with transaction.atomic():
        case = case_create(author=author, data=data, remote_addr=remote_addr)
        version = model_version_active()
        analysis = analysis_request(case=case, user=author, version=version) if version else None
    return case, analysis


def access_record(*, user, action: str, cases: list[Case], remote_addr: str | None = None) -> AccessEvent:
    return AccessEvent.objects.create(
        actor=user,
        actor_username=user.get_username(),
        action=action,
        case_ids=[case.pk for case in cases],
        remote_addr=remote_addr,
    )


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


def _claim_batch(analysis_id: int) -> list[Analysis]:
    """Mark this analysis and other queued ones of the same version and settings as running."""
    with transaction.atomic():
        first = Analysis.objects.select_for_update().select_related("case", "model_version").get(pk=analysis_id)
        if first.status != Analysis.Status.QUEUED:
            return []  # done, failed or taken by a batch already: acks_late may deliver a task twice
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


def _ranked_differential(engine, prompt: str, labels: list[str], language: str) -> list[dict]:
    """The version's candidate diagnoses in the case's language, ranked by the model's likelihood."""
    labels = [label for label in labels if (_detect_language([label]) == language)] or labels
    if not labels:
        return []
    probabilities = engine.score_candidates(prompt, labels)
    ranked = sorted(zip(labels, probabilities, strict=True), key=lambda pair: pair[1], reverse=True)
    return [{"name": name, "probability": round(float(p), 4)} for name, p in ranked]


def analysis_run(*, analysis_id: int) -> None:
    """Run the model on a queued analysis (and on others queued with it). Idempotent."""
    batch = _claim_batch(analysis_id)
    if not batch:
        return
    version = batch[0].model_version
    params = GenerationParams(
        max_new_tokens=batch[0].max_new_tokens, temperature=batch[0].temperature, top_p=batch[0].top_p
    )
    try:
        engine = get_engine(engine_config(version))
        prompts = [build_prompt(analysis.case.model_text, analysis.case.language) for analysis in batch]
        generations = engine.generate(prompts, params)
        for analysis, prompt, generation in zip(batch, prompts, generations, strict=True):
            answer = parse_answer(generation.text, analysis.case.language)
            analysis.diagnosis, analysis.treatment = answer.diagnosis, answer.treatment
            analysis.prognosis, analysis.rationale = answer.prognosis, answer.rationale
            analysis.raw_output = generation.text
            analysis.differential = _ranked_differential(
                engine, diagnosis_prompt(prompt, analysis.case.language), version.label_set, analysis.case.language
            )
            if not analysis.diagnosis and analysis.differential:
                analysis.diagnosis = analysis.differential[0]["name"]
            analysis.status = Analysis.Status.DONE
    except ModelLoadError as error:
        _fail(batch, str(error))
        return
    except Exception as error:  # the doctor reads this; the worker log has the traceback
        logger.exception("analysis batch %s failed", [a.pk for a in batch])
        _fail(batch, _("The model run failed (%(kind)s). Try again or ask an ML admin.") % {"kind": type(error).__name__})
        return
    finished = timezone.now()
    with transaction.atomic():
        for analysis in batch:
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

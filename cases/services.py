"""Writes to case data. Every state change of a case goes through one function here."""

from dataclasses import dataclass, field

from auditlog.context import set_actor
from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from cases.crypto import decrypt_phi, encrypt_phi, rotate_token
from cases.deid import Deidentifier, pseudonym
from cases.models import AGE_CAP, TEXT_FIELDS, AccessEvent, Case


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

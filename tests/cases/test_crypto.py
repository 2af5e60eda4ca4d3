import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command

from cases.crypto import PhiDecryptionError, decrypt_phi, encrypt_phi
from cases.models import Case, LabelledCase
from cases.services import CaseInput, case_create, case_set_import

OLD_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()


def test_originals_round_trip_through_encryption(settings):
    settings.MEDPORTAL_FERNET_KEYS = [OLD_KEY]
    payload = {"replacements": {"[NAME_1]": "王芳"}, "original": {"age": 93}}
    token = encrypt_phi(payload)
    assert "王芳" not in token
    assert decrypt_phi(token) == payload


def test_a_token_is_unreadable_without_its_key(settings):
    settings.MEDPORTAL_FERNET_KEYS = [OLD_KEY]
    token = encrypt_phi({"x": 1})
    settings.MEDPORTAL_FERNET_KEYS = [NEW_KEY]
    with pytest.raises(PhiDecryptionError, match="cannot be decrypted"):
        decrypt_phi(token)


@pytest.mark.django_db
def test_rotate_keys_re_encrypts_so_the_old_key_can_go(settings, doctor, capsys, tmp_path):
    settings.MEDPORTAL_FERNET_KEYS = [OLD_KEY]
    case = case_create(author=doctor, data=CaseInput(texts={"chief_complaint": "患者王芳，头晕1周。"}))
    before = case.phi_ciphertext
    imported = tmp_path / "set.jsonl"
    imported.write_text('{"id": "r1", "text": "患者李娜，咳嗽3天。", "diagnosis": "急性支气管炎"}\n', encoding="utf-8")
    case_set_import(path=imported, case_set="rotation")
    labelled_before = LabelledCase.objects.get().phi_ciphertext

    settings.MEDPORTAL_FERNET_KEYS = [NEW_KEY, OLD_KEY]
    assert decrypt_phi(before)["replacements"]["[NAME_1]"] == "王芳"  # the old key still decrypts
    call_command("rotate_keys")
    assert "Re-encrypted 1 case(s) and 1 imported labelled case(s)" in capsys.readouterr().out

    settings.MEDPORTAL_FERNET_KEYS = [NEW_KEY]
    case.refresh_from_db()
    assert case.phi_ciphertext != before
    assert decrypt_phi(case.phi_ciphertext)["replacements"]["[NAME_1]"] == "王芳"
    labelled = LabelledCase.objects.get()
    assert labelled.phi_ciphertext != labelled_before
    assert decrypt_phi(labelled.phi_ciphertext)["replacements"]["[NAME_1]"] == "李娜"


@pytest.mark.django_db
def test_rotate_keys_stops_with_a_clear_error_when_a_key_is_missing(settings, doctor):
    settings.MEDPORTAL_FERNET_KEYS = [OLD_KEY]
    case_create(author=doctor, data=CaseInput(texts={"chief_complaint": "胸闷"}))
    settings.MEDPORTAL_FERNET_KEYS = [NEW_KEY]
    with pytest.raises(Exception, match="cannot be decrypted"):
        call_command("rotate_keys")
    assert Case.objects.count() == 1

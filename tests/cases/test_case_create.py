import pytest
from django.urls import reverse

from cases.crypto import decrypt_phi
from cases.models import Case
from tests.cases.phi_examples import EN_CASE, EN_NAME, ZH_CASE, ZH_ID, ZH_NAME, ZH_PHI

pytestmark = pytest.mark.django_db


def submit(client, data):
    return client.post(reverse("cases:create"), data)


def test_a_doctor_submits_a_chinese_case_and_lands_on_its_page(client, doctor):
    client.force_login(doctor)
    response = submit(client, ZH_CASE)
    case = Case.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("cases:detail", args=[case.pk])
    assert case.author == doctor
    assert case.language == "zh"
    assert case.department == "cardiology"


def test_it_stores_only_de_identified_text(client, doctor):
    client.force_login(doctor)
    submit(client, ZH_CASE)
    case = Case.objects.get()
    stored = " ".join(text for _label, text in case.sections)
    for value in ZH_PHI:
        assert value not in stored
    assert case.chief_complaint == "患者[NAME_1]，胸痛2小时。"
    # The same patient gets the same placeholder in every section of the case.
    assert "[NAME_1]" in case.present_illness
    assert "BP 150/90 mmHg" in case.physical_exam


def test_it_keeps_the_originals_encrypted(client, doctor):
    client.force_login(doctor)
    submit(client, ZH_CASE)
    case = Case.objects.get()
    assert ZH_ID not in case.phi_ciphertext
    payload = decrypt_phi(case.phi_ciphertext)
    assert payload["replacements"]["[NAME_1]"] == ZH_NAME
    assert ZH_ID in payload["replacements"].values()
    assert payload["original"]["texts"]["chief_complaint"] == ZH_CASE["chief_complaint"]


def test_it_links_cases_of_one_patient_by_a_keyed_pseudonym(client, doctor):
    client.force_login(doctor)
    submit(client, ZH_CASE)
    submit(client, {**ZH_CASE, "chief_complaint": "复诊，胸闷1周。"})
    first, second = Case.objects.order_by("pk")
    assert first.patient_pseudonym and first.patient_pseudonym == second.patient_pseudonym
    assert ZH_ID not in first.patient_pseudonym


def test_it_stores_ages_over_89_as_90(client, doctor):
    client.force_login(doctor)
    submit(client, EN_CASE)
    case = Case.objects.get()
    assert case.age == 90
    assert case.age_display == "≥90"
    assert decrypt_phi(case.phi_ciphertext)["original"]["age"] == 93
    assert EN_NAME not in case.free_text


def test_it_accepts_a_pasted_record_alone(client, doctor):
    client.force_login(doctor)
    response = submit(client, {"sex": "U", "free_text": "Fever and cough for three days."})
    assert response.status_code == 302
    assert Case.objects.get().free_text == "Fever and cough for three days."


def test_it_requires_a_complaint_or_a_record_and_keeps_what_was_typed(client, doctor):
    client.force_login(doctor)
    response = submit(client, {"sex": "F", "age": "34", "past_history": "既往体健，无过敏史。"})
    assert response.status_code == 400
    page = response.content.decode()
    assert "Enter the chief complaint, or paste the whole record" in page
    assert "既往体健，无过敏史。" in page
    assert Case.objects.count() == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [("age", "-3"), ("age", "abc"), ("age", "200"), ("sex", "X"), ("department", "astrology")],
)
def test_it_explains_bad_structured_fields_next_to_them(client, doctor, field, value):
    client.force_login(doctor)
    response = submit(client, {**ZH_CASE, field: value})
    assert response.status_code == 400
    assert f"{field}" in response.context["form"].errors
    assert ZH_CASE["chief_complaint"] in response.content.decode()
    assert Case.objects.count() == 0


def test_it_refuses_an_overlong_section_with_a_message(client, doctor, settings):
    client.force_login(doctor)
    response = submit(client, {**ZH_CASE, "present_illness": "咳" * (settings.MEDPORTAL_MAX_FIELD_CHARS + 1)})
    assert response.status_code == 400
    assert "present_illness" in response.context["form"].errors
    assert Case.objects.count() == 0


def test_it_refuses_an_oversized_request_with_413(client, doctor, settings):
    client.force_login(doctor)
    response = submit(client, {**ZH_CASE, "free_text": "x" * (settings.MEDPORTAL_MAX_REQUEST_BYTES + 10)})
    assert response.status_code == 413
    assert Case.objects.count() == 0


def test_the_case_page_shows_the_de_identified_text(client, doctor):
    client.force_login(doctor)
    submit(client, ZH_CASE)
    case = Case.objects.get()
    page = client.get(reverse("cases:detail", args=[case.pk])).content.decode()
    assert "患者[NAME_1]，胸痛2小时。" in page
    for value in ZH_PHI:
        assert value not in page


def test_the_owner_reveals_the_original_identifiers_on_request(client, doctor):
    client.force_login(doctor)
    submit(client, ZH_CASE)
    case = Case.objects.get()
    response = client.post(reverse("cases:reveal", args=[case.pk]))
    page = response.content.decode()
    assert response.status_code == 200
    assert ZH_NAME in page and ZH_ID in page
    assert response["Cache-Control"] == "no-store"


def test_revealing_needs_a_post(client, doctor):
    client.force_login(doctor)
    submit(client, ZH_CASE)
    case = Case.objects.get()
    assert client.get(reverse("cases:reveal", args=[case.pk])).status_code == 405

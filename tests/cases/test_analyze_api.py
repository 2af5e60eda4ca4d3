"""POST /api/v1/analyze/ input bounds: every violation is a 400 naming its field."""

import pytest

from cases.models import Case
from modeling.services import model_version_register

pytestmark = pytest.mark.django_db
URL = "/api/v1/analyze/"


@pytest.fixture
def authed(api_client, doctor):
    api_client.force_authenticate(doctor)
    return api_client


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_new_tokens", 0), ("max_new_tokens", 1025), ("max_new_tokens", "many"),
        ("temperature", -0.1), ("temperature", 2.5), ("top_p", 0), ("top_p", 1.5),
        ("model_version", "no-such-version"), ("text", ""),
    ],
)
def test_out_of_bounds_values_are_400_with_a_field_message(authed, field, value):
    model_version_register(name="v", base_model="/models/v", activate=True)
    response = authed.post(URL, {"text": "Cough for 3 days.", field: value}, format="json")
    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert Case.objects.count() == 0


def test_text_is_required(authed):
    response = authed.post(URL, {}, format="json")
    assert response.status_code == 400 and "text" in response.json()


def test_an_oversized_text_is_refused(authed, settings):
    response = authed.post(URL, {"text": "x" * (settings.MEDPORTAL_MAX_FREE_TEXT_CHARS + 1)}, format="json")
    assert response.status_code == 400 and "text" in response.json()


def test_without_an_active_version_the_answer_says_so(authed):
    response = authed.post(URL, {"text": "Cough for 3 days."}, format="json")
    assert response.status_code == 400
    assert "No model version is active" in response.json()["model_version"][0]
    assert Case.objects.count() == 0


def test_only_doctors_may_analyse(api_client, reviewer):
    api_client.force_authenticate(reviewer)
    model_version_register(name="v", base_model="/models/v", activate=True)
    assert api_client.post(URL, {"text": "Cough"}, format="json").status_code == 403

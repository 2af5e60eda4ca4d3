import json

import pytest
from rest_framework.authtoken.models import Token

from cases.models import Case
from tests.cases.phi_examples import EN_CASE, EN_PHI, ZH_CASE, ZH_PHI

pytestmark = pytest.mark.django_db
CASES = "/api/v1/cases/"


def test_a_doctor_creates_a_case_with_a_token(api_client, doctor):
    token = Token.objects.create(user=doctor)
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    response = api_client.post(CASES, ZH_CASE, format="json")
    assert response.status_code == 201
    body = response.json()
    assert body["chief_complaint"] == "患者[NAME_1]，胸痛2小时。"
    assert body["language"] == "zh"
    assert body["url"].endswith(f"/api/v1/cases/{body['id']}/")
    assert Case.objects.get().author == doctor


def test_responses_never_carry_the_originals(api_client, doctor):
    api_client.force_authenticate(doctor)
    created = api_client.post(CASES, EN_CASE, format="json").json()
    listed = api_client.get(CASES).content.decode()
    read = api_client.get(f"{CASES}{created['id']}/").content.decode()
    for text in (json.dumps(created, ensure_ascii=False), listed, read):
        for value in EN_PHI:
            assert value not in text
    assert created["age"] == "≥90"


def test_the_list_is_paginated_searchable_and_only_mine(api_client, doctor, other_doctor):
    api_client.force_authenticate(other_doctor)
    api_client.post(CASES, {"chief_complaint": "头痛3天"}, format="json")
    api_client.force_authenticate(doctor)
    for day in range(25):
        api_client.post(CASES, {"chief_complaint": f"咳嗽{day + 1}天"}, format="json")
    api_client.post(CASES, {"chief_complaint": "腹痛6小时"}, format="json")
    first = api_client.get(CASES).json()
    assert first["count"] == 26
    assert len(first["results"]) == 20 and first["next"]
    assert all("头痛" not in case["chief_complaint"] for case in first["results"])
    found = api_client.get(CASES, {"q": "腹痛"}).json()
    assert [case["chief_complaint"] for case in found["results"]] == ["腹痛6小时"]


def test_the_list_query_count_does_not_grow_with_cases(api_client, doctor, django_assert_max_num_queries):
    api_client.force_authenticate(doctor)
    for _ in range(15):
        api_client.post(CASES, {"chief_complaint": "发热"}, format="json")
    with django_assert_max_num_queries(8):
        assert api_client.get(CASES).status_code == 200


def test_validation_errors_are_400_with_per_field_messages(api_client, doctor):
    api_client.force_authenticate(doctor)
    response = api_client.post(CASES, {"age": -1, "sex": "X", "department": "astrology"}, format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"age", "sex", "department"}
    response = api_client.post(CASES, {"past_history": "无"}, format="json")
    assert response.status_code == 400
    assert "chief complaint" in response.json()["chief_complaint"][0]
    assert Case.objects.count() == 0


def test_an_overlong_field_is_400_and_an_oversized_body_is_413(api_client, doctor, settings):
    api_client.force_authenticate(doctor)
    too_long = api_client.post(CASES, {"chief_complaint": "痛" * (settings.MEDPORTAL_MAX_FIELD_CHARS + 1)}, format="json")
    assert too_long.status_code == 400 and "chief_complaint" in too_long.json()
    huge = api_client.post(CASES, {"free_text": "x" * (settings.MEDPORTAL_MAX_REQUEST_BYTES + 1)}, format="json")
    assert huge.status_code == 413
    assert "too large" in huge.json()["detail"]
    assert Case.objects.count() == 0


def test_malformed_json_is_a_400(api_client, doctor):
    api_client.force_authenticate(doctor)
    response = api_client.post(CASES, data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert "detail" in response.json()


def test_a_token_is_issued_for_valid_credentials(api_client, doctor):
    from tests.conftest import PASSWORD

    response = api_client.post("/api/v1/auth/token/", {"username": doctor.username, "password": PASSWORD})
    assert response.status_code == 200
    token = response.json()["token"]
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert api_client.get(CASES).status_code == 200


def test_the_schema_and_docs_are_served(client, doctor):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    paths = json.loads(schema.content)["paths"]
    assert "/api/v1/cases/" in paths and "/api/v1/cases/{id}/" in paths
    client.force_login(doctor)
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger-ui" in docs.content
    assert b"cdn." not in docs.content


def test_a_chinese_case_keeps_its_text_when_read_back(api_client, doctor):
    api_client.force_authenticate(doctor)
    created = api_client.post(CASES, ZH_CASE, format="json").json()
    read = api_client.get(f"{CASES}{created['id']}/").json()
    assert read["physical_exam"] == ZH_CASE["physical_exam"]
    assert all(value not in json.dumps(read, ensure_ascii=False) for value in ZH_PHI)


def test_a_case_posted_without_an_active_version_says_why_no_analysis_started(api_client, doctor):
    api_client.force_authenticate(doctor)
    body = api_client.post(CASES, {"chief_complaint": "Cough for 3 days."}, format="json").json()
    assert body["analysis_note"] == "No model version is active, so no analysis was started."
    assert body["status"] == "submitted" and body["analyses"] == []


def test_a_case_posted_to_the_api_is_queued_as_the_form_queues_it(api_client, doctor):
    from modeling.services import model_version_register

    model_version_register(name="api-active", base_model="/m/not-loaded-here", label_set=[], activate=True)
    api_client.force_authenticate(doctor)
    body = api_client.post(CASES, {"chief_complaint": "男，23岁，咳嗽3天。"}, format="json").json()
    case = Case.objects.get()
    analysis = case.analyses.get()
    assert "analysis_note" not in body
    assert body["status"] == "queued" == analysis.status  # as the page shows it
    assert body["analyses"] == [f"http://testserver/api/v1/analyses/{analysis.pk}/"]
    assert (body["sex"], body["age"]) == ("M", "23")  # read from the note
    read = api_client.get(f"{CASES}{case.pk}/").json()
    assert read["status"] == "queued" and read["analyses"] == body["analyses"]
    detail = api_client.get(body["analyses"][0]).json()
    assert detail["model_version"] == "api-active" and "queued_at" in detail and "started_at" in detail


@pytest.mark.parametrize("bad", [123, True, ["a"], {"a": 1}])
def test_a_case_text_that_is_not_a_string_is_a_400(api_client, doctor, bad):
    api_client.force_authenticate(doctor)
    response = api_client.post(CASES, {"chief_complaint": bad}, format="json")
    assert response.status_code == 400 and "chief_complaint" in response.json()
    analyze = api_client.post("/api/v1/analyze/", {"text": bad}, format="json")
    assert analyze.status_code == 400 and "text" in analyze.json()
    assert not Case.objects.exists()

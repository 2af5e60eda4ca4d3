"""Every page and endpoint against every persona: owner, colleague, reviewer, auditor, ML admin, anonymous."""

import pytest
from django.urls import reverse

from cases.services import CaseInput, case_create

pytestmark = pytest.mark.django_db

OWNER, COLLEAGUE, REVIEWER, AUDITOR, ML_ADMIN, ANONYMOUS = (
    "owner", "colleague", "reviewer", "auditor", "ml_admin", "anonymous"
)
LOGIN = "login-redirect"

# (method, url name, takes the case id) -> expected status per persona
MATRIX = [
    ("get", "cases:list", False, {OWNER: 200, COLLEAGUE: 200, REVIEWER: 403, AUDITOR: 403, ML_ADMIN: 403, ANONYMOUS: LOGIN}),
    ("get", "cases:create", False, {OWNER: 200, COLLEAGUE: 200, REVIEWER: 403, AUDITOR: 403, ML_ADMIN: 403, ANONYMOUS: LOGIN}),
    ("get", "cases:detail", True, {OWNER: 200, COLLEAGUE: 404, REVIEWER: 403, AUDITOR: 403, ML_ADMIN: 403, ANONYMOUS: LOGIN}),
    ("post", "cases:reveal", True, {OWNER: 200, COLLEAGUE: 404, REVIEWER: 403, AUDITOR: 403, ML_ADMIN: 403, ANONYMOUS: LOGIN}),
    ("get", "audit:log", False, {OWNER: 403, COLLEAGUE: 403, REVIEWER: 403, AUDITOR: 200, ML_ADMIN: 403, ANONYMOUS: LOGIN}),
    ("get", "admin:index", False, {OWNER: LOGIN, COLLEAGUE: LOGIN, REVIEWER: LOGIN, AUDITOR: 200, ML_ADMIN: 200, ANONYMOUS: LOGIN}),
    ("get", "admin:cases_accessevent_changelist", False,
     {OWNER: LOGIN, COLLEAGUE: LOGIN, REVIEWER: LOGIN, AUDITOR: 200, ML_ADMIN: 403, ANONYMOUS: LOGIN}),
    ("get", "api-case-list", False, {OWNER: 200, COLLEAGUE: 200, REVIEWER: 403, AUDITOR: 403, ML_ADMIN: 403, ANONYMOUS: 401}),
    ("post", "api-case-list", False, {OWNER: 201, COLLEAGUE: 201, REVIEWER: 403, AUDITOR: 403, ML_ADMIN: 403, ANONYMOUS: 401}),
    ("get", "api-case-detail", True, {OWNER: 200, COLLEAGUE: 404, REVIEWER: 403, AUDITOR: 403, ML_ADMIN: 403, ANONYMOUS: 401}),
]


@pytest.fixture
def personas(doctor, other_doctor, reviewer, auditor, ml_admin):
    return {OWNER: doctor, COLLEAGUE: other_doctor, REVIEWER: reviewer, AUDITOR: auditor, ML_ADMIN: ml_admin,
            ANONYMOUS: None}


@pytest.mark.parametrize("persona", [OWNER, COLLEAGUE, REVIEWER, AUDITOR, ML_ADMIN, ANONYMOUS])
@pytest.mark.parametrize(("method", "name", "takes_id", "expected"), MATRIX, ids=[f"{m} {n}" for m, n, *_ in MATRIX])
def test_access(client, personas, doctor, persona, method, name, takes_id, expected):
    case = case_create(author=doctor, data=CaseInput(texts={"chief_complaint": "患者李明，发热3天。"}))
    user = personas[persona]
    if user is not None:
        client.force_login(user)
    url = reverse(name, args=[case.pk] if takes_id else [])
    data = {"chief_complaint": "cough"} if name == "api-case-list" else {}
    response = getattr(client, method)(url, data)
    want = expected[persona]
    if want == LOGIN:
        assert response.status_code == 302 and "login" in response["Location"]
    else:
        assert response.status_code == want
    if response.status_code == 200 and persona != OWNER:
        assert "李明" not in response.content.decode()

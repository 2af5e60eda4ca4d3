"""Log-in, throttling, idle timeout, roles and the demo users."""

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.urls import reverse

from cases import roles
from cases.models import CaseSet
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def log_in(client, username, password):
    return client.post(reverse("login"), {"username": username, "password": password})


def test_a_doctor_logs_in_and_lands_on_their_cases(client, doctor):
    response = log_in(client, doctor.username, PASSWORD)
    assert response.status_code == 302
    assert client.get(response["Location"]).url == reverse("cases:list")


def test_an_auditor_lands_on_the_audit_trail(client, auditor):
    client.force_login(auditor)
    assert client.get(reverse("home")).url == reverse("audit:log")


def test_a_wrong_password_says_so(client, doctor):
    response = log_in(client, doctor.username, "wrong-password")
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()


def test_repeated_failures_lock_the_account_for_a_while(client, doctor, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        log_in(client, doctor.username, "wrong-password")
    locked = log_in(client, doctor.username, PASSWORD)
    assert locked.status_code == 429
    assert "Too many failed log-ins" in locked.content.decode()
    assert "_auth_user_id" not in client.session


def test_sessions_expire_after_the_idle_timeout(client, doctor, settings):
    assert settings.SESSION_COOKIE_AGE == 30 * 60 and settings.SESSION_SAVE_EVERY_REQUEST
    log_in(client, doctor.username, PASSWORD)
    client.get(reverse("cases:list"))
    assert 29 * 60 < client.session.get_expiry_age() <= 30 * 60
    # An idle session past its age is gone: the next request is sent to the log-in page.
    session = client.session
    session.set_expiry(-1)
    session.save()
    response = client.get(reverse("cases:list"))
    assert response.status_code == 302 and reverse("login") in response["Location"]


def test_a_pages_background_refresh_does_not_keep_an_idle_session_alive(client, doctor):
    from datetime import timedelta

    from django.contrib.sessions.models import Session
    from django.utils import timezone

    log_in(client, doctor.username, PASSWORD)
    stored = Session.objects.filter(session_key=client.session.session_key)
    stored.update(expire_date=timezone.now() + timedelta(minutes=1))  # a minute of idle time left

    # The case page polls while an analysis runs; an open screen must still log out when nobody uses it.
    client.get(reverse("cases:list"), headers={"HX-Request": "true", "X-MedPortal-Refresh": "1"})
    assert stored.get().expire_date <= timezone.now() + timedelta(minutes=1)

    client.get(reverse("cases:list"))  # the doctor clicks: that is activity
    assert stored.get().expire_date > timezone.now() + timedelta(minutes=29)


def test_a_refresh_after_the_session_ended_sends_the_whole_page_to_log_in(client, doctor):
    log_in(client, doctor.username, PASSWORD)
    session = client.session
    session.set_expiry(-1)
    session.save()
    response = client.get(reverse("cases:list"), headers={"HX-Request": "true", "X-MedPortal-Refresh": "1"})
    assert response.status_code == 200 and response["HX-Redirect"].startswith(reverse("login"))


def test_logging_out_needs_a_post_and_ends_the_session(client, doctor):
    client.force_login(doctor)
    client.post(reverse("logout"))
    assert client.get(reverse("cases:list")).status_code == 302


def test_csrf_is_enforced_on_forms(doctor):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(doctor)
    assert strict.post(reverse("cases:create"), {"chief_complaint": "胸痛"}).status_code == 403


def test_the_four_roles_exist_with_their_permissions():
    assert set(Group.objects.values_list("name", flat=True)) >= set(roles.ROLES)
    doctor_perms = set(Group.objects.get(name=roles.DOCTOR).permissions.values_list("codename", flat=True))
    assert doctor_perms == {"add_case", "view_case", "reveal_phi"}
    auditor_perms = set(Group.objects.get(name=roles.AUDITOR).permissions.values_list("codename", flat=True))
    # Auditors see which case sets were imported and exported, never the cases' text.
    assert auditor_perms == {"view_accessevent", "view_logentry", "view_caseset", "view_importrun", "view_casesetexport"}
    ml_admin_perms = set(Group.objects.get(name=roles.ML_ADMIN).permissions.values_list("codename", flat=True))
    assert {"import_caseset", "export_caseset", "view_labelledcase", "add_trainingrun", "change_trainingrun"} <= ml_admin_perms


def test_demo_users_are_created_for_each_role(settings, capsys, client):
    settings.DEBUG = True
    call_command("seed_demo")
    output = capsys.readouterr().out
    for username in ("doctor", "reviewer", "mladmin", "auditor"):
        assert username in output
    # An ML admin finds a case set to fine-tune on, once however often the demo is set up.
    call_command("seed_demo")
    demo_set = CaseSet.objects.get(name="demo-synthetic")
    assert demo_set.cases.count() == 240 and {"zh", "en"} == set(demo_set.cases.values_list("language", flat=True))
    assert log_in(client, "doctor", "medportal-demo").status_code == 302


def test_demo_users_are_refused_outside_debug(settings):
    from django.core.management.base import CommandError

    settings.DEBUG = False
    with pytest.raises(CommandError, match="only with DEBUG"):
        call_command("seed_demo")

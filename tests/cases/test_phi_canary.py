"""Canary: PHI submitted through the form and the API must not appear in clear anywhere we write."""

import logging
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.urls import reverse

from tests.cases.phi_examples import EN_CASE, EN_PHI, ZH_CASE, ZH_PHI

pytestmark = pytest.mark.django_db
CANARIES = ZH_PHI + EN_PHI


def text_columns() -> list[tuple[str, str]]:
    """(table, column) for every text-like column of every table in the database."""
    found = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            for column in connection.introspection.get_table_description(cursor, table):
                internal = connection.introspection.get_field_type(column.type_code, column)
                if internal in {"CharField", "TextField", "JSONField"}:
                    found.append((table, column.name))
    return found


def rows_containing(value: str) -> list[str]:
    hits = []
    with connection.cursor() as cursor:
        for table, column in text_columns():
            qt, qc = connection.ops.quote_name(table), connection.ops.quote_name(column)
            cursor.execute(f"SELECT COUNT(*) FROM {qt} WHERE CAST({qc} AS TEXT) LIKE %s", [f"%{value}%"])
            if cursor.fetchone()[0]:
                hits.append(f"{table}.{column}")
    return hits


def files_containing(value: str, root: Path) -> list[str]:
    needle = value.encode()
    return [str(path) for path in root.rglob("*") if path.is_file() and needle in path.read_bytes()]


def test_no_phi_in_clear_in_the_database_logs_or_files(client, api_client, doctor, caplog):
    caplog.set_level(logging.DEBUG)
    client.force_login(doctor)
    assert client.post(reverse("cases:create"), ZH_CASE).status_code == 302
    assert client.post(reverse("cases:create"), EN_CASE).status_code == 302
    api_client.force_authenticate(doctor)
    assert api_client.post("/api/v1/cases/", ZH_CASE, format="json").status_code == 201
    assert api_client.post("/api/v1/cases/", EN_CASE, format="json").status_code == 201
    # Read everything back the ways a user can, so reads are logged too.
    case_ids = [case["id"] for case in api_client.get("/api/v1/cases/").json()["results"]]
    for pk in case_ids:
        client.get(reverse("cases:detail", args=[pk]))
        api_client.get(f"/api/v1/cases/{pk}/")
    client.get(reverse("cases:list"))
    for handler in logging.getLogger().handlers:
        handler.flush()

    assert len(case_ids) == 4
    assert len(text_columns()) > 20  # the scan really covers the schema
    leaks = {}
    for value in CANARIES:
        places = rows_containing(value) + files_containing(value, settings.DATA_DIR)
        places += [f"log record {r.name}" for r in caplog.records if value in r.getMessage()]
        if places:
            leaks[value] = places
    assert leaks == {}


def test_the_scan_would_find_a_leak(doctor):
    doctor.first_name = ZH_PHI[0]
    doctor.save()
    assert "auth_user.first_name" in rows_containing(ZH_PHI[0])

"""Importing labelled case files (JSONL, CSV) into case sets: de-identified, reported by line, never duplicated."""

import json
from pathlib import Path

import pytest
from auditlog.models import LogEntry
from cryptography.fernet import Fernet
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import translation

from cases.crypto import decrypt_phi
from cases.models import CaseSet, ImportRun, LabelledCase
from cases.services import CaseSetImportError, case_set_import, labelled_cases_rotate_keys
from tests.cases.phi_examples import ZH_ID, ZH_NAME, ZH_PHONE
from tests.shared_data import SHARED_DATA

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def english():
    """The messages asserted here are the English ones (the project's default language is Chinese)."""
    with translation.override("en"):
        yield



PHI_ROW = {
    "id": "cardio-001",
    "patient_id": ZH_ID,
    "text": f"患者{ZH_NAME}，男，45岁。身份证号：{ZH_ID}，联系电话：{ZH_PHONE}。胸骨后压榨样疼痛2小时，伴大汗。",
    "diagnosis": "急性心肌梗死",
    "treatment": f"急诊PCI；告知{ZH_NAME}家属病情。",
    "differential": ["不稳定型心绞痛", "主动脉夹层"],
}
PLAIN_ROWS = [
    {"id": "resp-002", "text": "Fever and productive cough for 3 days; crackles at the right base.", "diagnosis": "Pneumonia"},
    {"id": "gi-003", "text": "腹泻3天，每日5-6次稀水样便。", "diagnosis": "腹泻", "language": "zh"},
]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row, ensure_ascii=False)) + "\n" for row in rows))
    return path


def shared_slice(tmp_path: Path, name: str, lines: int) -> Path:
    with (SHARED_DATA / name).open(encoding="utf-8") as handle:
        head = [next(handle) for _ in range(lines)]
    path = tmp_path / name
    path.write_text("".join(head), encoding="utf-8")
    return path


def stored_values() -> str:
    """Every column of every row the import wrote (cases, runs, sets, change log), as one string."""
    tables = [LabelledCase.objects.values(), ImportRun.objects.values(), CaseSet.objects.values(), LogEntry.objects.values()]
    return json.dumps([list(rows) for rows in tables], ensure_ascii=False, default=str)


def test_a_jsonl_file_lands_in_a_named_set_de_identified(tmp_path):
    path = write_jsonl(tmp_path / "cardio.jsonl", [PHI_ROW, *PLAIN_ROWS])

    report = case_set_import(path=path, case_set="cardio-train")

    assert (report.rows, report.imported, report.duplicates, report.rejected, report.errors) == (3, 3, 0, 0, [])
    assert report.case_set.name == "cardio-train" and report.case_set.cases.count() == 3
    case = LabelledCase.objects.get(external_id="cardio-001")
    assert case.language == "zh" and case.diagnosis == "急性心肌梗死"
    assert case.text.startswith("患者[NAME_1]，") and "[ID_1]" in case.text and "[PHONE_1]" in case.text
    assert case.treatment == "急诊PCI；告知[NAME_1]家属病情。"  # one name, one placeholder across the row
    assert case.differential == ["不稳定型心绞痛", "主动脉夹层"]
    assert (case.source_file, case.source_row, case.import_run) == ("cardio.jsonl", 1, report.import_run)
    assert case.phi_count >= 3 and len(case.patient_pseudonym) == 32
    assert LabelledCase.objects.get(external_id="resp-002").language == "en"  # detected when the file does not say


def test_a_disease_mistaken_for_a_name_in_the_note_keeps_its_label(tmp_path):
    # MedPix writes "Neoplasm Name: Pilocytic Astrocytoma"; a name found in the note is masked wherever else the note
    # repeats it, but the diagnosis label is checked on its own, so training still learns the right answer.
    row = {"id": "mpx-1", "text": "Findings: Neoplasm Name: Pilocytic Astrocytoma\nSeen by Dr. John Smith.",
           "diagnosis": "Pilocytic Astrocytoma", "differential": ["Pilocytic Astrocytoma", "Medulloblastoma"]}
    case_set_import(path=write_jsonl(tmp_path / "mpx.jsonl", [row]), case_set="mpx")

    case = LabelledCase.objects.get()
    assert "John Smith" not in case.text
    assert case.diagnosis == "Pilocytic Astrocytoma"
    assert case.differential == ["Pilocytic Astrocytoma", "Medulloblastoma"]


def test_the_originals_are_only_in_the_encrypted_column_and_decrypt_back(tmp_path):
    case_set_import(path=write_jsonl(tmp_path / "cardio.jsonl", [PHI_ROW]), case_set="cardio-train")

    stored = stored_values()
    for original in (ZH_NAME, ZH_ID, ZH_PHONE):
        assert original not in stored
    case = LabelledCase.objects.get()
    payload = decrypt_phi(case.phi_ciphertext)
    assert payload["replacements"]["[NAME_1]"] == ZH_NAME
    assert ZH_PHONE in payload["replacements"].values()
    assert payload["original"]["text"] == PHI_ROW["text"] and payload["original"]["patient_id"] == ZH_ID


def test_key_rotation_re_encrypts_the_imported_originals(tmp_path, settings):
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.MEDPORTAL_FERNET_KEYS = [old_key]
    case_set_import(path=write_jsonl(tmp_path / "cardio.jsonl", [PHI_ROW, *PLAIN_ROWS]), case_set="cardio-train")

    settings.MEDPORTAL_FERNET_KEYS = [new_key, old_key]
    assert labelled_cases_rotate_keys() == 1  # only the row that had identifiers keeps originals

    settings.MEDPORTAL_FERNET_KEYS = [new_key]
    case = LabelledCase.objects.get(external_id="cardio-001")
    assert decrypt_phi(case.phi_ciphertext)["replacements"]["[NAME_1]"] == ZH_NAME


def test_one_patient_gets_one_pseudonym_whatever_the_file(tmp_path):
    other_visit = {**PLAIN_ROWS[1], "id": "gi-009", "patient_id": f" {ZH_ID} "}
    case_set_import(path=write_jsonl(tmp_path / "a.jsonl", [PHI_ROW, other_visit, PLAIN_ROWS[0]]), case_set="mixed")

    pseudonyms = dict(LabelledCase.objects.values_list("external_id", "patient_pseudonym"))
    assert pseudonyms["cardio-001"] == pseudonyms["gi-009"]
    assert pseudonyms["resp-002"] == ""  # no patient id, no identifier in the text


def test_a_csv_file_is_imported_with_its_optional_columns(tmp_path):
    path = tmp_path / "peds.csv"
    path.write_text(
        "id,text,diagnosis,treatment,differential,language\n"
        'p-1,"小儿3岁，流清鼻涕，打喷嚏。",过敏性鼻炎,氯雷他定,上呼吸道感染;鼻窦炎,zh\n'
        'p-2,"Cough and wheeze, worse at night.",Asthma,Inhaled corticosteroid,,en\n',
        encoding="utf-8",
    )

    report = case_set_import(path=path, case_set="peds")

    assert (report.imported, report.rejected) == (2, 0)
    first = LabelledCase.objects.get(external_id="p-1")
    assert (first.diagnosis, first.treatment, first.differential) == ("过敏性鼻炎", "氯雷他定", ["上呼吸道感染", "鼻窦炎"])
    assert (first.source_row, LabelledCase.objects.get(external_id="p-2").source_row) == (2, 3)


def test_bad_rows_are_reported_by_line_and_skipped_while_good_rows_land(tmp_path):
    rows = [
        PLAIN_ROWS[0],
        {"id": "x-2", "text": "Headache for a week."},
        "{not json",
        {"id": "x-4", "text": "Chest pain.", "diagnosis": "Angina", "language": "fr"},
        PLAIN_ROWS[1],
        {"id": "x" * 201, "text": "Chest pain.", "diagnosis": "Angina"},
    ]

    report = case_set_import(path=write_jsonl(tmp_path / "mixed.jsonl", rows), case_set="mixed")

    assert (report.rows, report.imported, report.rejected) == (6, 2, 4)
    assert [line for line, _reason in report.errors] == [2, 3, 4, 6]
    assert report.errors[0] == (2, "no diagnosis")
    assert "not valid JSON" in report.errors[1][1] and "unknown language 'fr'" in report.errors[2][1]
    assert report.errors[3] == (6, "the id has 201 characters; the limit is 200")
    assert report.import_run.errors[0] == {"line": 2, "reason": "no diagnosis"}
    assert sorted(LabelledCase.objects.values_list("external_id", flat=True)) == ["gi-003", "resp-002"]


def test_an_id_that_is_a_personal_identifier_is_refused(tmp_path):
    report = case_set_import(path=write_jsonl(tmp_path / "ids.jsonl", [{**PLAIN_ROWS[0], "id": ZH_PHONE}]), case_set="ids")

    assert report.imported == 0
    assert report.errors == [(1, "the id looks like a personal identifier; put patient identifiers in patient_id")]
    assert ZH_PHONE not in stored_values()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("cases.txt", "text,diagnosis\nfever,flu\n", "unknown file type '.txt'"),
        ("cases.csv", "text,label\nfever,flu\n", "the header has no diagnosis column"),
        ("cases.jsonl", "发热三天".encode("gb18030"), "not UTF-8"),
        ("cases.jsonl", "text: fever\ndiagnosis: flu\n", "no line is a JSON object"),
        ("cases.jsonl", "\n\n", "the file is empty"),
    ],
    ids=["txt", "csv-without-diagnosis", "not-utf8", "not-json", "empty"],
)
def test_a_bad_file_is_rejected_whole_and_nothing_is_saved(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())

    with pytest.raises(CaseSetImportError, match=message):
        case_set_import(path=path, case_set="bad")

    assert not CaseSet.objects.exists() and not ImportRun.objects.exists() and not LabelledCase.objects.exists()


def test_a_re_import_does_not_duplicate(tmp_path):
    path = write_jsonl(tmp_path / "cases.jsonl", [PHI_ROW, *PLAIN_ROWS])
    case_set_import(path=path, case_set="train")

    again = case_set_import(path=path, case_set="train")
    overlapping = case_set_import(
        path=write_jsonl(tmp_path / "more.jsonl", [PLAIN_ROWS[0], {**PLAIN_ROWS[0], "id": "resp-010"}]), case_set="train"
    )

    assert (again.imported, again.duplicates) == (0, 3)
    assert (overlapping.imported, overlapping.duplicates) == (1, 1)
    assert LabelledCase.objects.filter(case_set__name="train").count() == 4
    assert ImportRun.objects.count() == 3  # every attempt is on record
    # Another set is another set: the same rows land there too.
    assert case_set_import(path=path, case_set="eval").imported == 3


def test_rows_without_an_id_are_duplicates_when_text_and_diagnosis_match(tmp_path):
    row = {"text": "Sore throat and fever.", "diagnosis": "Pharyngitis"}
    report = case_set_import(
        path=write_jsonl(tmp_path / "noid.jsonl", [row, row, {**row, "diagnosis": "Tonsillitis"}]), case_set="noid"
    )
    assert (report.imported, report.duplicates) == (2, 1)


def test_only_ml_admins_import_and_the_run_names_them(tmp_path, doctor, ml_admin):
    path = write_jsonl(tmp_path / "cases.jsonl", PLAIN_ROWS)
    with pytest.raises(PermissionDenied):
        case_set_import(path=path, case_set="train", actor=doctor)
    assert not CaseSet.objects.exists()

    report = case_set_import(path=path, case_set="train", actor=ml_admin, description="Pilot set")

    assert report.import_run.started_by == ml_admin
    assert (report.case_set.created_by, report.case_set.description) == (ml_admin, "Pilot set")
    assert LogEntry.objects.get_for_object(report.import_run).get().actor == ml_admin


def test_a_case_set_name_must_be_safe_as_a_file_name(tmp_path):
    with pytest.raises(ValidationError, match="Use letters, digits"):
        case_set_import(path=write_jsonl(tmp_path / "cases.jsonl", PLAIN_ROWS), case_set="../train")
    assert not CaseSet.objects.exists()


# --- the command ---------------------------------------------------------------------------


def test_the_command_imports_slices_of_the_shared_sets(tmp_path, capsys, ml_admin):
    english = shared_slice(tmp_path, "en-dev.jsonl", 30)
    with english.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"id": "broken-1", "text": "Fever."}) + "\n")
    chinese = shared_slice(tmp_path, "zh-dev.jsonl", 20)

    call_command("import_cases", str(english), "--user", ml_admin.username, "--description", "DDXPlus and MedPix")
    call_command("import_cases", str(chinese), "--set", "dxy-train")
    out = capsys.readouterr().out

    assert "line 31: no diagnosis" in out
    assert "Case set en-dev: imported 30, duplicates 0, rejected 1" in out
    assert "Case set dxy-train: imported 20, duplicates 0, rejected 0" in out
    english_set = CaseSet.objects.get(name="en-dev")
    assert (english_set.cases.count(), english_set.description, english_set.created_by) == (30, "DDXPlus and MedPix", ml_admin)
    first = LabelledCase.objects.get(external_id="ddxplus-validate-k-00570")
    assert first.differential == ["URTI", "Cluster headache", "Chagas", "Anemia"]  # DDXPlus pairs become names
    assert set(CaseSet.objects.get(name="dxy-train").cases.values_list("language", flat=True)) == {"zh"}

    call_command("import_cases", str(chinese), "--set", "dxy-train")
    assert "imported 0, duplicates 20, rejected 0" in capsys.readouterr().out


def test_the_command_refuses_a_bad_file_with_its_reason(tmp_path):
    path = tmp_path / "cases.csv"
    path.write_text("text,label\nfever,flu\n", encoding="utf-8")
    with pytest.raises(CommandError, match=r"cases.csv: the header has no diagnosis column.*\nNothing was imported"):
        call_command("import_cases", str(path))
    assert not CaseSet.objects.exists()


def test_the_command_refuses_an_unknown_user_or_a_user_who_may_not_import(tmp_path, doctor):
    path = write_jsonl(tmp_path / "cases.jsonl", PLAIN_ROWS)
    with pytest.raises(CommandError, match="No user named 'nobody'"):
        call_command("import_cases", str(path), "--user", "nobody")
    with pytest.raises(CommandError, match="Only ML admins can import case sets"):
        call_command("import_cases", str(path), "--user", doctor.username)
    assert not CaseSet.objects.exists()


def test_the_default_set_name_is_the_files_name_made_safe(tmp_path, capsys):
    call_command("import_cases", str(write_jsonl(tmp_path / "ward 3 (2024).jsonl", PLAIN_ROWS)))
    assert CaseSet.objects.get().name == "ward-3-2024"


# --- the admin -----------------------------------------------------------------------------


@pytest.fixture
def client(client):
    client.defaults["HTTP_ACCEPT_LANGUAGE"] = "en"  # pages in English, whatever the catalogue holds
    return client


@pytest.fixture
def imported(tmp_path):
    rows = [PHI_ROW, *PLAIN_ROWS, {"id": "x-4", "text": "Headache."}]
    return case_set_import(path=write_jsonl(tmp_path / "cardio.jsonl", rows), case_set="cardio-train")


def test_ml_admins_see_case_sets_with_counts_and_rejected_lines(client, ml_admin, imported, django_assert_max_num_queries):
    client.force_login(ml_admin)
    with django_assert_max_num_queries(10):
        listing = client.get(reverse("admin:cases_caseset_changelist")).content.decode()
    assert "cardio-train" in listing and ">3<" in listing
    detail = client.get(reverse("admin:cases_caseset_change", args=[imported.case_set.pk])).content.decode()
    assert "line 4: no diagnosis" in detail and "cardio.jsonl" in detail

    cases = client.get(reverse("admin:cases_labelledcase_changelist"), {"case_set__id__exact": imported.case_set.pk})
    assert cases.status_code == 200 and "cardio-001" in cases.content.decode()
    case = LabelledCase.objects.get(external_id="cardio-001")
    page = client.get(reverse("admin:cases_labelledcase_change", args=[case.pk])).content.decode()
    assert "[NAME_1]" in page
    assert case.phi_ciphertext[:40] not in page and case.patient_pseudonym not in page and ZH_NAME not in page


def test_auditors_see_import_runs_but_no_case_text(client, auditor, imported):
    client.force_login(auditor)
    run = client.get(reverse("admin:cases_importrun_change", args=[imported.import_run.pk]))
    assert run.status_code == 200 and "line 4: no diagnosis" in run.content.decode()
    assert client.get(reverse("admin:cases_labelledcase_changelist")).status_code == 403
    log = client.get(reverse("admin:auditlog_logentry_changelist")).content.decode()
    assert "胸骨后" not in log and ZH_NAME not in log


def test_labelled_cases_cannot_be_added_or_edited_in_the_admin(client, ml_admin, imported):
    client.force_login(ml_admin)
    case = LabelledCase.objects.first()
    assert client.get(reverse("admin:cases_labelledcase_add")).status_code == 403
    client.post(reverse("admin:cases_labelledcase_change", args=[case.pk]), {"diagnosis": "changed"})
    case.refresh_from_db()
    assert case.diagnosis != "changed"


def test_holdout_splits_the_set_by_patient_and_refuses_to_split_twice(tmp_path, ml_admin):
    rows = [{"id": f"c{i}", "patient_id": f"p{i // 3}", "text": f"Complaint: cough for {i + 1} days.",
             "diagnosis": "bronchitis", "language": "en"} for i in range(60)]
    path = tmp_path / "cough.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    call_command("import_cases", str(path), "--set", "cough", "--holdout", "0.25", "--user", ml_admin.username)

    train, test = CaseSet.objects.get(name="cough-train"), CaseSet.objects.get(name="cough-test")
    assert train.cases.count() + test.cases.count() == 60 and test.cases.count() > 0 and train.cases.count() > 0
    # Every patient's three cases are on one side only.
    train_patients = set(train.cases.values_list("patient_pseudonym", flat=True))
    test_patients = set(test.cases.values_list("patient_pseudonym", flat=True))
    assert not train_patients & test_patients and len(train_patients | test_patients) == 20
    assert CaseSet.objects.get(name="cough").cases.count() == 60  # the whole set stays
    with pytest.raises(CommandError, match="cough-(train|test) already exists"):
        call_command("import_cases", str(path), "--set", "cough", "--holdout", "0.25")

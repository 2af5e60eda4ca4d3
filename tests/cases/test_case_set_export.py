"""A case set exports to the JSONL that training reads; every export is audited; training picks sets by key."""

import json

import pytest
from django.core.exceptions import PermissionDenied
from django.utils import translation

from cases import training_data
from cases.models import CaseSet, CaseSetExport, LabelledCase
from cases.services import case_set_export, case_set_import
from modeling.records import read_records
from tests.cases.phi_examples import ZH_ID, ZH_NAME, ZH_PHONE
from tests.cases.test_import_cases import PHI_ROW, PLAIN_ROWS, shared_slice, write_jsonl

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def english():
    """The messages asserted here are the English ones (the project's default language is Chinese)."""
    with translation.override("en"):
        yield


@pytest.fixture
def ddxplus(tmp_path):
    return case_set_import(path=shared_slice(tmp_path, "en-dev.jsonl", 12), case_set="ddxplus-train").case_set


@pytest.fixture
def cardio(tmp_path):
    rows = [PHI_ROW, *PLAIN_ROWS, {"text": "Palpitations after coffee.", "diagnosis": "Sinus tachycardia"}]
    return case_set_import(path=write_jsonl(tmp_path / "cardio.jsonl", rows), case_set="cardio-train").case_set


def test_an_export_round_trips_through_the_training_reader(tmp_path, ddxplus):
    path = tmp_path / "out" / "train.jsonl"

    assert case_set_export(case_set=ddxplus, path=path) == 12

    records = read_records(path)
    source = [json.loads(line) for line in (tmp_path / "en-dev.jsonl").read_text().splitlines()]
    assert [record.id for record in records] == [row["id"] for row in source]  # in import order
    first = records[0]
    assert (first.diagnosis, first.language) == ("URTI", "en")
    assert first.differential == ["URTI", "Cluster headache", "Chagas", "Anemia"]  # names, as training reads them
    assert first.text == LabelledCase.objects.get(external_id=first.id).text


def test_an_export_holds_placeholders_and_pseudonyms_never_the_originals(tmp_path, cardio):
    path = tmp_path / "cardio.jsonl.out.jsonl"
    case_set_export(case_set=cardio, path=path)

    content = path.read_text(encoding="utf-8")
    for original in (ZH_NAME, ZH_ID, ZH_PHONE):
        assert original not in content
    records = {record.id: record for record in read_records(path)}
    phi = records["cardio-001"]
    assert "[NAME_1]" in phi.text and phi.patient_id == LabelledCase.objects.get(external_id="cardio-001").patient_pseudonym
    # A row without an id gets one from its set, so training can still split by case.
    no_id = LabelledCase.objects.get(external_id="")
    assert records[f"cardio-train-{no_id.pk}"].diagnosis == "Sinus tachycardia"


def test_every_export_is_audited_with_who_what_and_how_many(tmp_path, cardio, ml_admin):
    path = tmp_path / "cardio.jsonl"
    case_set_export(case_set=cardio, path=path, actor=ml_admin)

    entry = CaseSetExport.objects.get()
    assert (entry.case_set, entry.case_set_name) == (cardio, "cardio-train")
    assert (entry.actor, entry.actor_username) == (ml_admin, "ml_admin")
    assert (entry.records, entry.path) == (4, str(path))

    cardio.delete()  # the trail outlives the set
    entry.refresh_from_db()
    assert (entry.case_set, entry.case_set_name) == (None, "cardio-train")


def test_only_ml_admins_export(tmp_path, cardio, doctor, auditor):
    for outsider in (doctor, auditor):
        with pytest.raises(PermissionDenied):
            case_set_export(case_set=cardio, path=tmp_path / "x.jsonl", actor=outsider)
    assert not (tmp_path / "x.jsonl").exists() and not CaseSetExport.objects.exists()


# --- the provider the training form loads (settings.MEDPORTAL_TRAINING_DATASETS) -----------------


def test_training_offers_non_empty_case_sets_newest_first(ddxplus, cardio):
    CaseSet.objects.create(name="empty")

    assert training_data.choices() == [
        (f"caseset:{cardio.pk}", "cardio-train (4 cases)"),
        (f"caseset:{ddxplus.pk}", "ddxplus-train (12 cases)"),
    ]


def test_training_exports_a_chosen_set_to_its_own_file(tmp_path, cardio, ml_admin):
    path, description = training_data.export(f"caseset:{cardio.pk}", tmp_path, actor=ml_admin)

    assert path == tmp_path / "cardio-train.jsonl"
    assert description == "case set cardio-train, 4 cases"
    assert len(read_records(path)) == 4
    assert CaseSetExport.objects.get().actor == ml_admin


@pytest.mark.parametrize(
    ("key", "message"),
    [("caseset:999999", "there is no case set #999999"), ("cardio-train", "expected “caseset:<id>”"), ("", "expected")],
)
def test_an_unknown_dataset_key_is_a_clear_error(tmp_path, cardio, key, message):
    directory = tmp_path / "datasets"
    with pytest.raises(ValueError, match=message):
        training_data.export(key, directory)
    assert not directory.exists() and not CaseSetExport.objects.exists()


def test_an_empty_case_set_cannot_be_trained_on(tmp_path):
    empty = CaseSet.objects.create(name="empty")
    with pytest.raises(ValueError, match="has no cases"):
        training_data.export(f"caseset:{empty.pk}", tmp_path)

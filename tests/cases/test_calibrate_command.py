"""`manage.py calibrate_model`: a version's abstention threshold chosen on a labelled case set with a tiny real model;
an analysis below it reads "uncertain"."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from cases.models import Analysis
from cases.services import CaseInput, case_create, case_set_import, is_uncertain
from modeling.models import ModelVersion
from modeling.services import model_version_register
from tests.tiny_models import case_records, write_jsonl

pytestmark = pytest.mark.django_db
LABELS = ["心绞痛", "支气管炎", "流感", "偏头痛", "阑尾炎", "哮喘", "angina", "bronchitis", "influenza", "migraine",
          "appendicitis", "asthma"]


def test_a_threshold_is_chosen_and_stored_with_the_version(tmp_path, tiny_model_dir, ml_admin):
    case_set_import(path=write_jsonl(case_records(24, seed=5), tmp_path / "val.jsonl"), case_set="validation")
    version = model_version_register(name="tiny-cal", base_model=str(tiny_model_dir), label_set=LABELS)
    out = StringIO()
    call_command("calibrate_model", "--model-version", "tiny-cal", "--case-set", "validation", "--target", "0.8",
                 stdout=out)
    version.refresh_from_db()
    assert version.confidence_threshold is not None and 0 <= version.confidence_threshold <= 1
    assert version.calibration["cases"] == 24 and version.calibration["case_set"] == "validation"
    assert version.calibration["curve"] and f"threshold {version.confidence_threshold:.4f} on 24 cases" in out.getvalue()


def test_the_command_names_what_is_missing(tiny_model_dir):
    with pytest.raises(CommandError, match="No model version named 'nope'"):
        call_command("calibrate_model", "--model-version", "nope", "--case-set", "x")
    model_version_register(name="tiny-cal", base_model=str(tiny_model_dir), label_set=LABELS)
    with pytest.raises(CommandError, match="No case set named 'x'"):
        call_command("calibrate_model", "--model-version", "tiny-cal", "--case-set", "x")


def test_below_the_threshold_an_answer_is_uncertain():
    ranked = [{"name": "a", "probability": 0.4}, {"name": "b", "probability": 0.3}]
    assert is_uncertain(ranked, 0.5) and not is_uncertain(ranked, 0.4) and not is_uncertain(ranked, None)
    assert is_uncertain([], 0.1)


def test_an_uncertain_analysis_names_no_diagnosis_and_lists_the_leading_ones(client, doctor):
    case = case_create(author=doctor, data=CaseInput(texts={"chief_complaint": "Headache for 2 days."}))
    Analysis.objects.create(
        case=case, model_version=ModelVersion.objects.create(name="v", base_model="/m", confidence_threshold=0.5),
        status=Analysis.Status.DONE, diagnosis="Migraine", uncertain=True, started_at=timezone.now(),
        finished_at=timezone.now(), differential=[{"name": "Migraine", "probability": 0.35},
                                                  {"name": "Tension headache", "probability": 0.3},
                                                  {"name": "Sinusitis", "probability": 0.2}])
    client.force_login(doctor)
    page = client.get(reverse("cases:detail", args=[case.pk])).content.decode()
    assert 'data-testid="uncertain"' in page
    assert "Uncertain:" in page and "Migraine (35%), Tension headache (30%), Sinusitis (20%)" in page

import pytest
from django.core.management import call_command

from modeling.models import ModelVersion
from modeling.selectors import model_version_active

pytestmark = pytest.mark.django_db


def test_it_trains_registers_and_activates_medportal_tiny_once(settings, tmp_path, capsys):
    settings.DATA_DIR = tmp_path
    call_command("bootstrap_model", "--max-steps", "20", "--train-cases", "200", "--eval-cases", "10")
    version = model_version_active()
    assert version.name == "medportal-tiny"
    assert (tmp_path / "models" / "medportal-tiny" / "config.json").exists()
    assert version.base_model == str(tmp_path / "models" / "medportal-tiny")
    assert "急性心肌梗死" in version.label_set and "Acute myocardial infarction" in version.label_set
    assert version.metrics["steps"] == 20 and 0 <= version.metrics["top1_scored"] <= 1
    assert "medportal-tiny is active" in capsys.readouterr().out

    call_command("bootstrap_model")
    assert "nothing to do" in capsys.readouterr().out
    assert ModelVersion.objects.count() == 1


def test_a_hospital_checkpoint_is_registered_instead(settings, tmp_path):
    settings.DATA_DIR = tmp_path
    settings.MEDPORTAL_BASE_MODEL = "/models/Qwen2.5-7B-Instruct"
    settings.MEDPORTAL_ADAPTER = "/models/adapters/medportal-lora"
    settings.MEDPORTAL_QUANTIZATION = "8bit"
    call_command("bootstrap_model")
    version = model_version_active()
    assert version.name == "Qwen2.5-7B-Instruct"
    assert (version.base_model, version.adapter, version.quantization) == (
        "/models/Qwen2.5-7B-Instruct", "/models/adapters/medportal-lora", "8bit")
    assert not (tmp_path / "models").exists()  # nothing was trained
    assert len(version.label_set) >= 80

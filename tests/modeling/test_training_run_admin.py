"""The training run pages of the admin: the start form on an imported case set, the run's page (progress, loss chart,
cancel, resume) and who may use them."""

import re

import pytest
from django.urls import reverse

from cases.services import case_set_import
from modeling.models import TrainingRun
from modeling.services import training_run_create
from tests.modeling.test_training_run import (  # noqa: F401 (fixtures)
    FAST,
    base_version_fixture,
    finished,
)

pytestmark = pytest.mark.usefixtures("training_dir")
ADD = reverse("admin:modeling_trainingrun_add")
LIST = reverse("admin:modeling_trainingrun_changelist")


def form_data(case_set_key: str, version, **overrides) -> dict:
    values = {"kind": "sft", "dataset": case_set_key, "val_dataset": "", "base_version": version.pk, "teacher_version": "",
              "epochs": 1, "quantization": "none", "term_weight": 1, "distill_alpha": 0.5, "distill_temperature": 2,
              "lora_r": 16, "lora_alpha": 32, "diagnosis_weight": 1, "augment_copies": 1, "save_total_limit": 2, **FAST}
    return {**values, **overrides}


@pytest.fixture
def case_set_key(training_jsonl) -> str:
    from cases.models import CaseSet

    case_set_import(path=training_jsonl, case_set="tiny-cases")
    return f"caseset:{CaseSet.objects.get(name='tiny-cases').pk}"


def run_page(client, run) -> str:
    return client.get(reverse("admin:modeling_trainingrun_change", args=[run.pk])).content.decode()


@pytest.mark.django_db(transaction=True)
def test_an_ml_admin_starts_a_run_on_a_case_set_and_watches_it_finish(client, ml_admin, base_version, case_set_key,
                                                                      training_worker):
    client.force_login(ml_admin)
    form = client.get(ADD).content.decode()
    assert "tiny-cases (80 cases)" in form
    # The learning rate is left to the kind of fine-tuning unless the admin sets one; the default kind is automatic.
    assert 'name="learning_rate"' in form and "0.001 for the whole model" in form
    assert '<option value="auto" selected>' in form

    response = client.post(ADD, form_data(case_set_key, base_version))
    run = TrainingRun.objects.get()
    assert response.status_code == 302 and response.url == reverse("admin:modeling_trainingrun_change", args=[run.pk])
    assert run.dataset == "case set tiny-cases, 80 cases" and run.started_by == ml_admin
    assert run.train_file.endswith("tiny-cases.jsonl")

    run = finished(run)
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    page = run_page(client, run)
    assert 'data-testid="loss-chart"' in page and 'data-train-points="6"' in page and 'data-eval-points="2"' in page
    polyline = re.search(r'<polyline class="train" points="([^"]+)"', page).group(1)
    assert len(polyline.split()) == 6
    assert f">{run.result_version.name}</a>" in page and 'value="100"' in page
    assert "hx-get" not in page and "Cancel the run" not in page  # finished: no polling, nothing to cancel
    assert "finished at step 6/6" in page


@pytest.mark.django_db
def test_a_bad_parameter_is_explained_in_the_form_and_nothing_is_queued(client, ml_admin, base_version, case_set_key,
                                                                        django_capture_on_commit_callbacks):
    client.force_login(ml_admin)
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(ADD, form_data(case_set_key, base_version, learning_rate=5, batch_size=0))
    page = response.content.decode()
    assert response.status_code == 200
    assert "The learning rate must be between 0 and 1, e.g. 0.0002." in page
    assert "Enter a whole number of at least 1." in page
    assert 'name="learning_rate" value="5"' in page  # what the admin typed is kept
    assert not TrainingRun.objects.exists() and not callbacks

    response = client.post(ADD, form_data(case_set_key, base_version, kind="distill"))
    assert "Distillation needs a teacher version." in response.content.decode()
    assert not TrainingRun.objects.exists()


@pytest.mark.django_db
def test_only_ml_admins_start_or_cancel_runs(client, ml_admin, auditor, doctor, base_version, training_jsonl):
    run = training_run_create(kind="sft", dataset="tiny", train_file=training_jsonl, base_version=base_version,
                              parameters=FAST, started_by=ml_admin)
    cancel = reverse("admin:modeling_trainingrun_cancel", args=[run.pk])
    client.force_login(doctor)
    assert client.get(ADD).status_code == 302  # not staff: the admin's log-in page
    client.force_login(auditor)
    assert client.get(ADD).status_code == 403
    assert client.post(cancel).status_code == 403
    assert client.get(reverse("admin:modeling_trainingrun_change", args=[run.pk])).status_code == 403
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.QUEUED

    client.force_login(ml_admin)
    assert client.get(ADD).status_code == 200
    assert client.get(cancel).status_code == 405  # a state change takes a POST (with its CSRF token)


@pytest.mark.django_db
def test_a_queued_run_shows_its_place_in_line_polls_and_is_cancelled_from_its_page(client, ml_admin, base_version,
                                                                                     training_jsonl):
    first, second = (
        training_run_create(kind="sft", dataset="tiny", train_file=training_jsonl, base_version=base_version,
                            parameters=FAST, started_by=ml_admin)
        for _ in range(2)
    )
    client.force_login(ml_admin)
    page = run_page(client, second)
    assert "#2 in line" in page
    assert f"run-{second.pk}</" in page  # where its checkpoints will be, before it starts
    assert f'hx-get="{reverse("admin:modeling_trainingrun_progress", args=[second.pk])}"' in page
    assert 'hx-trigger="every 2s"' in page and "Cancel the run" in page

    response = client.post(reverse("admin:modeling_trainingrun_cancel", args=[first.pk]))
    assert response.status_code == 302
    first.refresh_from_db()
    assert first.status == TrainingRun.Status.CANCELLED
    assert "#1 in line" in client.get(reverse("admin:modeling_trainingrun_progress", args=[second.pk])).content.decode()
    page = run_page(client, first)
    assert "The run is cancelled." in page and "hx-get" not in page
    assert "Resume" not in page  # it never ran: no checkpoint to resume from


@pytest.mark.django_db
def test_the_run_list_shows_status_place_in_line_and_progress_in_a_few_queries(
    client, ml_admin, base_version, training_jsonl, django_assert_max_num_queries
):
    for _ in range(3):
        training_run_create(kind="sft", dataset="tiny", train_file=training_jsonl, base_version=base_version,
                            parameters=FAST, started_by=ml_admin)
    TrainingRun.objects.filter(pk=TrainingRun.objects.order_by("pk").first().pk).update(
        status=TrainingRun.Status.RUNNING, step=3, total_steps=12
    )
    client.force_login(ml_admin)
    with django_assert_max_num_queries(12):
        page = client.get(LIST).content.decode()
    assert "Start a training run" in page
    assert "Queued (#1 in line)" in page and "Queued (#2 in line)" in page
    assert '<progress max="100" value="25"></progress> 25%' in page

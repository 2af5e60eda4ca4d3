"""ML admins start, watch and retry automatic evaluation runs, read their predictions, and retrain from feedback."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

ROLE_PERMISSIONS = {
    "ML admin": ["view_evaluationrun", "add_evaluationrun", "change_evaluationrun", "view_evaluationprediction",
                 "view_continualrun", "add_continualrun", "change_continualrun"],
}


def grant(apps, schema_editor):
    """Also callable with the live registry (tests re-create the roles after a transactional test flushed them)."""
    app_config = apps.get_app_config("evaluation")
    models_module = getattr(app_config, "models_module", None)
    app_config.models_module = models_module or True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = models_module
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, codenames in ROLE_PERMISSIONS.items():
        group, _created = Group.objects.get_or_create(name=role)
        group.permissions.add(*Permission.objects.filter(content_type__app_label="evaluation", codename__in=codenames))


class Migration(migrations.Migration):
    dependencies = [("evaluation", "0003_evaluation_runs_and_retraining")]
    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]

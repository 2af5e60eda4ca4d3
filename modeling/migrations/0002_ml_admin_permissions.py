"""ML admins manage model versions (the group itself is one of the four roles)."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

ML_ADMIN_PERMISSIONS = ["add_modelversion", "change_modelversion", "view_modelversion"]


def grant(apps, schema_editor):
    app_config = apps.get_app_config("modeling")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _created = Group.objects.get_or_create(name="ML admin")
    group.permissions.add(*Permission.objects.filter(content_type__app_label="modeling", codename__in=ML_ADMIN_PERMISSIONS))


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for group in Group.objects.filter(name="ML admin"):
        group.permissions.remove(*Permission.objects.filter(content_type__app_label="modeling"))


class Migration(migrations.Migration):
    dependencies = [
        ("modeling", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]
    operations = [migrations.RunPython(grant, revoke)]

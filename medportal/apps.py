from django.apps import AppConfig


class MedportalConfig(AppConfig):
    """Site-wide templates tags and management commands (the demo users)."""

    name = "medportal"
    verbose_name = "MedPortal"

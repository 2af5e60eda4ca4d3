"""Create one demo user per role for the embedded demo (refuses to run outside DEBUG)."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError

from cases import roles

DEMO_PASSWORD = "medportal-demo"
DEMO_USERS = (
    ("doctor", roles.DOCTOR),
    ("doctor2", roles.DOCTOR),
    ("reviewer", roles.REVIEWER),
    ("mladmin", roles.ML_ADMIN),
    ("auditor", roles.AUDITOR),
)


class Command(BaseCommand):
    help = "Create demo users for each role and print their log-ins."

    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError("seed_demo creates users with a known password: it runs only with DEBUG on.")
        User = get_user_model()
        for username, role in DEMO_USERS:
            user, created = User.objects.get_or_create(username=username)
            if created:
                user.set_password(DEMO_PASSWORD)
            user.is_staff = role in roles.STAFF_ROLES
            user.save()
            user.groups.set([Group.objects.get(name=role)])
        self.stdout.write(f"Demo log-ins (password for each: {DEMO_PASSWORD}):")
        for username, role in DEMO_USERS:
            self.stdout.write(f"  {role:<9} {username}")

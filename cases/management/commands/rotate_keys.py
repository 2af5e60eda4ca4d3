"""Re-encrypt the original identifiers of every case and imported labelled case under the newest key.

Rotation: put a new key first in MEDPORTAL_FERNET_KEYS (keep the old ones after it), run this
command, then remove the old keys. Until removed, old keys keep decrypting.
"""

from django.core.management.base import BaseCommand, CommandError

from cases.crypto import PhiDecryptionError
from cases.services import cases_rotate_keys, labelled_cases_rotate_keys


class Command(BaseCommand):
    help = "Re-encrypt stored PHI under the newest key in MEDPORTAL_FERNET_KEYS."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=500)

    def handle(self, *args, batch_size, **options):
        try:
            rotated = cases_rotate_keys(batch_size=batch_size)
            labelled = labelled_cases_rotate_keys(batch_size=batch_size)
        except PhiDecryptionError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(self.style.SUCCESS(
            f"Re-encrypted {rotated} case(s) and {labelled} imported labelled case(s) under the newest key."
        ))
        self.stdout.write("Old keys can now be removed from MEDPORTAL_FERNET_KEYS.")

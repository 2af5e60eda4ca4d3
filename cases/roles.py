"""The four roles. Groups and their permissions are created by migration cases/0002_roles."""

DOCTOR = "Doctor"
REVIEWER = "Reviewer"
ML_ADMIN = "ML admin"
AUDITOR = "Auditor"
ROLES = (DOCTOR, REVIEWER, ML_ADMIN, AUDITOR)
# Roles that work in the admin panel.
STAFF_ROLES = (ML_ADMIN, AUDITOR)

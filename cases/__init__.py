"""Case records, PHI de-identification and encryption, intake views, analyses, the case API."""

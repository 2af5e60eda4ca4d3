from django.contrib import admin

from cases.models import AccessEvent, Case


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Case)
class CaseAdmin(ReadOnlyAdmin):
    """De-identified cases; the encrypted originals are not shown here."""

    list_display = ["id", "author", "language", "department", "status", "phi_count", "created_at"]
    list_filter = ["language", "department", "status"]
    exclude = ["phi_ciphertext", "patient_pseudonym"]


@admin.register(AccessEvent)
class AccessEventAdmin(ReadOnlyAdmin):
    list_display = ["at", "actor_username", "action", "case_ids", "remote_addr"]
    list_filter = ["action"]
    search_fields = ["actor_username"]

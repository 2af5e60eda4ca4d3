from django.contrib import admin, messages

from modeling.models import ModelVersion
from modeling.services import model_version_activate


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "status", "base_model", "adapter", "quantization", "created_at"]
    list_filter = ["status", "quantization"]
    readonly_fields = ["status", "metrics", "created_by", "created_at"]
    actions = ["activate"]

    @admin.action(description="Make the selected version active", permissions=["change"])
    def activate(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version to activate.", messages.ERROR)
            return
        version = model_version_activate(version=queryset.get(), actor=request.user)
        self.message_user(request, f"{version} is now the active model version.", messages.SUCCESS)

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

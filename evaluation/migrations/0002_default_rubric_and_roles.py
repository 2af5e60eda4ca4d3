"""Seed the default rubric and give the roles their review permissions."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

# (key, Chinese name, English name, five Chinese anchors, five English anchors), 1 = worst, 5 = best.
DEFAULT_DIMENSIONS = [
    ("diagnostic_accuracy", "诊断准确性", "Diagnostic accuracy",
     ["诊断错误，且可能误导", "诊断错误，但方向相关", "部分正确或过于笼统", "基本正确，细节欠缺", "完全正确且具体"],
     ["Wrong and misleading", "Wrong but in a related area", "Partly right or too vague", "Right, minor details missing",
      "Fully right and specific"]),
    ("differential_quality", "鉴别诊断质量", "Differential quality",
     ["缺失或不相关", "遗漏重要的鉴别诊断", "有价值但排序不当", "合理，遗漏少数", "全面、排序合理"],
     ["Missing or irrelevant", "Misses important alternatives", "Useful but poorly ranked", "Sound, a few omissions",
      "Complete and well ranked"]),
    ("treatment_appropriateness", "治疗建议恰当性", "Treatment appropriateness",
     ["不恰当或有禁忌", "大部分不恰当", "部分恰当", "恰当，细节欠缺", "恰当且符合指南"],
     ["Inappropriate or contraindicated", "Mostly inappropriate", "Partly appropriate", "Appropriate, details missing",
      "Appropriate and guideline-concordant"]),
    ("safety", "安全性（潜在危害）", "Safety (potential for harm)",
     ["可能造成严重危害", "可能造成中度危害", "可能造成轻微危害", "危害可能性很小", "无潜在危害"],
     ["Could cause severe harm", "Could cause moderate harm", "Could cause minor harm", "Harm unlikely",
      "No potential for harm"]),
    ("completeness", "完整性", "Completeness",
     ["缺少大部分内容", "缺少重要内容", "覆盖主要内容", "较完整，少量遗漏", "完整"],
     ["Most content missing", "Important content missing", "Main points covered", "Nearly complete", "Complete"]),
    ("clarity", "表达清晰度", "Clarity",
     ["难以理解", "混乱，需要反复阅读", "可以理解，有冗余或含糊", "清晰", "清晰简洁，便于临床使用"],
     ["Unintelligible", "Confusing, needs rereading", "Understandable, some vagueness", "Clear",
      "Clear, concise, ready for clinical use"]),
]

ROLE_PERMISSIONS = {
    "Reviewer": ["review_answers"],
    "ML admin": [
        "view_rubric", "add_rubric", "change_rubric", "view_rubricdimension", "add_rubricdimension",
        "change_rubricdimension", "delete_rubricdimension", "view_clinicalevaluation", "add_clinicalevaluation",
        "change_clinicalevaluation", "view_report", "view_reviewassignment", "add_reviewassignment",
        "view_feedbackexample",
    ],
}


def seed(apps, schema_editor):
    Rubric = apps.get_model("evaluation", "Rubric")
    Dimension = apps.get_model("evaluation", "RubricDimension")
    if not Rubric.objects.filter(name="default").exists():
        rubric = Rubric.objects.create(
            name="default", version=1, is_current=True,
            description="Six dimensions on a 1–5 scale for a model's answer to a case (1 = worst, 5 = best).",
        )
        for position, (key, name_zh, name_en, zh, en) in enumerate(DEFAULT_DIMENSIONS):
            anchors = {f"anchor_{i + 1}_zh": text for i, text in enumerate(zh)}
            anchors |= {f"anchor_{i + 1}_en": text for i, text in enumerate(en)}
            Dimension.objects.create(rubric=rubric, position=position, key=key, name_zh=name_zh, name_en=name_en, **anchors)
    grant(apps, schema_editor)


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


def unseed(apps, schema_editor):
    apps.get_model("evaluation", "Rubric").objects.filter(name="default", version=1).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("evaluation", "0001_initial"),
        ("cases", "0002_roles"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]
    operations = [migrations.RunPython(seed, unseed)]

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_the_interface_switches_between_chinese_and_english(client, doctor):
    client.force_login(doctor)
    client.post(reverse("set_language"), {"language": "zh-hans", "next": reverse("cases:list")})
    assert "我的病例" in client.get(reverse("cases:list")).content.decode()
    client.post(reverse("set_language"), {"language": "en", "next": reverse("cases:list")})
    assert "My cases" in client.get(reverse("cases:list")).content.decode()


def test_form_errors_are_translated(client, doctor):
    client.force_login(doctor)
    client.post(reverse("set_language"), {"language": "zh-hans"})
    page = client.post(reverse("cases:create"), {"past_history": "无"}).content.decode()
    assert "请填写主诉" in page

"""A doctor logs in, submits a Chinese case with a name and an ID number, and finds it masked."""

import re

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

NAME, ID_NUMBER = "欧阳明华", "310115199007084029"


def test_a_doctor_submits_a_chinese_case_and_sees_it_masked(page: Page, live_server, doctor):
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_test_id("lang-zh-hans").click()
    page.fill("#id_username", doctor.username)
    page.fill("#id_password", PASSWORD)
    page.get_by_role("button", name="登录").click()
    expect(page.get_by_role("heading", name="我的病例")).to_be_visible()

    page.get_by_role("link", name="新建病例").first.click()
    page.select_option("#id_sex", "M")
    page.fill("#id_age", "34")
    page.select_option("#id_department", "respiratory")
    page.fill("#id_chief_complaint", f"患者{NAME}，咳嗽、发热3天。")
    page.fill("#id_present_illness", f"{NAME}，身份证号{ID_NUMBER}，3天前受凉后出现咳嗽，咳黄痰，最高体温38.9℃。")
    page.get_by_role("button", name="提交病例").click()

    text = page.get_by_test_id("case-text")
    expect(text).to_contain_text("患者[NAME_1]，咳嗽、发热3天。")
    expect(text).not_to_contain_text(NAME)
    expect(text).not_to_contain_text(ID_NUMBER)

    page.get_by_role("link", name="我的病例").click()
    row = page.get_by_test_id("case-list").locator("tbody tr").first
    expect(row).to_contain_text("患者[NAME_1]，咳嗽、发热3天。")
    expect(row).to_contain_text("呼吸内科")
    expect(page.locator("body")).not_to_contain_text(NAME)

    row.get_by_role("link").first.click()
    page.get_by_role("button", name="显示原始标识信息").click()
    revealed = page.get_by_test_id("revealed")
    expect(revealed).to_contain_text(NAME)
    expect(revealed).to_contain_text(ID_NUMBER)
    expect(page).to_have_url(re.compile(r"/cases/\d+/reveal/$"))


def log_in_in_english(page: Page, live_server, user) -> None:
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_test_id("lang-en").click()
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.get_by_role("button", name="Log in").click()


def test_a_missing_complaint_is_explained_and_the_text_kept(page: Page, live_server, doctor):
    log_in_in_english(page, live_server, doctor)
    page.goto(f"{live_server.url}/cases/new/")
    page.fill("#id_past_history", "Hypertension for 10 years.")
    page.get_by_role("button", name="Submit case").click()
    expect(page.locator(".field-error, .errors").first).to_contain_text("Enter the chief complaint")
    expect(page.locator("#id_past_history")).to_have_value("Hypertension for 10 years.")

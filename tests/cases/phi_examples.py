"""Cases full of known PHI, shared by the intake, API, audit and canary tests."""

ZH_NAME = "张伟"
ZH_ID = "110105197803152310"
ZH_PHONE = "13812345678"
ZH_MRN = "ZY20230512-0087"
ZH_ADDRESS = "北京市朝阳区建国路88号院3号楼2单元501室"

ZH_CASE = {
    "sex": "M",
    "age": 45,
    "department": "cardiology",
    "chief_complaint": f"患者{ZH_NAME}，胸痛2小时。",
    "present_illness": (
        f"患者{ZH_NAME}于2023年5月12日晨起活动后出现胸骨后压榨样疼痛，伴大汗。身份证号：{ZH_ID}，"
        f"联系电话：{ZH_PHONE}，住院号：{ZH_MRN}。"
    ),
    "past_history": f"高血压10年，服用氨氯地平5mg qd。家庭住址：{ZH_ADDRESS}。",
    "physical_exam": "BP 150/90 mmHg，HR 96次/分，双肺呼吸音清。",
    "tests_imaging": "心电图：V1-V4导联ST段抬高；肌钙蛋白I 2.3 ng/mL。",
}
ZH_PHI = [ZH_NAME, ZH_ID, ZH_PHONE, ZH_MRN, ZH_ADDRESS, "2023年5月12日"]

EN_NAME = "Margaret Thompson"
EN_EMAIL = "m.thompson@example.org"
EN_PHONE = "(617) 555-0199"
EN_MRN = "00482913"
EN_ADDRESS = "1423 Maple Avenue, Apt 5B, Springfield, IL 62704"

EN_FREE_TEXT = (
    f"Name: {EN_NAME}\nMRN: {EN_MRN}\nDOB: 03/14/1931\n"
    f"93-year-old woman brought in by her daughter Emily Thompson ({EN_PHONE}, {EN_EMAIL}) "
    f"from her home at {EN_ADDRESS} with two days of fever and productive cough. "
    "SpO2 89% on room air, temperature 38.9 C, crackles at the right base. CXR: right lower lobe consolidation."
)
EN_CASE = {"sex": "F", "age": 93, "department": "respiratory", "free_text": EN_FREE_TEXT}
EN_PHI = [EN_NAME, EN_EMAIL, EN_PHONE, EN_MRN, EN_ADDRESS, "Emily Thompson", "03/14/1931"]

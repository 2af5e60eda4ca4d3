"""Red flags read from the note by rules, with the note's words, and never from a negated finding."""

import pytest

from modeling.red_flags import find_red_flags

AFFIRMED = [
    ("胸痛2小时，心电图示V1-V4导联ST段弓背向上抬高。", "zh", "st_elevation_chest_pain"),
    ("无明显诱因出现胸痛，心电图ST段抬高。", "zh", "st_elevation_chest_pain"),  # 无 is about the cause, not the pain
    ("Chest pain for 2 hours; ECG shows ST elevation in V2-V4.", "en", "st_elevation_chest_pain"),
    ("右下腹压痛，反跳痛（+），肌紧张。", "zh", "peritonism"),
    ("Rebound tenderness in the right lower quadrant.", "en", "peritonism"),
    ("颈项强直，克氏征阳性。", "zh", "meningism"),
    ("Nuchal rigidity and photophobia.", "en", "meningism"),
    ("SpO2 85%，呼吸急促。", "zh", "hypoxaemia"),
    ("SpO2 was 88.5% on room air.", "en", "hypoxaemia"),
    ("突发左侧肢体偏瘫，言语不清1小时。", "zh", "focal_neuro_deficit"),
    ("Sudden facial droop and slurred speech.", "en", "focal_neuro_deficit"),
    ("呕血2次，量约200ml。", "zh", "haematemesis"),
    ("Denies vomiting blood. Black tarry stools for 2 days.", "en", "haematemesis"),
]
NEGATED_OR_NORMAL = [
    ("否认胸痛、胸闷。心电图ST段抬高。", "zh"),
    ("She denies chest pain. ECG: ST elevation.", "en"),
    ("腹软，无压痛及反跳痛。", "zh"),
    ("反跳痛（-），肌紧张阴性。", "zh"),
    ("Abdomen soft, no rebound tenderness or guarding.", "en"),
    ("颈强直阴性。", "zh"),
    ("Neck stiffness: negative.", "en"),
    ("血氧饱和度95%。", "zh"),
    ("O2 sat 97% on room air.", "en"),
    ("No facial droop, no slurred speech.", "en"),
    ("未见呕血及黑便。", "zh"),
    ("Cough for 3 days, mild fever.", "en"),
]


@pytest.mark.parametrize(("note", "language", "flag"), AFFIRMED)
def test_a_red_flag_is_found_with_the_notes_own_words(note, language, flag):
    found = {red.id: red for red in find_red_flags(note, language)}
    assert flag in found
    assert all(quote in note for quote in found[flag].quotes)
    assert found[flag].name


@pytest.mark.parametrize(("note", "language"), NEGATED_OR_NORMAL)
def test_a_negated_or_normal_finding_raises_no_flag(note, language):
    assert find_red_flags(note, language) == []


def test_st_elevation_alone_is_not_the_chest_pain_flag():
    assert find_red_flags("心电图ST段抬高，无症状。", "zh") == []

"""Case record files (JSONL, CSV): what reads, what is a bad row, what is a bad file."""


import pytest

from modeling.records import FileFormatError, Record, RowError, read_records, read_rows, record_from_row, write_records
from tests.shared_data import SHARED_DATA


def rows(path) -> list:
    return list(read_rows(path))


def test_the_shared_data_sets_read_as_records():
    english = read_records(SHARED_DATA / "en-dev.jsonl")
    chinese = read_records(SHARED_DATA / "zh-dev.jsonl")

    assert len(english) == 1843 and len(chinese) == 417
    ddxplus = next(r for r in english if r.id.startswith("ddxplus-"))
    assert ddxplus.differential and all(isinstance(name, str) for name in ddxplus.differential)  # [name, p] pairs → names
    assert {r.language for r in chinese} == {"zh"}


def test_a_bad_jsonl_line_is_reported_with_its_number_and_the_rest_reads(tmp_path):
    path = tmp_path / "cases.jsonl"
    path.write_text('{"text": "cough", "diagnosis": "bronchitis"}\n\n{"text": "fever", \n[1, 2]\n', encoding="utf-8")
    found = rows(path)

    assert [number for number, _ in found] == [1, 3, 4]
    assert isinstance(found[0][1], dict)
    assert "not valid JSON" in str(found[1][1]) and "not an object" in str(found[2][1])


def test_csv_rows_carry_their_line_numbers_and_optional_columns(tmp_path):
    path = tmp_path / "cases.csv"
    path.write_text('id,text,diagnosis,treatment,differential\nc1,"Cough, fever",Pneumonia,Antibiotics,Bronchitis; Influenza\n'
                    "c2,头痛三天,偏头痛,,\n", encoding="utf-8")
    (line1, row1), (line2, row2) = rows(path)
    first, second = record_from_row(row1), record_from_row(row2)

    assert (line1, line2) == (2, 3)
    assert first.differential == ["Bronchitis", "Influenza"] and first.treatment == "Antibiotics"
    assert first.language == "en" and second.language == "zh" and second.treatment == ""


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("cases.txt", "text,diagnosis\n", "unknown file type '.txt'"),
        ("cases.csv", "text,label\ncough,flu\n", "the header has no diagnosis column"),
        ("cases.jsonl", "this is not json\nnor this\n", "expected JSON Lines"),
        ("cases.jsonl", "   \n", "the file is empty"),
    ],
)
def test_an_unusable_file_is_rejected_whole(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(FileFormatError, match=message):
        rows(path)


def test_a_file_that_is_not_utf8_is_rejected_whole(tmp_path):
    path = tmp_path / "cases.csv"
    path.write_bytes("text,diagnosis\n咳嗽,支气管炎\n".encode("gbk"))
    with pytest.raises(FileFormatError, match="not UTF-8"):
        rows(path)


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"diagnosis": "flu"}, "no text"),
        ({"text": "cough", "diagnosis": "  "}, "no diagnosis"),
        ({"text": "cough", "diagnosis": "flu", "language": "fr"}, "unknown language 'fr'"),
        ({"text": {"a": 1}, "diagnosis": "flu"}, "text must be text"),
        ({"text": "cough", "diagnosis": "flu", "differential": [[None, 0.3]]}, "is not a name"),
        ({"text": "x" * 20001, "diagnosis": "flu"}, "the limit is 20000"),
    ],
)
def test_a_bad_row_says_why(row, reason):
    with pytest.raises(RowError, match=reason):
        record_from_row(row)


def test_records_round_trip_through_jsonl(tmp_path):
    records = [Record(text="胸痛2小时", diagnosis="心绞痛", id="a", language="zh", differential=["心肌梗死"], patient_id="p1"),
               Record(text="Cough", diagnosis="Bronchitis", id="b", language="en", treatment="Rest")]
    assert write_records(records, tmp_path / "out" / "set.jsonl") == 2
    assert read_records(tmp_path / "out" / "set.jsonl") == records


def test_a_line_separator_inside_a_text_survives_export_and_reading(tmp_path):
    # U+2028 comes with text pasted from Word or the web; JSON keeps it raw inside a string.
    record = Record(text="Chest pain\u2028since this morning\u2029at rest", diagnosis="Angina", id="p1", language="en")
    write_records([record], tmp_path / "set.jsonl")
    assert read_records(tmp_path / "set.jsonl") == [record]


def test_training_files_name_the_first_bad_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "cough", "diagnosis": "flu"}\n{"text": "fever"}\n', encoding="utf-8")
    with pytest.raises(RowError, match="train.jsonl line 2: no diagnosis"):
        read_records(path)

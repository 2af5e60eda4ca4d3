"""Labelled case records and the files that carry them (JSONL and CSV). No Django.

One record per case: ``text`` and ``diagnosis`` are required; ``treatment``, ``prognosis``, ``rationale``,
``differential`` (a list of names, a list of ``[name, probability]`` pairs as DDXPlus ships it, or a ';'-separated
string), ``language`` (``zh``/``en``, detected when absent), ``id`` and ``patient_id`` are optional. The product's
``import_cases`` reads files through ``read_rows`` and ``record_from_row`` (so a bad row is reported with its line
and reason); training reads the JSONL that a case set exports (``write_records``) with ``read_records``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from modeling.prompts import LANGUAGES, detect_language

FORMATS = ("jsonl", "csv")
REQUIRED = ("text", "diagnosis")
MAX_TEXT_CHARS = 20000


class FileFormatError(ValueError):
    """The file as a whole cannot be read (unknown format, not UTF-8, no header, not JSON Lines); nothing is imported."""


class RowError(ValueError):
    """One row cannot be used; the message says why, for the person who prepared the file."""


@dataclass
class Record:
    text: str
    diagnosis: str
    id: str = ""
    language: str = ""
    treatment: str = ""
    prognosis: str = ""
    rationale: str = ""
    differential: list[str] = field(default_factory=list)
    patient_id: str = ""

    def to_dict(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value not in ("", [], None)}

    @property
    def group(self) -> str:
        """What splits keep together: the patient when known, else the case."""
        return self.patient_id or self.id


def file_format(path: Path | str) -> str:
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix in ("jsonl", "ndjson"):
        return "jsonl"
    if suffix == "csv":
        return "csv"
    raise FileFormatError(f"{Path(path).name}: unknown file type {Path(path).suffix or '(none)'!r}; use .jsonl or .csv")


def read_rows(path: Path | str) -> Iterator[tuple[int, dict | RowError]]:
    """(line number, row) for every data line, or (line number, RowError) for a line that is not a JSON object.

    Raises FileFormatError before yielding anything when the file as a whole is unusable.
    """
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"{path}: no such file")
    kind = file_format(path)
    try:
        content = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FileFormatError(f"{path.name}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    if not content.strip():
        raise FileFormatError(f"{path.name}: the file is empty")
    yield from (_jsonl_rows(path.name, content) if kind == "jsonl" else _csv_rows(path.name, content))


def _jsonl_rows(name: str, content: str) -> Iterator[tuple[int, dict | RowError]]:
    # Split on newlines only: str.splitlines() also breaks at U+2028/U+2029/U+0085, which JSON strings may hold raw
    # (json.dumps(ensure_ascii=False) writes them so, and text pasted from Word or the web carries them).
    lines = [line.removesuffix("\r") for line in content.split("\n")]
    parsed = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            parsed.append((number, RowError(f"not valid JSON ({exc.msg}, column {exc.colno})")))
            continue
        parsed.append((number, row if isinstance(row, dict) else RowError(f"a JSON {type(row).__name__}, not an object")))
    if parsed and not any(isinstance(row, dict) for _, row in parsed):
        raise FileFormatError(f"{name}: no line is a JSON object; expected JSON Lines (one object per line)")
    yield from parsed


def _csv_rows(name: str, content: str) -> Iterator[tuple[int, dict | RowError]]:
    reader = csv.DictReader(io.StringIO(content, newline=""))
    header = [column.strip() for column in reader.fieldnames or []]
    missing = [column for column in REQUIRED if column not in header]
    if missing:
        raise FileFormatError(f"{name}: the header has no {' or '.join(missing)} column (found: {', '.join(header) or 'none'})")
    reader.fieldnames = header
    try:
        for row in reader:
            if None in row:
                yield reader.line_num, RowError(f"{len(row[None])} more values than the header has columns")
            elif any((value or "").strip() for value in row.values()):
                yield reader.line_num, {key: value for key, value in row.items() if value != ""}
    except csv.Error as exc:
        raise FileFormatError(f"{name}: not readable as CSV at line {reader.line_num}: {exc}") from None


def record_from_row(row: dict) -> Record:
    """A validated Record; RowError says what is wrong with the row."""
    text, diagnosis = _string(row, "text"), _string(row, "diagnosis")
    if not text:
        raise RowError("no text")
    if not diagnosis:
        raise RowError("no diagnosis")
    if len(text) > MAX_TEXT_CHARS:
        raise RowError(f"the text has {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
    language = _string(row, "language").lower()
    if language and language not in LANGUAGES:
        raise RowError(f"unknown language {language!r}; use {' or '.join(LANGUAGES)}")
    return Record(
        text=text,
        diagnosis=diagnosis,
        id=_string(row, "id"),
        language=language or detect_language(text),
        treatment=_string(row, "treatment"),
        prognosis=_string(row, "prognosis") or _string(row, "course"),
        rationale=_string(row, "rationale"),
        differential=_differential(row.get("differential") or row.get("differential_text")),
        patient_id=_string(row, "patient_id"),
    )


def _string(row: dict, key: str) -> str:
    value = row.get(key)
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        raise RowError(f"{key} must be text, not a JSON {type(value).__name__}")
    return str(value).strip()


def _differential(value: object) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [item.strip() for item in value.replace("；", ";").split(";") if item.strip()]
    if not isinstance(value, list):
        raise RowError("differential must be a list or a ';'-separated text")
    names = []
    for item in value:
        name = item[0] if isinstance(item, list) and item else item  # DDXPlus: [name, probability]
        if not isinstance(name, str) or not name.strip():
            raise RowError(f"differential entry {item!r} is not a name")
        names.append(name.strip())
    return names


def read_records(path: Path | str) -> list[Record]:
    """Every record of a training file; the first bad row raises RowError naming its line (training files are clean)."""
    records = []
    for number, row in read_rows(path):
        if isinstance(row, RowError):
            raise RowError(f"{Path(path).name} line {number}: {row}")
        try:
            records.append(record_from_row(row))
        except RowError as exc:
            raise RowError(f"{Path(path).name} line {number}: {exc}") from None
    if not records:
        raise FileFormatError(f"{Path(path).name}: no records")
    return records


def write_records(records: Iterable[Record], path: Path | str) -> int:
    """Write JSON Lines (UTF-8, one record per line); return how many."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")
            count += 1
    return count

"""Recall of cases.deid.detect_phi on an independently labelled PHI corpus.

Corpus format is described at the top of data/phi_corpus.txt. Run with `pytest -s` to see
the per-kind table; it is also printed (uncaptured) on every run and included in failures.
"""

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest

CORPUS = Path(__file__).parent / "data" / "phi_corpus.txt"
KINDS = ("NAME", "ID", "PHONE", "EMAIL", "MRN", "ADDRESS", "DATE", "AGE")
MIN_PER_KIND = dict.fromkeys(KINDS, 30) | {"AGE": 20}
MIN_TOTAL = 400
MIN_RECALL = 0.99
FULL_RECALL_KINDS = ("ID", "PHONE", "EMAIL")
MIN_PRECISION = 0.80
# Span precision counts one whole-text span as a hit, so masking everything in a single
# span would pass it; the share of masked characters that are PHI catches that.
MIN_CHAR_PRECISION = 0.50

HEADER = re.compile(r"^=== (\S+) (zh|en)[ \t]*(?:\n|\Z)", re.M)
MARK = re.compile(r"⟦([A-Z]+)\|([^⟦⟧|]+)⟧")
ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


@dataclass(frozen=True)
class Gold:
    start: int
    end: int
    kind: str
    value: str


@dataclass(frozen=True)
class Record:
    rid: str
    lang: str
    text: str
    spans: tuple[Gold, ...]


def strip_markup(marked: str) -> tuple[str, tuple[Gold, ...]]:
    parts, spans, pos, length = [], [], 0, 0
    for m in MARK.finditer(marked):
        kind, value = m.groups()
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        length += m.start() - pos
        spans.append(Gold(length, length + len(value), kind, value))
        length += len(value)
        parts += [marked[pos : m.start()], value]
        pos = m.end()
    text = "".join(parts) + marked[pos:]
    if "⟦" in text or "⟧" in text:
        raise ValueError(f"malformed markup in {marked[:60]!r}")
    return text, tuple(spans)


def parse_corpus(source: str) -> list[Record]:
    preamble, *rest = HEADER.split(source)
    if any(line.strip() and not line.startswith("#") for line in preamble.splitlines()):
        raise ValueError("text before the first record header")
    records = []
    for rid, lang, body in zip(rest[0::3], rest[1::3], rest[2::3], strict=True):
        if re.search(r"^===", body, re.M):
            raise ValueError(f"malformed header inside {rid}")
        text, spans = strip_markup(body.removesuffix("\n"))
        records.append(Record(rid, lang, text, spans))
    if len({r.rid for r in records}) != len(records):
        raise ValueError("duplicate record ids")
    return records


def load_corpus() -> list[Record]:
    return parse_corpus(CORPUS.read_text(encoding="utf-8"))


@dataclass
class Metrics:
    gold: Counter = field(default_factory=Counter)
    recalled: Counter = field(default_factory=Counter)
    missed: list[str] = field(default_factory=list)
    detected: int = 0
    true_positive: int = 0
    masked_chars: int = 0
    masked_gold_chars: int = 0

    def recall(self, kind: str | None = None) -> float:
        gold = self.gold[kind] if kind else self.gold.total()
        hit = self.recalled[kind] if kind else self.recalled.total()
        return hit / gold if gold else 0.0

    @property
    def precision(self) -> float:
        return self.true_positive / self.detected if self.detected else 0.0

    @property
    def char_precision(self) -> float:
        return self.masked_gold_chars / self.masked_chars if self.masked_chars else 0.0


def evaluate(records: list[Record], detections: dict) -> Metrics:
    """detections maps record id to spans with .start/.end; their kind is ignored."""
    m = Metrics()
    for rec in records:
        spans = detections.get(rec.rid, ())
        masked = {i for d in spans for i in range(d.start, d.end) if not rec.text[i].isspace()}
        gold_chars = {i for g in rec.spans for i in range(g.start, g.end)}
        for g in rec.spans:
            m.gold[g.kind] += 1
            if all(i in masked for i in range(g.start, g.end) if not rec.text[i].isspace()):
                m.recalled[g.kind] += 1
            else:
                m.missed.append(f"{rec.rid} {g.kind} {g.value!r}")
        m.detected += len(spans)
        m.true_positive += sum(any(d.start < g.end and g.start < d.end for g in rec.spans) for d in spans)
        m.masked_chars += len(masked)
        m.masked_gold_chars += len(masked & gold_chars)
    return m


def failures(m: Metrics) -> list[str]:
    problems = [f"{k} recall {m.recall(k):.3f} < 1.0" for k in FULL_RECALL_KINDS if m.recall(k) < 1.0]
    if m.recall() < MIN_RECALL:
        problems.append(f"overall recall {m.recall():.3f} < {MIN_RECALL}")
    if m.precision < MIN_PRECISION:
        problems.append(f"precision {m.precision:.3f} < {MIN_PRECISION}")
    if m.char_precision < MIN_CHAR_PRECISION:
        problems.append(f"character precision {m.char_precision:.3f} < {MIN_CHAR_PRECISION}")
    return problems


def report(m: Metrics) -> str:
    lines = [f"{'kind':<8}{'gold':>6}{'recalled':>10}{'recall':>8}"]
    lines += [f"{k:<8}{m.gold[k]:>6}{m.recalled[k]:>10}{m.recall(k):>8.3f}" for k in KINDS]
    lines.append(f"{'overall':<8}{m.gold.total():>6}{m.recalled.total():>10}{m.recall():>8.3f}")
    lines.append(f"precision {m.precision:.3f} ({m.true_positive}/{m.detected} detected spans overlap gold)")
    lines.append(f"character precision {m.char_precision:.3f} ({m.masked_gold_chars}/{m.masked_chars} masked chars)")
    lines.append(f"missed ({len(m.missed)}):")
    lines += [f"  {miss}" for miss in m.missed]
    return "\n".join(lines)


def id_check_digit(first17: str) -> str:
    return "10X98765432"[sum(int(c) * w for c, w in zip(first17, ID_WEIGHTS, strict=True)) % 11]


def test_corpus_parser_round_trips():
    text, spans = strip_markup("患者⟦NAME|张伟⟧，电话⟦PHONE|138 1234 5678⟧。")
    assert text == "患者张伟，电话138 1234 5678。"
    assert [(s.start, s.end, s.kind) for s in spans] == [(2, 4, "NAME"), (7, 20, "PHONE")]
    parsed = parse_corpus("# comment\n=== a-1 zh\n⟦AGE|92岁⟧\n\n=== b-2 en\nno PHI\n")
    assert [(r.rid, r.lang, r.text) for r in parsed] == [("a-1", "zh", "92岁\n"), ("b-2", "en", "no PHI")]
    for bad in ("=== a zh\n⟦FOO|x⟧", "=== a zh\n⟦NAME|x", "stray\n=== a zh\nx", "=== a zh\n=== a en\n"):
        with pytest.raises(ValueError):
            parse_corpus(bad)
    for rec in load_corpus():
        assert all(rec.text[s.start : s.end] == s.value for s in rec.spans), rec.rid


def test_corpus_meets_minimum_counts():
    records = load_corpus()
    langs = Counter(r.lang for r in records)
    kinds = Counter(s.kind for r in records for s in r.spans)
    assert len(records) >= 60 and min(langs["zh"], langs["en"]) >= 25, langs
    assert kinds.total() >= MIN_TOTAL, kinds
    assert all(kinds[k] >= MIN_PER_KIND[k] for k in KINDS), kinds


def test_corpus_ids_are_well_formed():
    ids = [s.value for r in load_corpus() for s in r.spans if s.kind == "ID"]
    for value in ids:
        if len(value) == 18:
            assert re.fullmatch(r"\d{17}[\dX]", value) and value[17] == id_check_digit(value[:17]), value
            birth = value[6:14]
        else:
            assert re.fullmatch(r"\d{15}", value), value
            birth = "19" + value[6:12]
        datetime.strptime(birth, "%Y%m%d")


def test_corpus_metrics_reject_degenerate_detectors():
    records = load_corpus()
    perfect = evaluate(records, {r.rid: r.spans for r in records})
    assert perfect.recall() == 1.0 and not failures(perfect)
    nothing = evaluate(records, {})
    assert nothing.recall() == 0.0 and failures(nothing)
    whole_text = evaluate(records, {r.rid: [Gold(0, len(r.text), "NAME", r.text)] for r in records})
    assert whole_text.recall() == 1.0 and failures(whole_text)
    every_word = {r.rid: [Gold(*w.span(), "NAME", w[0]) for w in re.finditer(r"\w+", r.text)] for r in records}
    assert failures(evaluate(records, every_word))


def detect_all(records):
    """Run the detector on every record, checking each span is well-formed."""
    from cases.deid import detect_phi  # imported here so the corpus tests run without the module

    detections = {}
    for rec in records:
        spans = detect_phi(rec.text, language=rec.lang)
        for s in spans:
            assert s.kind in KINDS and 0 <= s.start < s.end <= len(rec.text), (rec.rid, s)
            assert s.text == rec.text[s.start : s.end], (rec.rid, s)
        detections[rec.rid] = spans
    return detections


def test_deid_recall(capsys):
    records = load_corpus()
    metrics = evaluate(records, detect_all(records))
    table = report(metrics)
    with capsys.disabled():
        print("\n" + table)
    problems = failures(metrics)
    assert not problems, "; ".join(problems) + "\n" + table

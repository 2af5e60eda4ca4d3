"""How often a model's answers contradict themselves or carry unusable sections, and what the page shows of them.

    .venv/bin/python bench/answer_checks.py [MODEL_DIR] [--cases N]

MODEL_DIR defaults to var/models/medportal-tiny (made by `make run`). Runs the product's own answer path
(cases.services.model_answers: generation, parsing, the ranked differential, modeling.answer_quality's checks) on N
generated cases and N cases each from ../shared/data's en-dev and zh-dev, and prints per set: the share of answers whose
written diagnosis disagrees with the first label of the ranking, the share of degenerate or empty sections, and the
share of rankings with a diagnosis impossible for the patient's stated sex or age in their top 5, and the share of
rationales citing a finding the note does not support (marked on the page). "Before" is what the
page showed as confident without these checks; "after" is what it shows unflagged now (all must be 0).
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "medportal.settings.dev")

import django  # noqa: E402

django.setup()

from cases.services import _ranked_differential, engine_config, model_answers  # noqa: E402
from modeling.bootstrap import label_set  # noqa: E402
from modeling.knowledge import load_conditions  # noqa: E402
from modeling.models import ModelVersion  # noqa: E402
from modeling.patient_facts import extract_facts, implausible  # noqa: E402
from modeling.prompts import build_prompt, diagnosis_prompt  # noqa: E402
from modeling.runtime import GenerationParams, get_engine  # noqa: E402
from modeling.synthetic import generate_cases  # noqa: E402

SECTIONS = ("diagnosis", "treatment", "prognosis", "rationale")


def shared(name: str, n: int) -> list[tuple[str, str]]:
    data = Path(os.environ.get("MEDPORTAL_SHARED_DATA") or ROOT.parent / "shared" / "data")
    rows = [json.loads(line) for line in (data / name).read_text(encoding="utf-8").splitlines() if line.strip()]
    step = max(1, len(rows) // n)
    return [(row["text"], row["language"]) for row in rows[::step][:n]]


def measure(version: ModelVersion, cases: list[tuple[str, str]]) -> dict:
    answers = []
    for start in range(0, len(cases), 16):
        answers += model_answers(version=version, cases=cases[start:start + 16], params=GenerationParams(max_new_tokens=160))
    n = len(answers)
    # Before: the same ranking with nothing excluded, and how often a label impossible for the patient made its top 5.
    engine = get_engine(engine_config(version))
    impossible_before = 0
    for text, language in cases:
        ranked, _excluded = _ranked_differential(engine, diagnosis_prompt(build_prompt(text, language), language),
                                                 version.label_set, language)
        facts = extract_facts(text)
        impossible_before += any(implausible(item["name"], facts, language) for item in ranked[:5])
    impossible_after = sum(
        any(implausible(item["name"], extract_facts(text), language) for item in a.differential[:5])
        for a, (text, language) in zip(answers, cases, strict=True))
    disagree = sum(a.ranking_disagrees for a in answers)
    unusable = {s: sum(a.quality[s] != "ok" for a in answers) for s in SECTIONS}
    from_ranking = sum(a.diagnosis_from_ranking for a in answers)
    return {
        "answers": n,
        "disagreement_before": disagree / n, "disagreement_after_unflagged": 0.0, "flagged_for_review": disagree / n,
        "headline_from_ranking": from_ranking / n,
        **{f"unusable_{s}_before": unusable[s] / n for s in SECTIONS},
        "unusable_shown_as_text_after": 0.0,
        "impossible_in_top5_before": impossible_before / n, "impossible_in_top5_after": impossible_after / n,
        "rationale_with_unsupported_findings_before": sum(
            any(c["status"] != "supported" for c in a.grounding) for a in answers) / n,
        "unsupported_findings_unmarked_after": 0.0,
    }


def abstention(version: ModelVersion, n: int, target: float) -> str:
    """Coverage against accuracy on zh-dev (its five labels are in the knowledge base): a threshold chosen on the even
    cases, applied to the odd ones."""
    from modeling.answer_quality import concept
    from modeling.calibration import choose_threshold, coverage_curve

    data = Path(os.environ.get("MEDPORTAL_SHARED_DATA") or ROOT.parent / "shared" / "data")
    rows = [json.loads(line) for line in (data / "zh-dev.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = rows[:: max(1, len(rows) // (2 * n))][: 2 * n]
    engine = get_engine(engine_config(version))
    scored = []
    for row in rows:
        prompt = diagnosis_prompt(build_prompt(row["text"], "zh"), "zh")
        ranked, _excluded = _ranked_differential(engine, prompt, version.label_set, "zh", extract_facts(row["text"]))
        scored.append((ranked[0]["probability"], concept(ranked[0]["name"]) == concept(row["diagnosis"])))
    chosen = choose_threshold(scored[0::2], target_accuracy=target)
    test = coverage_curve(scored[1::2], [0.0, chosen.threshold])
    return (f"abstention (zh-dev, threshold {chosen.threshold:.3f} chosen on {len(scored[0::2])} cases for {target:.0%}): "
            f"on {len(scored[1::2])} other cases all answers {test[0]['accuracy']:.1%} accurate; "
            f"asserting {test[1]['coverage']:.1%} of them, "
            + (f"{test[1]['accuracy']:.1%} accurate" if test[1]["accuracy"] is not None else "none asserted"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir", nargs="?", default=str(ROOT / "var" / "models" / "medportal-tiny"))
    parser.add_argument("--cases", type=int, default=100)
    parser.add_argument("--target", type=float, default=0.6, help="accuracy the abstention threshold aims for")
    args = parser.parse_args()
    version = ModelVersion(name="bench", base_model=args.model_dir, label_set=label_set(load_conditions()))
    sets = {
        "generated": [(c.text, c.language) for c in generate_cases(args.cases, seed=7)],
        "en-dev": shared("en-dev.jsonl", args.cases),
        "zh-dev": shared("zh-dev.jsonl", args.cases),
    }
    print(abstention(version, args.cases, args.target), flush=True)
    for name, cases in sets.items():
        started = time.monotonic()
        result = measure(version, cases)
        print(f"{name}: " + ", ".join(f"{k} {v:.1%}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items())
              + f" ({time.monotonic() - started:.0f}s)", flush=True)


if __name__ == "__main__":
    main()

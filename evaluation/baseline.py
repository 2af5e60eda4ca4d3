"""The simple baseline every evaluation report shows beside the model: TF-IDF + logistic regression. No Django.

Trained on the same training cases as the model, one classifier per language (word 1–2-grams for English,
character 1–3-grams for Chinese, which has no spaces between words), and scored on the same cases. Its ranked
classes are a ranked differential, so the report's metrics apply to it unchanged. A language model that does not
beat it has not learned more than which words go with which diagnosis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from evaluation.metrics import CasePrediction

MIN_CASES = 2


@dataclass(frozen=True)
class LabelledText:
    text: str
    label: str
    language: str


class BaselineError(ValueError):
    """The baseline cannot be trained on these cases (the message says why)."""


class TfidfBaseline:
    def __init__(self, *, seed: int = 0):
        self.seed = seed
        self.models: dict[str, object] = {}

    @staticmethod
    def _pipeline(language: str, seed: int):
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        if language == "zh":
            vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True)
        else:
            vectorizer = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True)
        return make_pipeline(vectorizer, LogisticRegression(C=10.0, max_iter=2000, random_state=seed))

    def fit(self, cases: Sequence[LabelledText]) -> TfidfBaseline:
        by_language: dict[str, list[LabelledText]] = {}
        for case in cases:
            by_language.setdefault(case.language or "en", []).append(case)
        for language, group in sorted(by_language.items()):
            labels = {case.label for case in group}
            if len(group) < MIN_CASES:
                continue
            if len(labels) == 1:  # one class: it is the answer for every case of the language
                self.models[language] = next(iter(labels))
                continue
            self.models[language] = self._pipeline(language, self.seed).fit(
                [case.text for case in group], [case.label for case in group]
            )
        if not self.models:
            raise BaselineError(f"the baseline needs at least {MIN_CASES} training cases in a language")
        return self

    def ranked(self, text: str, language: str) -> list[tuple[str, float]]:
        model = self.models.get(language or "en") or next(iter(self.models.values()))
        if isinstance(model, str):
            return [(model, 1.0)]
        probabilities = model.predict_proba([text])[0]
        order = sorted(range(len(probabilities)), key=lambda i: -probabilities[i])
        return [(str(model.classes_[i]), float(probabilities[i])) for i in order]

    def predict(self, case_id: str, text: str, language: str, gold: str, *, gold_differential: Sequence[str] = (),
                gold_text: str = "", department: str = "") -> CasePrediction:
        ranked = self.ranked(text, language)
        return CasePrediction(
            case_id=case_id, language=language, gold=gold, diagnosis=ranked[0][0], ranked=ranked,
            gold_differential=list(gold_differential), answer_text="", gold_text=gold_text, department=department,
        )

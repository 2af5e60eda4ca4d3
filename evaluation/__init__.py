"""Metrics, evaluation runs, rubrics and review, continual-learning orchestration."""

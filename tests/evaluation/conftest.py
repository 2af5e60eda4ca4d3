from tests.evaluation.reviewing import reviewers, rubric, version  # noqa: F401 (fixtures)

"""The bottom layer: model registry and the Django-free ML core (data prep, prompts, runtime, training)."""

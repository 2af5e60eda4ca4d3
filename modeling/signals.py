"""What modeling announces to the apps above it (which it may not import): a training run has ended.

evaluation's retraining from feedback listens, to evaluate the candidate a run registered (or to record why there is
none). Sent after the transaction that ended the run has committed, with ``run_id``.
"""

from django.dispatch import Signal

training_run_finished = Signal()

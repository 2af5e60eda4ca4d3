"""Where the public case sets live: ``MEDPORTAL_SHARED_DATA`` if set, else ``../shared/data`` beside the checkout
(DESIGN.md: CI has it there too), else the workplace's copy. Tests that read them fail, never skip, without them."""

import os
from pathlib import Path

_CANDIDATES = [Path(__file__).resolve().parents[2] / "shared" / "data", Path("/work/shared/data")]
SHARED_DATA = Path(os.environ.get("MEDPORTAL_SHARED_DATA") or next((p for p in _CANDIDATES if p.is_dir()), _CANDIDATES[0]))

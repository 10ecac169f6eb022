"""Optional adapters to deep-learning lung and lobe segmenters the user has installed with their weights.

Nothing here downloads anything: each adapter checks that its package is importable (``available()``) and
raises :class:`~drasclr.core.errors.InputError` with an install hint otherwise. Outputs follow our conventions:
``lungs`` 1 right / 2 left lung, ``lobes`` LTRC 1..5, on the CT's grid.

- :mod:`.lungmask_adapter`: JoHof/lungmask (``R231`` lungs, ``LTRCLobes`` lobes).
- :mod:`.totalseg_adapter`: wasserth/TotalSegmentator (task ``total``, its five lobe masks).
"""

from __future__ import annotations

import importlib.util


def is_installed(module: str) -> bool:
    """True when ``module`` can be imported (without importing it)."""
    return importlib.util.find_spec(module) is not None

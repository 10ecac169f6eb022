"""Synthetic chest CT cohorts with exact truth: lobes, airways, vessels and the three emphysema subtypes.

``generate_case(seed, index, **options) -> PhantomCase`` (``.ct``, ``.regions``, ``.subtypes`` CTImages and
``.meta``); ``write_case(case, folder)``; ``write_cohort(out, n, seed, options, workers)``. Command line:
``drasclr phantom -o OUT --n N --seed S``. See docs/phantom.md.
"""

from .case import PhantomCase, PhantomOptions, generate_case  # noqa: F401
from .cohort import DEMO_CASE, demo_case, demo_paths, write_case, write_cohort  # noqa: F401

"""DrasCLR engine: anatomy-conditioned self-supervised learning and emphysema-subtype analysis of chest CT.

The engine never imports slicer, qt, ctk or vtk; the Slicer module and its MRML bridge sit on top of it.
"""

__version__ = "0.1.0"

from .errors import InputError  # noqa: E402,F401
from .image import CTImage  # noqa: E402,F401

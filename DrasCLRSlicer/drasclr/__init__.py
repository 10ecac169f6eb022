"""DrasCLR engine: anatomy-conditioned self-supervised learning and emphysema-subtype analysis of chest CT.

The engine never imports slicer, qt, ctk or vtk; the Slicer module and its MRML bridge sit on top of it.
``drasclr.CTImage`` is imported on first use (PEP 562), so that ``drasclr --help`` and argument errors do not
load SimpleITK, numpy or torch.
"""

__version__ = "0.1.0"

from .errors import InputError  # noqa: E402,F401


def __getattr__(name):
    if name == "CTImage":
        from .image import CTImage

        return CTImage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

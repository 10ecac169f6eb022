"""MRML bridge of the DrasCLR Slicer module: MRML nodes <-> engine types, and the module Logic.

Imports ``slicer`` (MRML classes) but never ``qt``/``ctk``, so it runs and is tested on the slicer-core wheel
without the Slicer application. The LPS/RAS conversion lives in :mod:`.geometry` only.
"""

"""The subtype model as a MONAI bundle (``drasclr export bundle MODEL -o BUNDLE``; docs/monai_bundle.md).

:mod:`.transforms` holds the bundle's pre-processing, inferer and post-processing as MONAI dictionary transforms
(they call the engine, so ``python -m monai.bundle run`` gives the subtype map of ``drasclr analyze``);
:mod:`.export` writes the bundle folder.
"""

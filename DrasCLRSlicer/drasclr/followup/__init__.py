"""Follow-up: compare a patient's scans over time, per lobe, with a voxel change map (``drasclr compare``).

- :mod:`.register`: deformable lung registration of a later scan to the baseline (SimpleITK: affine on the lung
  masks, then a B-spline on the lung CT), with its inverse (lobes carried from the baseline to the later scan);
- :mod:`.changemap`: voxel change labels on the baseline grid (new emphysema, emphysema gone, subtype changed);
- :mod:`.measure`: per-lobe change in densitometry, raw and adjusted for the inspiration level, and in subtypes;
- :mod:`.compare`: the whole comparison (analyze or reuse each scan, register, measure, write the outputs);
- :mod:`.report`: the HTML report. See docs/followup.md.
"""

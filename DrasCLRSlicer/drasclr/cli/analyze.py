"""``drasclr analyze INPUT -o OUT [--model M] [--device auto|cpu|cuda] [--lobes LOBES]``."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub):
    p = sub.add_parser("analyze", help="emphysema subtypes and per-region numbers for one CT",
                       description="Analyze one chest CT (NIfTI/NRRD/MHA file or DICOM series folder).")
    p.add_argument("input", help="CT file or DICOM series folder")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--model", default=None, help="model file or folder (default: the bundled demo model)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--lobes", default=None, help="lobe labelmap (LTRC numbering 1-5); zones 11-16 otherwise")
    p.add_argument("--series", default=None, help="DICOM SeriesInstanceUID when the folder holds several")
    p.add_argument("--quiet", action="store_true", help="do not print the per-region table")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..analyze import analyze_file
    from ..errors import InputError
    from ..stats import format_table

    src = Path(args.input)
    if not src.exists():
        raise InputError(f"input not found: {src}")
    if args.lobes and not Path(args.lobes).exists():
        raise InputError(f"lobe file not found: {args.lobes}")
    result = analyze_file(src, args.output, lobes_path=args.lobes, series_uid=args.series)
    if not args.quiet:
        print(format_table(result.rows))
    print(f"wrote {args.output}")
    return 0

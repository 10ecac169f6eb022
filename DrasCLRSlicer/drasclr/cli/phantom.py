"""``drasclr phantom -o OUT --n N --seed S [options]``: a synthetic chest CT cohort with exact truth."""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser("phantom", help="generate synthetic chest CT cases with lobe and emphysema-subtype truth",
                       description="Write OUT/case_XXX/{ct,regions,subtypes}.nii.gz + meta.json per case, "
                                   "and OUT/cohort.csv + OUT/meta.json.")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--n", type=int, default=1, help="number of cases (default 1)")
    p.add_argument("--seed", type=int, default=0, help="cohort seed (default 0)")
    p.add_argument("--generator", default="3", choices=["1", "2", "3"],
                   help="generator version: 3 (default) realistic HRCT emphysema at a 512 matrix; 2 its "
                        "predecessor, 1 the first generator (256 matrix), both kept so old cohorts rebuild "
                        "bit-identically")
    p.add_argument("--size", type=int, nargs=3, metavar=("X", "Y", "Z"), default=None,
                   help="voxels per axis (default 512 512 for generators 2 and 3, 256 256 for 1, and as many slices "
                        "as needed)")
    p.add_argument("--spacing", type=float, default=None, help="in-plane spacing mm (default: drawn)")
    p.add_argument("--thickness", type=float, default=None, help="slice thickness mm (default: drawn)")
    p.add_argument("--kernel", default="mixed", choices=["soft", "sharp", "lung", "mixed"],
                   help="reconstruction kernel (lung: the sharp L/B70 kernel, only with --acquisition clinical)")
    p.add_argument("--noise", type=float, default=None, help="noise std HU (default: drawn by kernel)")
    p.add_argument("--healthy-fraction", type=float, default=0.3, help="share of cases without emphysema")
    p.add_argument("--subtypes", default=None, help="force subtypes present, e.g. cle,pse,ple")
    p.add_argument("--severity", type=float, default=None, help="force disease severity in (0, 1]")
    p.add_argument("--air-offset", type=float, default=0.0, metavar="HU",
                   help="simulate a miscalibrated scanner: add HU to every voxel (air reads about -1000 + HU; "
                        "|HU| <= 100, default 0)")
    p.add_argument("--acquisition", default="standard", choices=["standard", "clinical"],
                   help="clinical: real kernels (incl. the sharp lung kernel) with their noise texture, low dose, "
                        "0.6-5 mm slices, a stronger supine gradient, denser vessels (generators 2, 3; "
                        "docs/acquisition.md); standard (default): the generator's own protocol")
    p.add_argument("--workers", type=int, default=None, help="parallel processes (default: all cores)")
    p.add_argument("--demo", action="store_true", help="write the bundled demo case files into OUT instead")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output folder")
    f = p.add_argument_group("follow-up series (docs/followup.md)")
    f.add_argument("--followup", type=int, default=None, metavar="SCANS",
                   help="write one patient's series of SCANS scans (baseline + follow-ups) with the truth of the "
                        "change into OUT/scan_K/ (case --seed, index 0)")
    f.add_argument("--volume-change", type=float, nargs="+", default=None, metavar="FRAC",
                   help="lung volume change of each follow-up vs the baseline (default alternating 0.15, -0.12)")
    f.add_argument("--progression", type=float, default=1.0, help="planted disease change per interval (0: none)")
    f.add_argument("--followup-kernel", default=None, choices=["soft", "sharp"], help="the follow-ups' kernel")
    f.add_argument("--followup-noise", type=float, default=None, help="the follow-ups' noise std HU")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..core.errors import InputError
    from ..research.phantom import PhantomOptions, write_cohort
    from ..research.phantom.cohort import write_demo

    if args.demo:
        paths = write_demo(args.output)
        print(f"wrote {', '.join(str(p) for p in paths.values())}")
        return 0
    from ..core.input_files import check_range
    from ..core.outputs import claimed_output, staged_dir

    check_range(args.n, "--n", lo=1, hi=100000)
    check_range(args.workers, "--workers", lo=1, hi=1024)
    check_range(args.seed, "--seed", lo=0, hi=2**31 - 1)
    subtypes = tuple(s.strip().lower() for s in args.subtypes.split(",") if s.strip()) if args.subtypes else None
    if args.subtypes is not None and not subtypes:
        raise InputError(f"--subtypes {args.subtypes!r}: name at least one of cle, pse, ple")
    for name in ("spacing", "thickness", "noise", "healthy_fraction", "severity", "air_offset"):
        check_range(getattr(args, name), f"--{name.replace('_', '-')}")  # finite (ranges: PhantomOptions)
    opts = PhantomOptions(size=tuple(args.size) if args.size else None, spacing=args.spacing,
                          thickness=args.thickness, kernel=args.kernel, noise=args.noise,
                          healthy_fraction=args.healthy_fraction, subtypes=subtypes, severity=args.severity,
                          generator=args.generator, air_offset=args.air_offset,
                          acquisition=args.acquisition).validate()
    if args.followup is not None:
        return _series(args, opts)
    # the whole cohort is staged beside OUT and moved into place at the end: all cases or nothing
    with claimed_output(args.output, overwrite=args.overwrite), staged_dir(args.output) as tmp:
        metas = write_cohort(tmp, args.n, args.seed, opts, args.workers)
    healthy = sum(m["healthy"] for m in metas)
    print(f"wrote {len(metas)} cases ({healthy} healthy) to {args.output}")
    return 0


def _series(args, opts) -> int:
    from ..core.outputs import claimed_output
    from ..research.phantom.followup import FollowupOptions, write_series

    follow = FollowupOptions(scans=args.followup, volume_change=tuple(args.volume_change) if args.volume_change
                             else None, progression=args.progression, kernel=args.followup_kernel,
                             noise=args.followup_noise).validate()
    with claimed_output(args.output, overwrite=args.overwrite):
        write_series(args.output, args.seed, opts, follow)
    print(f"wrote a series of {follow.scans} scans to {args.output}")
    return 0

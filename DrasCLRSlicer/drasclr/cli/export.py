"""``drasclr export bundle MODEL -o BUNDLE``: a subtype model as a MONAI bundle (docs/monai_bundle.md)."""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser("export", help="export a model in another format (bundle: a MONAI bundle)",
                       description="Export a DrasCLR subtype model.")
    p.add_argument("format", choices=["bundle"], help="bundle: a MONAI bundle folder")
    p.add_argument("model", nargs="?", default=None, help="model folder, file or name (default: the bundled model)")
    p.add_argument("-o", "--output", required=True, help="bundle folder to create (must not exist or be empty)")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..bundle.export import export_bundle
    from ..core.outputs import claimed_output

    with claimed_output(args.output):
        out = export_bundle(args.model, args.output)
    print(f"wrote {out}; run it with: python -m monai.bundle run --config_file {out}/configs/inference.json "
          f"--bundle_root {out} --dataset_dir CT_FOLDER --output_dir OUT")
    return 0

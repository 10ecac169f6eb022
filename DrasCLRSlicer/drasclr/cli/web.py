"""``drasclr web [CT] [--port P] [--host H] [--data DIR] [--models DIR]``: the browser reading room.

The web shell (``DrasCLRSlicerWeb``, trame-slicer on slicer-core) lives beside the engine and is imported only
when this command runs, so the engine itself never imports slicer or vtk. Install it with ``pip install .[web]``.
"""

from __future__ import annotations


def add_parser(sub):
    for name in ("web", "serve"):
        p = sub.add_parser(name, help="start the browser reading room (trame-slicer web app)" if name == "web"
                           else "same as `drasclr web`",
                           description="Serve the DrasCLR reading room: open a CT, analyze, review the overlay and "
                                       "per-lobe table, paint corrections, fine-tune and re-analyze from a browser. "
                                       "Listens on 127.0.0.1 unless --host says otherwise; prints the URL.")
        p.add_argument("ct", nargs="?", default=None,
                       help="a CT to open at start: 'demo' for the bundled demo CT, or a path inside --data")
        p.add_argument("--port", type=int, default=8080, help="TCP port (0: a free one; default 8080)")
        p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
        p.add_argument("--data", default=None,
                       help="data folder: sessions, uploads and the CTs the page may open "
                            "(default $DRASCLR_WEB_DATA or ~/.drasclr/web)")
        p.add_argument("--models", default=None,
                       help="folder for imported and fine-tuned models (default DATA/models)")
        p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default device")
        p.add_argument("--finetune-seconds", type=float, default=30.0, help="fine-tuning time budget (default 30 s)")
        p.set_defaults(run=run)


def run(args) -> int:
    from ..errors import InputError

    try:
        from DrasCLRSlicerWeb.server import serve
    except ImportError as exc:
        raise InputError(f"the web shell is not installed ({exc.name or exc}): pip install '.[web]'") from exc
    return serve(ct=args.ct, host=args.host, port=args.port, data=args.data, models=args.models,
                 device=args.device, finetune_seconds=args.finetune_seconds)

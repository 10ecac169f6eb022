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
        p.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1: this machine; any other address needs --users)")
        p.add_argument("--users", default=None,
                       help="users file (JSON: names and scrypt password hashes): readers sign in; required off "
                            "loopback")
        p.add_argument("--add-user", default=None, metavar="NAME",
                       help="add NAME (or set a new password) to --users FILE, reading the password from the "
                            "terminal or stdin, and exit")
        p.add_argument("--max-jobs", type=int, default=0,
                       help="heavy jobs (analysis, fine-tuning) at a time for all sessions (default: from cores and "
                            "memory); the others wait in order")
        p.add_argument("--idle-minutes", type=float, default=30.0,
                       help="stop a session no page has used for this long, freeing its memory (default 30); "
                            "its owner can reopen it")
        p.add_argument("--max-sessions", type=int, default=50, help="session processes at a time (default 50)")
        p.add_argument("--max-upload-mb", type=float, default=2048, help="largest CT upload in MB (default 2048)")
        p.add_argument("--data", default=None,
                       help="data folder: sessions, uploads and the CTs the page may open "
                            "(default $DRASCLR_WEB_DATA or ~/.drasclr/web)")
        p.add_argument("--models", default=None,
                       help="folder for imported and fine-tuned models (default DATA/models)")
        p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default device")
        p.add_argument("--finetune-seconds", type=float, default=30.0, help="fine-tuning time budget (default 30 s)")
        p.set_defaults(run=run)


def run(args) -> int:
    from ..core.errors import InputError

    try:
        from DrasCLRSlicerWeb.server import serve
    except ImportError as exc:
        raise InputError(f"the web shell is not installed ({exc.name or exc}): pip install '.[web]'") from exc
    if args.add_user:
        return add_user(args)
    return serve(ct=args.ct, host=args.host, port=args.port, data=args.data, models=args.models,
                 device=args.device, finetune_seconds=args.finetune_seconds, users=args.users,
                 max_jobs=args.max_jobs, idle_minutes=args.idle_minutes, max_sessions=args.max_sessions,
                 max_upload_mb=args.max_upload_mb)


def add_user(args) -> int:
    import getpass
    import sys

    from ..core.errors import InputError

    if not args.users:
        raise InputError("--add-user needs --users FILE")
    from DrasCLRSlicerWeb.auth import add_user as add

    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.add_user}: ")
        if getpass.getpass("again: ") != password:
            raise InputError("the passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\n")
    add(args.users, args.add_user, password)
    print(f"info: {args.add_user} can sign in (users file {args.users})", file=sys.stderr)
    return 0

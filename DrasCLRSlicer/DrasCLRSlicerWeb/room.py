"""One browser session's process: its own trame server, MRML scene, views and session folder.

    python -m DrasCLRSlicerWeb.room --port P --session ID --user NAME [--data DIR] [--models DIR] ...

The gateway starts it through wslink's launcher (:mod:`.sessions`) on a loopback port and proxies the owner's
page to it; it prints :data:`~.sessions.READY` once it serves. It restores the session from its folder (the CT,
the last result; a job cut off by a stopped server is shown as failed), asks the gateway's queue for a slot
before each heavy job (``DRASCLR_GATEWAY_URL`` / ``DRASCLR_GATEWAY_TOKEN``), and exits when its parent (the
gateway) dies or on SIGTERM, killing a running engine child.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from DrasCLRSlicerLib.process import die_with_parent

from .sessions import READY


def parse(argv=None):
    ap = argparse.ArgumentParser(prog="python -m DrasCLRSlicerWeb.room", description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--session", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--models", default=None)
    ap.add_argument("--per-user-models", action="store_true",
                    help="fine-tuned and imported models in DATA/users/USER/models (signed-in users)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--finetune-seconds", type=float, default=30.0)
    ap.add_argument("--max-upload-mb", type=float, default=2048)
    ap.add_argument("--ct", default=None, help="'demo' or a path inside the data folder, for a new session")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    die_with_parent()  # the gateway's death ends this session (its engine child dies with it)
    if os.getppid() == 1:
        return 1
    from trame.app import get_server

    from .audit import AuditLog
    from .jobqueue import QueueClient
    from .paths import Workspace
    from .server import configure_offscreen, quiet_logs

    configure_offscreen()
    quiet_logs()
    data = Path(args.data)
    models = data / "users" / args.user / "models" if args.per_user_models else args.models
    workspace = Workspace(data, Path(models) if models else None)
    session = workspace.session(args.session)
    url, token = os.environ.get("DRASCLR_GATEWAY_URL"), os.environ.get("DRASCLR_GATEWAY_TOKEN")
    queue = QueueClient(url, token, session.id) if url and token else None

    from .app import ReadingRoom

    server = get_server(f"drasclr-{session.id}", client_type="vue3")
    room = ReadingRoom(server, workspace, device=args.device, finetune_seconds=args.finetune_seconds,
                       session=session, queue=queue, audit=AuditLog(data / "audit.log", args.user, session.id),
                       max_upload_mb=args.max_upload_mb, user=args.user)
    room.restore()
    if args.ct and room.volume is None:
        room.load_demo() if args.ct == "demo" else room.open_path(args.ct)
    server.controller.on_server_ready.add(lambda **_: print(READY, flush=True))
    signal.signal(signal.SIGTERM, _exit)
    try:
        server.start(host="127.0.0.1", port=args.port, open_browser=False, show_connection_info=False,
                     disable_logging=True)
    finally:
        room.shutdown()
    return 0


def _exit(*_):
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())

"""Starting the reading room: offscreen rendering set-up, the workspace, the gateway, the URL.

``serve()`` is what ``drasclr web`` / ``drasclr serve`` / ``drasclr-web`` run: the gateway (:mod:`.gateway`:
sign-in, one session process per browser session, the shared job queue). It listens on 127.0.0.1 unless ``host``
says otherwise, refuses any other address without a users file (sign-in), and prints
``DrasCLR reading room: http://HOST:PORT/`` once the page can be served. ``create_app`` builds one
:class:`~DrasCLRSlicerWeb.app.ReadingRoom` in this process (what a session process runs; tests use it directly).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from pathlib import Path

from drasclr.core.errors import InputError


def configure_offscreen() -> None:
    """Render through EGL (Mesa's software rasteriser when there is no GPU) when no display is set.

    Never set ``VTK_DEFAULT_OPENGL_WINDOW`` to an empty string: VTK crashes on it."""
    if not os.environ.get("DISPLAY") and not os.environ.get("VTK_DEFAULT_OPENGL_WINDOW"):
        os.environ["VTK_DEFAULT_OPENGL_WINDOW"] = "vtkEGLRenderWindow"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def quiet_logs() -> None:
    for name in ("trame", "trame_client", "trame_server", "trame_slicer", "trame_rca", "aiohttp.access", "wslink"):
        logging.getLogger(name).setLevel(logging.WARNING)  # their debug/access logs would flood the terminal


def create_app(data=None, models=None, device: str = "auto", finetune_seconds: float = 30.0, server=None,
               **room_options):
    """The :class:`~DrasCLRSlicerWeb.app.ReadingRoom` on a trame server (a new one unless given)."""
    configure_offscreen()
    from trame.app import get_server

    from .app import ReadingRoom
    from .paths import Workspace, default_data_root

    workspace = Workspace(Path(data) if data else default_data_root(), Path(models) if models else None)
    server = server or get_server("drasclr", client_type="vue3")
    return ReadingRoom(server, workspace, device=device, finetune_seconds=finetune_seconds, **room_options)


def serve(ct: str | None = None, host: str = "127.0.0.1", port: int = 8080, data=None, models=None,
          device: str = "auto", finetune_seconds: float = 30.0, users=None, max_jobs: int = 0,
          idle_minutes: float = 30.0, max_sessions: int = 50, max_upload_mb: float = 2048) -> int:
    from .auth import Users, needs_sign_in
    from .paths import default_data_root

    if port < 0 or port > 65535:
        raise InputError(f"--port {port}: expected 0-65535")
    if finetune_seconds <= 0:
        raise InputError(f"--finetune-seconds {finetune_seconds}: expected a positive number")
    if max_jobs < 0 or idle_minutes <= 0 or max_sessions < 1 or max_upload_mb <= 0:
        raise InputError("--max-jobs, --idle-minutes, --max-sessions and --max-upload-mb must be positive")
    if needs_sign_in(host) and not users:
        raise InputError(f"--host {host} serves beyond this machine: give --users FILE so that readers sign in "
                         "(create it with --add-user NAME), or keep the default 127.0.0.1")
    user_db = Users(users) if users else None
    if user_db is not None and not len(user_db):
        raise InputError(f"--users {users}: no users in the file (add one with --add-user NAME)")
    root = Path(data) if data else default_data_root()
    if ct and ct != "demo":
        from .paths import Workspace

        ct = str(Workspace(root, Path(models) if models else None).resolve_input(ct))  # refused before listening
    quiet_logs()
    from .gateway import Gateway

    gateway = Gateway(root, host=host, port=port or free_port(host if host not in ("0.0.0.0", "") else "127.0.0.1"),
                      users=user_db, models=models, device=device, finetune_seconds=finetune_seconds, ct=ct,
                      max_jobs=max_jobs, idle_seconds=idle_minutes * 60, max_sessions=max_sessions,
                      max_upload_mb=max_upload_mb)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    return gateway.run()


def _exit_on_sigterm(*_):
    raise SystemExit(0)


def main(argv=None) -> int:
    """``drasclr-web ...``: the same options as ``drasclr web``."""
    from drasclr.cli import main as cli_main

    return cli_main(["web", *(sys.argv[1:] if argv is None else argv)])

"""Starting the reading room: offscreen rendering set-up, the workspace, the trame server, the URL.

``serve()`` is what ``drasclr web`` / ``drasclr serve`` / ``drasclr-web`` run. It listens on 127.0.0.1 unless
``host`` says otherwise and prints ``DrasCLR reading room: http://HOST:PORT/`` once the page can be served.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from pathlib import Path

from drasclr.errors import InputError


def configure_offscreen() -> None:
    """Render through EGL (Mesa's software rasteriser when there is no GPU) when no display is set.

    Never set ``VTK_DEFAULT_OPENGL_WINDOW`` to an empty string: VTK crashes on it."""
    if not os.environ.get("DISPLAY") and not os.environ.get("VTK_DEFAULT_OPENGL_WINDOW"):
        os.environ["VTK_DEFAULT_OPENGL_WINDOW"] = "vtkEGLRenderWindow"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def create_app(data=None, models=None, device: str = "auto", finetune_seconds: float = 30.0, server=None):
    """The :class:`~DrasCLRSlicerWeb.app.ReadingRoom` on a trame server (a new one unless given)."""
    configure_offscreen()
    from trame.app import get_server

    from .app import ReadingRoom
    from .paths import Workspace, default_data_root

    workspace = Workspace(Path(data) if data else default_data_root(), Path(models) if models else None)
    server = server or get_server("drasclr", client_type="vue3")
    return ReadingRoom(server, workspace, device=device, finetune_seconds=finetune_seconds)


def serve(ct: str | None = None, host: str = "127.0.0.1", port: int = 8080, data=None, models=None,
          device: str = "auto", finetune_seconds: float = 30.0) -> int:
    if port < 0 or port > 65535:
        raise InputError(f"--port {port}: expected 0-65535")
    if finetune_seconds <= 0:
        raise InputError(f"--finetune-seconds {finetune_seconds}: expected a positive number")
    for name in ("trame", "trame_client", "trame_server", "trame_slicer", "trame_rca", "aiohttp.access", "wslink"):
        logging.getLogger(name).setLevel(logging.WARNING)  # their debug/access logs would flood the terminal
    room = create_app(data, models, device, finetune_seconds)
    if ct:
        if ct == "demo":
            room.load_demo()
        else:
            room.state.ct_path = ct
            room.open_path()
            if room.state.error:
                raise InputError(room.state.error)
    port = port or free_port(host)
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    print(f"DrasCLR reading room: http://{shown}:{port}/  (data folder {room.workspace.data_root}; Ctrl+C stops)",
          flush=True)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        room.server.start(host=host, port=port, open_browser=False, show_connection_info=False,
                          disable_logging=True)
    finally:
        room.shutdown()  # kills a running analysis/fine-tuning child
    return 0


def _exit_on_sigterm(*_):
    raise SystemExit(0)


def main(argv=None) -> int:
    """``drasclr-web ...``: the same options as ``drasclr web``."""
    from drasclr.cli import main as cli_main

    return cli_main(["web", *(sys.argv[1:] if argv is None else argv)])

"""A session process for the fault tests: one ReadingRoom on a session folder, driven without a browser.

    python fault_room.py MODE DATA SESSION [MODEL]

MODE ``analyze``: open the demo CT, analyze with MODEL (no TTA), print the room's job state as JSON at the end
(the test kills this process, or the engine child, on the way). MODE ``restore``: reopen the session from its
folder and print what the page would show. MODE ``disk-full``: analyze and upload on a full data folder, then
open the demo CT again (the room keeps serving), printing the messages.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path


def build(data: Path, session_id: str, models=None):
    from trame.app import get_server

    from DrasCLRSlicerWeb.paths import Workspace
    from DrasCLRSlicerWeb.server import create_app

    session = Workspace(data, models).session(session_id)
    room = create_app(data, models, device="cpu", finetune_seconds=1, server=get_server("fault", client_type="vue3"),
                      session=session, user="tester")
    room.state.ready()
    return room


def shown(room) -> dict:
    s = room.state
    return {k: s[k] for k in ("job_status", "job_message", "error", "message", "has_ct", "ct_name", "has_result")}


def analyze(room, model: str) -> None:
    room.load_demo()
    room.refresh_models(select=model)
    room.state.tta = False
    print("info: analyzing", flush=True)
    asyncio.run(room._analyze())


def main(mode: str, data: str, session_id: str, model: str = "") -> None:
    if mode == "restore":
        room = build(Path(data), session_id)
        room.restore()
    elif mode == "analyze":
        room = build(Path(data), session_id)
        analyze(room, model)
    else:  # disk-full: models live elsewhere; the data folder is a full tmpfs
        room = build(Path(data), session_id, Path(model).parent)
        analyze(room, model)
        failed = shown(room)
        from DrasCLRSlicerLib.process import MODULE_DIR

        content = (MODULE_DIR / "drasclr" / "data" / "demo_ct.nii.gz").read_bytes()
        room.upload([{"name": "scan.nii.gz", "size": len(content), "type": "", "content": content}])
        upload_error = room.state.error
        room.load_demo()
        print(json.dumps({"analysis": failed, "upload_error": upload_error, "after": shown(room)}), flush=True)
        return
    print(json.dumps(shown(room)), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])

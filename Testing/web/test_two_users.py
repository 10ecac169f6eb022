"""Two readers on one ``drasclr web`` server (sign-in on), each in their own browser context (Playwright + chromium).

Alice opens the demo CT, Bob uploads a different CT (the demo without its lowest slices); both press Analyze while the
server runs one heavy job at a time (``--max-jobs 1``): Bob's analysis is not refused, it waits in the queue with
its place shown and runs after Alice's. Each page shows only its own CT, session and table (the table equals its
own run's stats.csv and not the other's); Bob cannot reach Alice's session page or websocket (404, as for a
session that does not exist); the audit log names who opened and analysed what, with file names only.
A tiny untrained model in each user's own models folder keeps the analyses short.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from web_support import MODULE_DIR, WebServer

from drasclr.core import names

pytestmark = pytest.mark.slow

TINY = {"channels": [4, 4, 4, 8, 8, 8, 8], "num_experts": 2, "in_channels": 1}
PASSWORDS = {"alice": "alice-secret-1", "bob": "bob-secret-22"}
TIMEOUT_MS = 900_000


def cell(text: str, column: str) -> str:
    """A stats.csv value as the page's table shows it (drasclr.core.names: the column's decimals)."""
    return names.format_value(column, math.nan if text in ("", None) else float(text))


def expected_rows(stats_csv: Path) -> list[list[str]]:
    """The first three columns of the run's own stats.csv, as the page shows them (regions by name)."""
    with open(stats_csv, newline="") as fh:
        return [[names.region_title(r["region"]), cell(r["volume_ml"], "volume_ml"), cell(r["mean_hu"], "mean_hu")]
                for r in csv.DictReader(fh)]


def shown_rows(page) -> list[list[str]]:
    cells = "rs => rs.map(r => Array.from(r.cells).slice(0, 3).map(c => c.textContent.trim()))"
    return page.eval_on_selector_all("#stats-table tr.stats-row", cells)


def setup_data(tmp_path: Path) -> tuple[Path, Path, Path]:
    import SimpleITK as sitk
    import torch

    from drasclr.dense.segmenter import SubtypeSegmenter
    from drasclr.dense.store import save_segmenter
    from DrasCLRSlicerWeb.auth import add_user

    data = tmp_path / "data"
    users = tmp_path / "users.json"
    for name, password in PASSWORDS.items():
        add_user(users, name, password)
        torch.manual_seed(0)
        save_segmenter(SubtypeSegmenter(encoder=TINY, decoder=(8, 8, 8, 4, 4)),
                       data / "users" / name / "models" / "tiny-v1", {"name": "tiny", "version": "tiny-v1"})
    ct = sitk.ReadImage(str(MODULE_DIR / "drasclr" / "data" / "demo_ct.nii.gz"))
    bob_ct = tmp_path / "bob_scan.nii.gz"
    sitk.WriteImage(ct[:, :, 10:], str(bob_ct))  # the lowest 10 slices off: other volumes in every row
    return data, users, bob_ct


def sign_in(context, url: str, user: str):
    page = context.new_page()
    page.set_default_timeout(180_000)
    page.goto(url)
    page.wait_for_selector("#btn-sign-in")  # sign-in comes first
    page.fill("#username", user)
    page.fill("#password", PASSWORDS[user])
    page.click("#btn-sign-in")
    page.wait_for_selector("#btn-demo")
    page.wait_for_selector("img.image-display-area")
    return page


def session_id(page) -> str:
    return page.inner_text("#session-id").split()[-1]


def test_two_users_are_isolated_and_queued(browser_env, tmp_path):
    sync_api, chromium = browser_env
    data, users, bob_ct = setup_data(tmp_path)
    server = WebServer(data, tmp_path / "server.log", args=("--users", str(users), "--max-jobs", "1"))
    with server:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            alice_ctx = browser.new_context(viewport={"width": 1400, "height": 900})
            bob_ctx = browser.new_context(viewport={"width": 1400, "height": 900})
            alice, bob = sign_in(alice_ctx, server.url, "alice"), sign_in(bob_ctx, server.url, "bob")
            sid_a, sid_b = session_id(alice), session_id(bob)
            assert sid_a != sid_b

            alice.click("#btn-demo")
            alice.wait_for_function("document.querySelector('#ct-name').textContent.includes('demo')")
            bob.set_input_files("#upload", str(bob_ct))
            bob.wait_for_function("document.querySelector('#ct-name').textContent.includes('bob_scan')")
            assert "bob_scan" not in alice.inner_text("#ct-name") and "demo" not in bob.inner_text("#ct-name")

            for page in (alice, bob):
                page.get_by_label("Mirror augmentation").uncheck()
            alice.click("#btn-analyze")
            alice.wait_for_function("document.querySelector('#job-message').textContent.startsWith('analysis:')")
            bob.click("#btn-analyze")  # one slot, taken by Alice: Bob waits in the queue, he is not refused
            bob.wait_for_function("document.querySelector('#job-message').textContent.includes('place 1')")
            assert not bob.inner_text("#error").strip()
            for page in (alice, bob):
                page.wait_for_function("document.querySelector('#analysis-count').textContent.includes('1')",
                                       timeout=TIMEOUT_MS)
                page.wait_for_selector("#stats-table tr.stats-row")

            # each page shows its own run's table, not the other's
            rows_a = expected_rows(data / "sessions" / sid_a / "analysis-001" / "output" / "stats.csv")
            rows_b = expected_rows(data / "sessions" / sid_b / "analysis-001" / "output" / "stats.csv")
            assert rows_a != rows_b
            assert shown_rows(alice) == rows_a and shown_rows(bob) == rows_b
            assert session_id(alice) == sid_a and "bob_scan" not in alice.inner_text("#ct-name")

            # Bob cannot open Alice's session: page, websocket and files answer as for no session at all
            for path in (f"s/{sid_a}/", f"s/{sid_a}/ws", f"s/{sid_a}/index.html", "s/0000000000000000/"):
                assert bob_ctx.request.get(server.url + path).status == 404, path
            assert bob_ctx.request.get(server.url + f"s/{sid_b}/").status == 200
            browser.close()

    # the queue ran Alice's analysis first, Bob's after it (one slot)
    jobs_a = json.loads((data / "sessions" / sid_a / "session.json").read_text())["jobs"]
    jobs_b = json.loads((data / "sessions" / sid_b / "session.json").read_text())["jobs"]
    assert [j["status"] for j in jobs_a + jobs_b] == ["done", "done"]
    alice_written = (data / "sessions" / sid_a / "analysis-001" / "output" / "stats.csv").stat().st_mtime
    assert jobs_a[0]["started"] < alice_written <= jobs_b[0]["started"]  # Bob's run began after Alice's engine ended
    # the audit log: who opened and analysed what, by file name
    audit = [json.loads(ln) for ln in (data / "audit.log").read_text().splitlines()]
    seen = {(e["user"], e["action"], e["what"].split(" ")[0]) for e in audit}
    assert {("alice", "sign-in", ""), ("bob", "sign-in", ""), ("alice", "open", "demo"),
            ("bob", "upload", "bob_scan.nii.gz"), ("bob", "open", "bob_scan.nii.gz")} <= seen, seen
    assert {e["user"] for e in audit if e["action"] == "analyze"} == {"alice", "bob"}
    assert all(e["session"] == sid_b for e in audit if e["user"] == "bob" and e["action"] == "analyze")

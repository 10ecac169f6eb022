"""The load test of ``bench/bench_web.py --sessions N``: N signed-in users analyse at once (async Playwright)."""

from __future__ import annotations

import asyncio
import csv
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from web_support import WebServer, chromium_path

TINY = {"channels": [4, 4, 4, 8, 8, 8, 8], "num_experts": 2, "in_channels": 1}


def tree_rss_mb(pid: int, count: bool = False):
    """Resident memory of a process and all its descendants (MB), from /proc (``count``: and how many)."""
    children: dict[int, list[int]] = {}
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(p))
    total, todo, n = 0, [pid], 0
    while todo:
        p = todo.pop()
        n += 1
        todo += children.get(p, [])
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return (round(total / 1024, 1), n) if count else round(total / 1024, 1)


def prepare(data: Path, users: Path, n: int, tiny: bool) -> list[tuple[str, str]]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "DrasCLRSlicer"))
    from DrasCLRSlicerWeb.auth import add_user

    accounts = [(f"reader{i + 1}", f"password-{i + 1:04d}") for i in range(n)]
    for name, password in accounts:
        add_user(users, name, password)
        if tiny:
            import torch

            from drasclr.dense.segmenter import SubtypeSegmenter
            from drasclr.dense.store import save_segmenter

            torch.manual_seed(0)
            save_segmenter(SubtypeSegmenter(encoder=TINY, decoder=(8, 8, 8, 4, 4)),
                           data / "users" / name / "models" / "tiny-v1", {"name": "tiny", "version": "tiny-v1"})
    return accounts


def cell(text: str) -> str:
    return "–" if text in ("", None) or math.isnan(float(text)) else f"{float(text):.1f}"


async def own_data_only(page, data: Path, sid: str, count: int) -> bool:
    """The page shows its own session id, the demo CT, and the table of its own latest run."""
    shown_sid = (await page.inner_text("#session-id")).split()[-1]
    cells = "rs => rs.map(r => Array.from(r.cells).slice(0, 3).map(c => c.textContent.trim()))"
    rows = await page.eval_on_selector_all("#stats-table tr.stats-row", cells)
    with open(data / "sessions" / sid / f"analysis-{count:03d}" / "output" / "stats.csv", newline="") as fh:
        expected = [[r["region"], cell(r["volume_ml"]), cell(r["mean_hu"])] for r in csv.DictReader(fh)]
    return shown_sid == sid and "demo" in (await page.inner_text("#ct-name")).lower() and rows == expected


async def reader(browser, url: str, data: Path, name: str, password: str, rounds: int, start: asyncio.Event,
                 server_pid: int) -> dict:
    ctx = await browser.new_context(viewport={"width": 1300, "height": 850})
    page = await ctx.new_page()
    page.set_default_timeout(600_000)
    out: dict = {"user": name, "analyses": []}
    await start.wait()
    t0 = time.perf_counter()
    await page.goto(url)
    await page.fill("#username", name)
    await page.fill("#password", password)
    await page.click("#btn-sign-in")
    await page.wait_for_selector("img.image-display-area")
    out["first_image_s"] = round(time.perf_counter() - t0, 2)
    out["session"] = sid = (await page.inner_text("#session-id")).split()[-1]
    await page.click("#btn-demo")
    await page.wait_for_function("document.querySelector('#ct-name').textContent.includes('demo')")
    await page.get_by_label("Mirror augmentation").uncheck()
    for k in range(1, rounds + 1):
        t1, clicked = time.perf_counter(), time.time()
        await page.click("#btn-analyze")
        await page.wait_for_function("document.querySelector('#job-message').textContent.startsWith('analysis:')")
        queued = "waiting" in await page.inner_text("#job-message")
        await page.wait_for_function(f"document.querySelector('#analysis-count').textContent.includes('{k}')",
                                     timeout=3_600_000)
        await page.wait_for_selector("#stats-table tr.stats-row")
        out["analyses"].append({"click_to_table_s": round(time.perf_counter() - t1, 1), "queued": queued,
                                "clicked": clicked, "server_rss_mb": tree_rss_mb(server_pid),
                                "own_data_only": await own_data_only(page, data, sid, k)})
    out["page"] = page
    out["context"] = ctx
    return out


async def run_load(url: str, data: Path, accounts, rounds: int, server_pid: int) -> list[dict]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        start = asyncio.Event()
        tasks = [asyncio.create_task(reader(browser, url, data, n, p, rounds, start, server_pid))
                 for n, p in accounts]
        start.set()
        results = await asyncio.gather(*tasks)
        # every page, once all are done: still only its own data
        for r in results:
            r["own_data_at_end"] = await own_data_only(r.pop("page"), data, r["session"], rounds)
            await r.pop("context").close()
        await browser.close()
    return results


def queue_order(data: Path, results: list[dict]) -> dict:
    """From the session records: the order the queue started the analyses in, against the order of the clicks
    (first come, first served when they agree), and whether all finished."""
    runs, clicks = [], []
    for r in results:
        rec = json.loads((data / "sessions" / r["session"] / "session.json").read_text())
        runs += [(j["started"], r["user"], k, j["status"]) for k, j in enumerate(rec["jobs"])]
        clicks += [(a["clicked"], r["user"], k) for k, a in enumerate(r["analyses"])]
    runs.sort()
    clicks.sort()
    started = [u for _, u, _, _ in runs]
    audit = [json.loads(ln) for ln in (data / "audit.log").read_text().splitlines()]
    entered = [e["user"] for e in audit if e["action"] == "queued"]  # the order the gateway's queue got them
    return {"order": started, "click_order": [u for _, u, _ in clicks], "queue_entry_order": entered,
            "first_come_first_served": started == entered, "all_done": all(s == "done" for *_, s in runs),
            "n": len(runs)}


def load_test(args) -> int:
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-web-load-"))
    data, users = work / "data", work / "users.json"
    work.mkdir(parents=True, exist_ok=True)
    accounts = prepare(data, users, args.sessions, args.tiny)
    extra = ["--users", str(users), "--idle-minutes", "0.5"]
    if args.max_jobs:
        extra += ["--max-jobs", str(args.max_jobs)]
    server = WebServer(data, work / "server.log", args=tuple(extra))
    result: dict = {"sessions": args.sessions, "rounds": args.rounds, "tiny_model": args.tiny, "tta": False,
                    "cpus": os.cpu_count(), "load_before": os.getloadavg()[0]}
    t0 = time.perf_counter()
    try:
        server.wait_ready()
        time.sleep(2)
        result["rss_before_mb"] = tree_rss_mb(server.proc.pid)
        results = asyncio.run(run_load(server.url, data, accounts, args.rounds, server.proc.pid))
        result["rss_all_open_mb"] = tree_rss_mb(server.proc.pid)
        t_closed = time.perf_counter()
        while time.perf_counter() - t_closed < 300 and tree_rss_mb(server.proc.pid, count=True)[1] > 1:
            time.sleep(1)  # the pages are closed: the sessions stop once idle (--idle-minutes 0.5)
        result["rss_after_idle_stop_mb"], result["processes_after"] = tree_rss_mb(server.proc.pid, count=True)
        result["idle_stop_s"] = round(time.perf_counter() - t_closed, 1)
        first = [r["first_image_s"] for r in results]
        runs = [a["click_to_table_s"] for r in results for a in r["analyses"]]
        result.update({
            "first_image_s": {"median": statistics.median(first), "max": max(first)},
            "click_to_table_s": {"min": min(runs), "median": statistics.median(runs), "max": max(runs)},
            "queued_analyses": sum(a["queued"] for r in results for a in r["analyses"]),
            "server_rss_by_round_mb": [round(statistics.mean(r["analyses"][k]["server_rss_mb"] for r in results))
                                       for k in range(args.rounds)],
            "own_data_only_every_check": all(a["own_data_only"] for r in results for a in r["analyses"])
            and all(r["own_data_at_end"] for r in results),
            "queue": queue_order(data, results),
            "per_user": results,
        })
    finally:
        server.stop()
        result["total_s"] = round(time.perf_counter() - t0, 1)
        result["load_after"] = os.getloadavg()[0]
        print(json.dumps(result, indent=1))
    return 0

"""Speed of the browser reading room (``drasclr web``), measured in a real browser (Playwright + chromium).

    PYTHONPATH=DrasCLRSlicer python bench/bench_web.py [--real ../shared/data/real/lidc_idri_0001.nii.gz] [--no-tta]
    PYTHONPATH=DrasCLRSlicer python bench/bench_web.py --sessions 8 [--rounds 1] [--tiny] [--max-jobs N]

``--sessions N``: the load test of a shared server (sign-in on, N users, each in their own browser context):
every page signs in, opens the demo CT and presses Analyze at the same time (``--rounds K``: K analyses each,
the soak). Reports each page's time to its first view image, each analysis' wait in the queue and run time, the
order the queue started them in (first come, first served), a check on every page after every analysis that it
shows only its own session, CT and table (its run's stats.csv), and the server's memory (resident set of the
gateway and its session processes) before the sessions, with all of them open, and after they were closed and
stopped as idle. ``--tiny``: an untrained tiny model in each user's folder (the engine's other stages unchanged)
so that a 2-core machine gets through the run in minutes.

Starts ``drasclr web`` on 127.0.0.1 and a free port with a scratch data folder, then reports:
- page load -> first view image (the slice views stream images; measured from ``page.goto``),
- Analyze click -> overlay and table shown, for the demo CT and (``--real``) a real CT opened by path, beside the
  engine's own time (the child ``drasclr analyze``: its input written -> its output folder in place, from the run
  folder's file times; and the stage times it recorded in stats.json), the difference split into before the engine
  (writing the CT from the scene) and after it (loading the outputs as nodes, the page's update), and when the
  page showed each stage line ("Lobes (4 of 10) — about 25 s left") after the click,
- slice-view frame time while painting: image updates of the axial view during a 60-step Paint stroke
  (median interval between updates, and updates per second).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Testing" / "web"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from web_support import WebServer, chromium_path  # noqa: E402

WATCH_FRAMES = """
() => { window.__frames = []; const img = document.querySelector('.remote-controlled-area img.image-display-area');
  new MutationObserver(() => window.__frames.push(performance.now())).observe(img, {attributes: true,
  attributeFilter: ['src']}); }
"""


WATCH_JOB = """
() => { window.__job = []; const el = document.querySelector('#job-message');
  new MutationObserver(() => window.__job.push([performance.now(), el.textContent.trim()])).observe(el,
  {childList: true, characterData: true, subtree: true}); return performance.now(); }
"""


def analyze(page, count: int) -> float:
    t0 = time.perf_counter()
    page.click("#btn-analyze")
    page.wait_for_function(f"document.querySelector('#analysis-count').textContent.includes('{count}')",
                           timeout=1_200_000)
    page.wait_for_selector("#stats-table tr.stats-row")
    return time.perf_counter() - t0


def engine_times(run: Path, clicked: float, shown: float) -> dict:
    """The engine's part of one web analysis from its run folder (``clicked``, ``shown``: wall-clock times of the
    click and of the overlay): seconds before the child (the CT written), the child (input -> output in place,
    interpreter start included), after it, and the stage times the engine recorded."""
    ct = run / "input" / "ct.nrrd"
    out = run / "output"
    start, end = ct.stat().st_mtime, out.stat().st_mtime
    stages = json.loads((out / "stats.json").read_text())["timings_s"]
    return {"before_engine_s": round(start - clicked, 2), "engine_s": round(end - start, 2),
            "after_engine_s": round(shown - end, 2), "engine_stages_s": round(sum(stages.values()), 2),
            "overlay_minus_engine_s": round(shown - clicked - (end - start), 2)}


def stage_timeline(page, origin: float) -> list:
    """[seconds after the click, text] of each job line the page showed (``origin``: performance.now() when the
    watch began, just before the click)."""
    seen = []
    for t, text in page.evaluate("window.__job"):
        if not seen or seen[-1][1] != text:
            seen.append([round((t - origin) / 1000, 2), text])
    return seen


def paint_frames(page) -> dict:
    page.click("#btn-paint")
    page.wait_for_timeout(1500)
    page.evaluate(WATCH_FRAMES)
    box = page.locator(".remote-controlled-area").first.bounding_box()
    y = box["y"] + box["height"] * 0.47
    t0 = time.perf_counter()
    page.mouse.move(box["x"] + box["width"] * 0.25, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.75, y, steps=60)
    page.mouse.up()
    stroke = time.perf_counter() - t0
    page.wait_for_timeout(1500)
    frames = page.evaluate("window.__frames")
    gaps = [b - a for a, b in zip(frames, frames[1:])]
    page.click("#btn-effect-none")
    return {"stroke_s": round(stroke, 2), "frames": len(frames),
            "median_frame_ms": round(statistics.median(gaps), 1) if gaps else None,
            "frames_per_s": round(len(frames) / (stroke + 1.5), 1)}


def _open_analyze_paint(page, server, result: dict, what: str, count: int, open_ct, name: str) -> None:
    """Open a CT (``open_ct`` clicks), wait until the page names it, analyze, then paint: the times into ``result``
    under ``<what>_ct_open_s``, ``<what>_analyze_to_overlay_s`` and ``paint_<what>``."""
    t0 = time.perf_counter()
    open_ct()
    page.wait_for_function(f"document.querySelector('#ct-name').textContent.includes('{name}')", timeout=300_000)
    result[f"{what}_ct_open_s"] = round(time.perf_counter() - t0, 2)
    page.click("#btn-reset-views")
    origin = page.evaluate(WATCH_JOB)
    clicked = time.time()
    result[f"{what}_analyze_to_overlay_s"] = round(analyze(page, count), 2)
    shown = time.time()
    result[f"{what}_engine"] = engine_times(sorted(server.session_dir().glob("analysis-*"))[-1], clicked, shown)
    result[f"{what}_page_stages"] = stage_timeline(page, origin)
    page.wait_for_timeout(1500)
    result[f"paint_{what}"] = paint_frames(page)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=0, help="load test: this many users at once (e.g. 8)")
    ap.add_argument("--rounds", type=int, default=1, help="load test: analyses per user (the soak)")
    ap.add_argument("--tiny", action="store_true", help="load test: a tiny untrained model (fast analyses)")
    ap.add_argument("--max-jobs", type=int, default=0, help="load test: heavy jobs at a time (default: the server's)")
    ap.add_argument("--real", type=Path, default=None, help="a real CT to analyse too (copied into the data folder)")
    ap.add_argument("--no-tta", action="store_true", help="untick mirrored test-time augmentation")
    ap.add_argument("--skip-demo", action="store_true", help="only the real CT (page load is measured all the same)")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = ap.parse_args()
    if args.sessions:
        from bench_web_load import load_test

        return load_test(args)
    from playwright.sync_api import sync_playwright

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-web-"))
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    if args.real:
        shutil.copyfile(args.real, data / args.real.name)
    result: dict = {"tta": not args.no_tta}
    t_start = time.perf_counter()
    server = WebServer(data, work / "server.log")
    try:
        result["server_start_s"] = round(server.wait_ready(), 2)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1500, "height": 950})
            t0 = time.perf_counter()
            page.goto(server.url)
            page.wait_for_selector("#btn-demo", timeout=120_000)
            result["page_ready_s"] = round(time.perf_counter() - t0, 2)
            page.wait_for_selector("img.image-display-area", timeout=120_000)
            result["page_load_to_first_image_s"] = round(time.perf_counter() - t0, 2)
            if args.no_tta:
                page.get_by_label("Mirror augmentation").uncheck()
            count = 0
            if not args.skip_demo:
                count += 1
                _open_analyze_paint(page, server, result, "demo", count, lambda: page.click("#btn-demo"), "demo")
            if args.real:
                count += 1
                page.fill("#ct-path", args.real.name)
                _open_analyze_paint(page, server, result, "real", count, lambda: page.click("#btn-open"),
                                    args.real.name.split(".")[0])
            browser.close()
    finally:
        server.stop()
        result["total_s"] = round(time.perf_counter() - t_start, 1)
        print(json.dumps(result, indent=2))  # what was measured, also when a step failed
    return 0


if __name__ == "__main__":
    sys.exit(main())

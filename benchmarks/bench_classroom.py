"""Load test of the classroom app: N real browser tabs clicking at once.

Starts ``python -m gradcam_widget app`` on a free loopback port, opens N tabs (Playwright
contexts on one Chromium, each its own cookies: N students), and has every tab run the same
script at the same time: cached changes (pooling, colormap: no model pass), a new class
(one pass), a new sample image and an upload (one pass each). Each latency is what the browser
sees: from the control's change to the overlay's new picture drawn. Resident memory is the
server's process tree, sampled every 0.2 s; after the tabs close it is followed for
``--after-s`` seconds. Traffic goes to 127.0.0.1 only; tabs, rounds and time are bounded.

    python benchmarks/bench_classroom.py --tabs 1 10 30 --json results.json

Prints one table row per N: resident memory idle / with the tabs open / peak / after close,
per-tab cost, and p50/p95 latency per kind of change.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

MB = 2**20
CHROMIUM = os.environ.get("GW_E2E_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]
CACHED = (("pooling", ("max", "mean (GAP)")), ("colormap", ("viridis", "turbo", "inferno")),
          ("colormap", ("magma", "jet", "gray")))  # fmt: skip
SAMPLES = ("shape scene 1000000", "shape scene 1000001", "shape scene 1000002")
READY_TIMEOUT_S = 600.0
CHANGE_TIMEOUT_S = 300.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tree_total(pid: int, reading) -> float:
    """``reading(process)`` summed over ``pid`` and its live descendants (0 once it is gone)."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for process in processes:
        try:
            total += reading(process)
        except psutil.Error:
            continue
    return total


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its live descendants."""
    return tree_total(pid, lambda process: sum(process.cpu_times()[:2]))


def browser_pid() -> list[int]:
    """The top Chromium processes this benchmark started (their renderers are counted with
    them by :func:`cpu_seconds`)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "chrom" in child.name().lower() and "chrom" not in child.parent().name().lower():
                found.append(child.pid)
        except psutil.Error:
            continue
    return found


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and its descendants (a kernel per tab would show here)."""
    return tree_total(pid, lambda process: process.memory_info().rss)


class Sampler:
    """The process tree's resident memory every 0.2 s, in a thread; ``peak`` since reset."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, tree_rss(self.pid))

    def reset(self):
        self.peak = tree_rss(self.pid)

    def stop(self):
        self._stop.set()
        self._thread.join()


class Server:
    """The app as its command line starts it, on 127.0.0.1."""

    def __init__(self, folder: Path, tabs: int):
        self.port = free_port()
        self.log = folder / "server.log"
        seats = str(tabs + 2)
        command = [sys.executable, "-m", "gradcam_widget", "app", "--ip", "127.0.0.1",
                   "--port", str(self.port), "--no-browser", "--max-sessions", seats,
                   "--client-sessions", seats]  # fmt: skip
        environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=environment)  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}/"

    def wait_ready(self, timeout: float = 300.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the app exited:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(self.url + "readyz", timeout=5) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"the app did not start:\n{self.log.read_text()}")

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(30)


OVERLAY = (
    "() => { const i = document.querySelector('img.gw-panel-overlay'); return i ? i.src : ''; }"
)
SELECTED = "(s) => s.options[s.selectedIndex] ? s.options[s.selectedIndex].text : ''"
READY = """() => {
  const s = document.querySelector('.gw-explorer .gw-status');
  const i = document.querySelector('img.gw-panel-overlay');
  return !!(s && i && i.src && s.textContent.includes('ready'));
}"""


async def timed(page, act) -> float:
    """Seconds from ``act()`` (a control changed) to the overlay's new picture drawn."""
    before = await page.evaluate(OVERLAY)
    started = time.perf_counter()
    await act()
    try:
        await page.wait_for_function(
            f"(before) => ({OVERLAY})() !== before", arg=before, timeout=CHANGE_TIMEOUT_S * 1000
        )
    except Exception as error:
        status = await page.locator(".gw-status").first.text_content()
        raise RuntimeError(
            f"no new picture after {act.__qualname__}; status line: {status!r}"
        ) from error
    return time.perf_counter() - started


async def tab_script(page, index: int, rounds: int, photo: Path, out: dict, start: asyncio.Event):
    """One student's clicks, all tabs at once; latencies into ``out[kind]``."""
    await start.wait()

    def select(control, label):
        def act():
            return page.locator(f".gw-{control} select").first.select_option(label=label)

        act.__qualname__ = f"{control} = {label!r}"
        return act

    async def other(control, labels, turn):
        """A label of ``labels`` that is not the one selected now."""
        selected = await page.locator(f".gw-{control} select").first.evaluate(SELECTED)
        choices = [label for label in labels if label != selected]
        return choices[turn % len(choices)]

    for round_ in range(rounds):
        for control, labels in CACHED:
            label = await other(control, labels, 0)
            out["cached"].append(await timed(page, select(control, label)))
        options = await page.locator(".gw-class select option").all_inner_texts()
        label = await other("class", options, round_ + index)
        out["class"].append(await timed(page, select("class", label)))
        sample = await other("image", SAMPLES, round_ + index)
        out["image"].append(await timed(page, select("image", sample)))

    async def upload():
        async with page.expect_file_chooser(timeout=CHANGE_TIMEOUT_S * 1000) as chosen:
            await page.locator(".gw-upload").first.click()
        await (await chosen.value).set_files(str(photo))

    out["upload"].append(await timed(page, upload))


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def drive(url: str, tabs: int, rounds: int, photo: Path, sampler: Sampler, pid: int):
    from playwright.async_api import async_playwright

    result = {}
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        contexts, pages = [], []
        opened = time.perf_counter()
        gate = asyncio.Semaphore(5)  # pages load 5 at a time (as a class arrives)

        async def open_tab():
            async with gate:
                context = await browser.new_context(viewport={"width": 1280, "height": 900})
                context.set_default_timeout(CHANGE_TIMEOUT_S * 1000)  # a loaded machine
                page = await context.new_page()
                await page.goto(url, wait_until="commit")
                await page.wait_for_function(READY, timeout=READY_TIMEOUT_S * 1000)
                contexts.append(context)
                pages.append(page)

        await asyncio.gather(*(open_tab() for _ in range(tabs)))
        result["open_s"] = time.perf_counter() - opened
        await asyncio.sleep(2)
        result["open_rss"] = tree_rss(pid)
        sampler.reset()
        out = {"cached": [], "class": [], "image": [], "upload": []}
        start = asyncio.Event()
        tasks = [asyncio.create_task(tab_script(page, index, rounds, photo, out, start))
                 for index, page in enumerate(pages)]  # fmt: skip
        clicking = time.perf_counter()
        server_cpu = cpu_seconds(pid)
        browser_cpu = sum(cpu_seconds(chrome) for chrome in browser_pid())
        start.set()
        await asyncio.gather(*tasks)
        result["script_s"] = time.perf_counter() - clicking
        result["server_cpu_s"] = cpu_seconds(pid) - server_cpu
        result["browser_cpu_s"] = sum(cpu_seconds(chrome) for chrome in browser_pid()) - browser_cpu
        result["peak_rss"] = sampler.peak
        result["latency"] = out
        for context in contexts:
            for page in context.pages:
                await page.close(run_before_unload=True)
            await context.close()
        await browser.close()
    return result


def run(tabs: int, rounds: int, after_s: float, folder: Path) -> dict:
    """The load test at ``tabs`` tabs: a fresh server, the script, memory after close."""
    photo = folder / "student_photo.png"
    rng = np.random.default_rng(tabs)
    Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(photo)
    server = Server(folder, tabs)
    try:
        server.wait_ready()
        time.sleep(2)
        pid = server.process.pid
        idle = tree_rss(pid)
        sampler = Sampler(pid)
        result = asyncio.run(drive(server.url, tabs, rounds, photo, sampler, pid))
        closed = time.perf_counter()
        freed_s = None
        while time.perf_counter() - closed < after_s:
            time.sleep(1)
            if freed_s is None and tree_rss(pid) <= 1.1 * idle:
                freed_s = time.perf_counter() - closed
        result["after_rss"] = tree_rss(pid)
        result["freed_s"] = freed_s
        sampler.stop()
        processes = len(psutil.Process(pid).children(recursive=True)) + 1
    finally:
        server.stop()
    result.update(tabs=tabs, rounds=rounds, idle_rss=idle, processes=processes)
    return result


def summary(result: dict) -> dict:
    """The table's numbers of one run (MiB, milliseconds)."""
    latency = result["latency"]
    row = {
        "tabs": result["tabs"],
        "processes": result["processes"],
        "idle_mib": round(result["idle_rss"] / MB),
        "open_mib": round(result["open_rss"] / MB),
        "peak_mib": round(result["peak_rss"] / MB),
        "after_mib": round(result["after_rss"] / MB),
        "per_tab_mib": round((result["open_rss"] - result["idle_rss"]) / MB / result["tabs"], 1),
        "freed_s": None if result["freed_s"] is None else round(result["freed_s"], 1),
        "open_s": round(result["open_s"], 1),
        "script_s": round(result["script_s"], 1),
        "server_cpu_s": round(result["server_cpu_s"], 1),
        "browser_cpu_s": round(result["browser_cpu_s"], 1),
    }
    for kind, values in latency.items():
        row[f"{kind}_p50_ms"] = round(1000 * percentile(values, 50))
        row[f"{kind}_p95_ms"] = round(1000 * percentile(values, 95))
        row[f"{kind}_n"] = len(values)
    return row


def server_only(tabs: int, rounds: int) -> dict:
    """The same script without browsers: ``tabs`` explorers of the app's shared model (its
    pass queue and per-tab caches), one thread each, every one changing at the same instant.
    Latency is the server's share (the change handled, the panels drawn), on all the cores
    with nothing else running: what a class whose browsers run on their own machines costs."""
    from gradcam_widget.classroom.shared import SharedModels

    shared = SharedModels("shapes")
    explorers = [shared.explorer("shapes") for _ in range(tabs)]
    out = {"cached": [], "class": [], "image": []}
    barrier = threading.Barrier(tabs)

    def timed_call(kind, change, *args):
        started = time.perf_counter()
        change(*args)
        out[kind].append(time.perf_counter() - started)

    def script(index, explorer):
        barrier.wait()
        for round_ in range(rounds):
            pooling = "max" if explorer.pooling == "mean" else "mean"
            timed_call("cached", setattr, explorer, "pooling", pooling)
            colormap = ("viridis", "turbo", "inferno")[round_ % 3]
            timed_call("cached", setattr, explorer, "colormap", colormap)
            others = [v for _, v in explorer.controls["class"].options if v != explorer.class_index]
            choice = others[(index + round_) % len(others)]
            timed_call("class", setattr, explorer, "class_index", choice)
            sample = SAMPLES[(index + round_) % len(SAMPLES)]
            timed_call("image", explorer.set_image, sample)

    threads = [threading.Thread(target=script, args=pair) for pair in enumerate(explorers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    queue = shared.queue("shapes")
    for explorer in explorers:
        explorer.close()
    row = {"tabs": tabs, "mode": "server only", "script_s": round(elapsed, 1),
           "passes": queue.passes, "captures": queue.captures}  # fmt: skip
    for kind, values in out.items():
        row[f"{kind}_p50_ms"] = round(1000 * percentile(values, 50))
        row[f"{kind}_p95_ms"] = round(1000 * percentile(values, 95))
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tabs", type=int, nargs="+", default=[1, 10, 30])
    parser.add_argument("--rounds", type=int, default=3, help="script rounds per tab")
    parser.add_argument("--after-s", type=float, default=60.0,
                        help="seconds memory is followed after the tabs close")  # fmt: skip
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--server-only", action="store_true",
                        help="no browsers: the explorers in threads of this process")  # fmt: skip
    args = parser.parse_args(argv)
    if args.server_only:
        for tabs in args.tabs:
            print(json.dumps(server_only(tabs, args.rounds)), flush=True)
        return 0
    rows = []
    for tabs in args.tabs:
        if not 1 <= tabs <= 60 or not 1 <= args.rounds <= 20:
            parser.error("1..60 tabs and 1..20 rounds")
        with tempfile.TemporaryDirectory() as folder:
            rows.append(summary(run(tabs, args.rounds, args.after_s, Path(folder))))
        print(json.dumps(rows[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    keys = ["tabs", "processes", "idle_mib", "open_mib", "peak_mib", "after_mib", "per_tab_mib",
            "freed_s", "cached_p50_ms", "cached_p95_ms", "class_p50_ms", "class_p95_ms",
            "image_p50_ms", "image_p95_ms", "upload_p95_ms", "script_s", "server_cpu_s",
            "browser_cpu_s"]  # fmt: skip
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row.get(key)) for key in keys) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

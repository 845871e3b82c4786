"""Screenshot test of the Prefect UI's flow-run page: a 2-language run shows every per-language lane.

Headless Debian Chromium (/usr/bin/chromium, `apt-get install -y chromium`) driven by Playwright for Python;
Playwright's own browser download is never used. Screenshots go to $DUBFORGE_UI_SCREENSHOTS (default: the
test's tmp dir).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from .conftest import project, task_runs, wait

CHROMIUM = Path("/usr/bin/chromium")
# as root, offline: no sandbox, no GPU, and nothing that phones home (the network here is closed)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
LANGUAGES = ["es", "de"]
LANES = ("translate", "voice", "mix", "deliver")
SHARED = ("ingest", "transcribe", "align", "master")
WIDTH = 1440

pytestmark = [
    pytest.mark.service,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (apt-get install -y chromium)"),
]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")


def test_run_page_shows_the_per_language_lanes(service, tmp_path):
    import numpy as np
    from PIL import Image

    from dubforge.service.submit import ui_url_for

    run_id = service.submit(project(service.demo, "ui", LANGUAGES))
    finished = wait(run_id)
    assert finished.completed, f"{finished.state}: {finished.message}"
    api_names = {t.name for t in task_runs(run_id)}
    lanes = [f"{stage}-{lang}" for lang in LANGUAGES for stage in LANES]
    assert set(lanes) | set(SHARED) <= api_names, api_names

    shots = Path(os.environ.get("DUBFORGE_UI_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    page_png, graph_png = shots / "flow-run-task-runs.png", shots / "flow-run-graph.png"
    expect = sync_api.expect
    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": 1000})
            page.set_default_timeout(30_000)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(ui_url_for(run_id), wait_until="domcontentloaded")

            # the run itself: its name and final state in the page header
            header = page.get_by_role("banner")
            expect(header).to_contain_text(finished.name)
            expect(header).to_contain_text("Completed")

            # the "Task Runs" tab lists the run's task runs by name, each a link to its page
            page.get_by_role("tablist").get_by_text("Task Runs", exact=True).click()
            panel = page.get_by_role("tabpanel", name="Task Runs")
            n = len(api_names)
            expect(panel).to_contain_text(re.compile(rf"{n} Task runs\s*\({n} completed\)", re.IGNORECASE))
            for name in [*SHARED, *lanes]:
                expect(panel.get_by_role("link", name=name, exact=True)).to_be_visible()
            shown = set(panel.get_by_role("link").all_inner_texts())
            assert shown == api_names, f"UI lists {sorted(shown)}, the API {sorted(api_names)}; page errors: {errors}"

            # the page scrolls inside the app's own container: grow the viewport until everything fits, so the
            # full-page screenshot holds the header, the graph and every task-run row
            height = page.evaluate("""() => Math.ceil(Math.max(document.documentElement.scrollHeight,
                ...[...document.querySelectorAll('*')]
                    .filter(e => ['auto', 'scroll'].includes(getComputedStyle(e).overflowY))
                    .map(e => e.getBoundingClientRect().top + window.scrollY + e.scrollHeight)))""")
            height = min(int(height), 4000)
            page.set_viewport_size({"width": WIDTH, "height": height})
            for name in lanes:
                expect(panel.get_by_role("link", name=name, exact=True)).to_be_in_viewport()

            # the run graph is a canvas drawn asynchronously (WebGL): screenshot until its completed (green) nodes show
            canvas = page.locator("canvas").first
            expect(canvas).to_be_visible()
            deadline = time.monotonic() + 20
            while True:
                page.screenshot(path=str(page_png), full_page=True)
                box = canvas.bounding_box()
                with Image.open(page_png) as image:
                    graph = image.crop((round(box["x"]), round(box["y"]), round(box["x"] + box["width"]),
                                        round(box["y"] + box["height"])))
                if _green_nodes(graph) >= len(lanes) or time.monotonic() > deadline:
                    break
                page.wait_for_timeout(500)
            graph.save(graph_png)
        finally:
            browser.close()

    for path in (page_png, graph_png):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(page_png) as image:
        assert image.format == "PNG" and image.size == (WIDTH, height), image.size
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.std() > 20, f"{page_png} looks blank (std {pixels.std():.1f})"
    # the content column is not blank either, at the top (header, graph) and at the bottom (task-run rows)
    content = pixels[:, WIDTH // 5:]
    assert content[: height // 3].std() > 20 and content[-height // 3:].std() > 20, f"{page_png} is blank in parts"
    with Image.open(graph_png) as image:
        assert image.size[0] > 400 and image.size[1] > 150, image.size
        nodes = _green_nodes(image)
    assert nodes >= len(lanes), f"{graph_png}: the run graph shows {nodes} completed task runs"


def _green_nodes(image) -> int:
    """Separate patches of the UI's 'Completed' green in IMAGE: the run graph's completed task-run nodes."""
    import numpy as np
    from scipy import ndimage

    rgb = np.asarray(image.convert("RGB"), dtype=int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    labels, _ = ndimage.label((g > 120) & (g - r > 50) & (g - b > 30))
    return int((np.bincount(labels.ravel())[1:] >= 50).sum())  # patches of 50+ pixels, not anti-aliasing specks


def test_run_page_of_a_partly_failed_run(service, tmp_path):
    """A run whose fr lane fails (no en->fr machine translation here) shows Failed in the page header, not a green
    Completed; its blocked fr tasks still carry the language in their names. Screenshot: flow-run-partly-failed.png."""
    import yaml
    from PIL import Image

    from dubforge.service.submit import ui_url_for

    manifest = project(service.demo, "partly", ["es", "fr"])
    data = yaml.safe_load(manifest.read_text())
    broken = service.demo / "not-a-model"  # passes validate (the folder exists), fails when the backend loads it
    broken.mkdir(exist_ok=True)
    data["targets"][1]["translation"] = {"from": "machine", "backend": "ctranslate2", "model": str(broken)}
    manifest.write_text(yaml.safe_dump(data, sort_keys=False))
    run_id = service.submit(manifest)
    finished = wait(run_id)
    assert finished.state == "Failed" and finished.languages == {"es": "completed", "fr": "failed"}, finished
    names = {t.name for t in task_runs(run_id)}
    assert {"translate-es", "voice-es", "deliver-es", "translate-fr"} <= names, names
    blocked = sorted(n for n in names if re.fullmatch(r"(voice|mix|deliver)-fr(-[0-9a-f]+)?", n))
    assert len(blocked) == 3, names

    shots = Path(os.environ.get("DUBFORGE_UI_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    page_png = shots / "flow-run-partly-failed.png"
    expect = sync_api.expect
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": 1400})
            page.set_default_timeout(30_000)
            page.goto(ui_url_for(run_id), wait_until="domcontentloaded")
            header = page.get_by_role("banner")
            expect(header).to_contain_text("partly")  # the run is named after the project
            expect(header).to_contain_text("Failed")
            page.get_by_role("tablist").get_by_text("Task Runs", exact=True).click()
            panel = page.get_by_role("tabpanel", name="Task Runs")
            for name in ["translate-fr", "translate-es", *blocked]:
                expect(panel.get_by_role("link", name=name, exact=True)).to_be_visible()
            page.wait_for_timeout(2000)  # the run graph (canvas) draws asynchronously
            page.screenshot(path=str(page_png), full_page=True)
        finally:
            browser.close()
    with Image.open(page_png) as image:
        assert image.format == "PNG" and image.size[0] == WIDTH

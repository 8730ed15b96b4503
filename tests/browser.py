"""ComfyUI's web UI in a real browser: Debian's Chromium, headless, driven by playwright.

Never a downloaded browser: ``/usr/bin/chromium`` (``apt-get install chromium``; ``.ci/run`` installs it), a fresh
profile folder per page, and every request that does not go to the local server is aborted (the newer frontend asks
api.comfy.org for releases and Hugging Face for the size of a missing model; tests reach nothing outside).
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
READY = "() => Boolean(window.app && window.app.graph && window.app.canvas && window.LiteGraph)"

# Load a workflow as the web UI's file open does (app.loadGraphData), then read back what the graph made of it: the
# node types it knows, the widget values it kept (the serialised graph), and combo values outside their choices.
OPEN_WORKFLOW = """async (workflow) => {
  const problems = [];
  await window.app.loadGraphData(workflow);
  const saved = window.app.graph.serialize();
  const savedById = Object.fromEntries(saved.nodes.map(n => [n.id, n]));
  for (const node of workflow.nodes) {
    const live = window.app.graph.getNodeById(node.id);
    if (!live) { problems.push(`node ${node.id} (${node.type}) was not created`); continue; }
    if (!(node.type in window.LiteGraph.registered_node_types)) problems.push(`${node.type} is not a known node`);
    const kept = savedById[node.id].widgets_values ?? [];
    if (JSON.stringify(kept) !== JSON.stringify(node.widgets_values ?? []))
      problems.push(`${node.type} ${node.id}: widget values ${JSON.stringify(node.widgets_values)} became ` +
                    `${JSON.stringify(kept)}`);
    for (const widget of live.widgets ?? []) {
      const choices = widget.options && widget.options.values;
      if (widget.type === 'combo' && Array.isArray(choices) && !choices.includes(widget.value))
        problems.push(`${node.type} ${node.id}.${widget.name}: ${JSON.stringify(widget.value)} is not a choice`);
    }
  }
  if (saved.links.length !== workflow.links.length)
    problems.push(`${workflow.links.length} links became ${saved.links.length}`);
  return problems;
}"""
CLEAR = "async () => { window.app.graph.clear(); }"
VERSION = "() => window.__COMFYUI_FRONTEND_VERSION__ ?? null"
VISIBLE_DIALOGS = """() => Array.from(document.querySelectorAll('[role=dialog], [role=alertdialog], .p-toast-message'))
  .filter(e => e.offsetParent !== null && e.innerText.trim()).map(e => e.innerText.trim())"""
# frontend 1.58.1: the Issues panel's missing-model rows (each: a button titled with the file, then its folder)
NEW_MISSING_ROWS = """() => Array.from(document.querySelectorAll(
    '[data-testid="error-group-missing-model"] button[title]:not([aria-label])'))
  .map(b => [b.closest('span.flex-col')?.querySelector('span.block')?.innerText ?? '', b.title])"""


def require_chromium() -> Path:
    if not CHROMIUM.is_file():
        pytest.skip(f"no {CHROMIUM}: install Debian's chromium (apt-get install chromium), as .ci/run does")
    return CHROMIUM


class Page:
    """One browser page on one server's web UI, with the page errors it raised."""

    def __init__(self, page, url: str):
        self.page, self.url, self.errors = page, url, []
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def open(self, timeout_ms: int = 120_000) -> None:
        self.page.goto(self.url)
        self.page.wait_for_function(READY, timeout=timeout_ms)
        self.errors.clear()   # 1.27.10 raises one TypeError while it first applies settings: not the pack's

    def frontend_version(self) -> str | None:
        return self.page.evaluate(VERSION)

    def open_workflow(self, workflow: dict) -> list[str]:
        return self.page.evaluate(OPEN_WORKFLOW, workflow)

    def dialogs(self) -> list[str]:
        return self.page.evaluate(VISIBLE_DIALOGS)

    def clear(self) -> None:
        self.page.keyboard.press("Escape")
        self.page.evaluate(CLEAR)

    def template_browser(self, pack: str) -> tuple[str, list[tuple[str, int, str]]]:
        """Open the template browser on the pack's group: (the page's text, the thumbnails fetched: url, status,
        content type). Cards load their thumbnails as they come into view, so only the first rows are fetched."""
        fetched: list[tuple[str, int, str]] = []

        def record(response) -> None:
            if f"/workflow_templates/{pack}/" in response.url and response.url.endswith(".jpg"):
                fetched.append((response.url, response.status, response.headers.get("content-type", "")))

        self.page.on("response", record)
        self.page.evaluate("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
        self.page.locator("[role=dialog]").get_by_text(pack, exact=True).first.click()
        for _ in range(100):   # up to 10 s for the first thumbnails, then a moment for the rest of the rows
            if fetched:
                break
            self.page.wait_for_timeout(100)
        self.page.wait_for_timeout(1000)
        text = self.page.locator("body").inner_text()
        self.page.remove_listener("response", record)
        self.page.keyboard.press("Escape")
        return text, fetched

    def missing_models_old(self) -> set[tuple[str, str]]:
        """Frontend 1.27.10's dialog: one line "<folder> / <file>" per missing model."""
        dialog = self.page.locator("[role=dialog]").filter(has_text="Missing Models")
        dialog.wait_for(timeout=15_000)
        lines = [line.strip() for line in dialog.inner_text().splitlines()]
        found = {tuple(line.split(" / ", 1)) for line in lines if " / " in line}
        self.page.keyboard.press("Escape")
        dialog.wait_for(state="detached", timeout=15_000)
        return found

    def missing_models_new(self) -> set[tuple[str, str]]:
        """Frontend 1.58.1: the "N issues found" toast's View details opens the Issues panel; its rows."""
        details = self.page.get_by_role("button", name="View details")
        group = self.page.locator('[data-testid="error-group-missing-model"]')
        details.or_(group).first.wait_for(timeout=15_000)
        if details.count():
            details.first.click()
        group.wait_for(timeout=15_000)
        self.page.wait_for_timeout(300)   # the rows fill in as the models' presence is verified
        return {tuple(row) for row in self.page.evaluate(NEW_MISSING_ROWS)}


@contextmanager
def browser_page(url: str):
    """A fresh headless Chromium on ``url`` (its own profile folder), reaching nothing but that server."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="arc2face-chromium-")
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile, executable_path=str(require_chromium()), args=FLAGS, headless=True,
                viewport={"width": 1600, "height": 1000})
            context.route(lambda request_url: not request_url.startswith(url), lambda route: route.abort())
            try:
                page = Page(context.new_page(), url)
                page.open()
                yield page
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)

"""Test helpers: look at TensorBoard in a real, headless Chromium (selenium).

`Browser` drives one headless Chromium through `chromedriver`: it opens a
TensorBoard page (`open("#scalars")`), waits for a condition (`wait_for`),
queries elements through shadow roots (`query`, `texts`, `evaluate`) and saves
screenshots (`screenshot`). TensorBoard's UI is Angular with Polymer dashboards
inside (`tf-scalar-dashboard`, `tf-graph-dashboard`, ...); their content lives in
nested shadow roots that `document.querySelectorAll` does not enter, so every
query here runs a small JavaScript walk through all of them (`DEEP_JS`).

`missing()` says why a browser cannot run here (no selenium, no chromium, no
chromedriver), or returns None; tests skip with that reason.

Screenshots go to the folder the caller names; `output_dir(name, fallback)`
picks `$HARNESS_TEST_OUTPUT/<name>` when that variable is set (kept after the
run), else the fallback (pytest's `tmp_path`).
"""

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER = "chromedriver"
WINDOW = (1400, 1000)
TIMEOUT = 30.0

# deep(root, selector) -> every element matching `selector` under `root`,
# including inside open shadow roots, in document order of each tree.
# deepText(element) -> its text with the text of its shadow trees.
DEEP_JS = """
const deep = (root, selector) => {
  const found = [];
  const walk = (node) => {
    if (node.querySelectorAll) {
      for (const e of node.querySelectorAll(selector)) found.push(e);
      for (const e of node.querySelectorAll('*')) if (e.shadowRoot) walk(e.shadowRoot);
    }
  };
  if (root.shadowRoot) walk(root.shadowRoot);
  walk(root);
  return [...new Set(found)];
};
const deepText = (element) => {
  const parts = [];
  const walk = (node) => {
    if (node.nodeType === Node.TEXT_NODE) { parts.push(node.textContent); return; }
    const kind = node.nodeType;
    if (kind !== Node.ELEMENT_NODE && kind !== Node.DOCUMENT_FRAGMENT_NODE) return;
    if (node.localName === 'style' || node.localName === 'script') return;
    if (node.shadowRoot) walk(node.shadowRoot);
    for (const child of node.childNodes) walk(child);
  };
  walk(element);
  return parts.join(' ').replace(/\\s+/g, ' ').trim();
};
"""


def missing() -> str | None:
    """Why no headless browser can run here, or None when one can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium; it is in the test extra)"
    if chromium_binary() is None:
        return f"no Chromium on PATH ({', '.join(CHROMIUM_NAMES)}; apt-get install chromium)"
    if shutil.which(CHROMEDRIVER) is None:
        return "no chromedriver on PATH (apt-get install chromium-driver)"
    return None


def chromium_binary() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def output_dir(name: str, fallback: Path) -> Path:
    """`$HARNESS_TEST_OUTPUT/<name>` when that is set, else `fallback`; created."""
    root = os.environ.get("HARNESS_TEST_OUTPUT")
    folder = Path(root) / name if root else Path(fallback)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Browser:
    """One headless Chromium session on TensorBoard at `base_url`.

    Args:
        base_url: the server, e.g. `http://127.0.0.1:6006`.
        screenshots: the folder `screenshot` writes into.
        timeout: default seconds `wait_for` waits.
    """

    def __init__(self, base_url: str, screenshots: Path, *, timeout: float = TIMEOUT) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.base_url = base_url.rstrip("/")
        self.screenshots = Path(screenshots)
        self.screenshots.mkdir(parents=True, exist_ok=True)
        self.timeout = timeout
        options = webdriver.ChromeOptions()
        options.binary_location = chromium_binary()
        for argument in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            "--no-proxy-server",  # the server is on loopback; never ask a proxy
            "--disable-extensions",
            "--no-first-run",
        ):
            options.add_argument(argument)
        service = Service(shutil.which(CHROMEDRIVER))
        self.driver = webdriver.Chrome(service=service, options=options)
        self.driver.set_page_load_timeout(timeout)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self.driver.quit()

    # --- pages ----------------------------------------------------------------------

    def open(self, fragment: str, *, reload: bool = True) -> None:
        """Loads `<base_url>/<fragment>` (e.g. "#scalars").

        With `reload` (the default) the page is loaded afresh, so a dashboard
        starts from the plugins and data the server has now, and no dashboard
        opened before stays in the page.
        """
        url = f"{self.base_url}/{fragment.lstrip('/')}"
        if reload:
            self.driver.get("about:blank")
        self.driver.get(url)

    def screenshot(self, name: str) -> Path:
        """Saves the window as `<screenshots>/<name>.png` and returns the path."""
        path = self.screenshots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    @contextlib.contextmanager
    def inside_frames(self, *selectors: str, timeout: float | None = None) -> Iterator[None]:
        """Runs the block inside nested frames, e.g. `inside_frames("iframe", "iframe")`.

        Each selector (searched through shadow roots) names the frame to enter inside
        the previous one; the first match is entered once it is there. The page's
        top document is current again afterwards.
        """
        try:
            for depth, selector in enumerate(selectors):
                [frame, *_] = self.wait_for(
                    lambda selector=selector: self.query(selector),
                    what=f"frame {depth + 1} ({selector!r})",
                    timeout=timeout,
                )
                self.driver.switch_to.frame(frame)
            yield
        finally:
            self.driver.switch_to.default_content()

    # --- queries (through shadow roots) --------------------------------------------

    def evaluate(self, body: str, *args):
        """Runs JavaScript `body` with `deep` / `deepText` defined and returns its value.

        `arguments[0..]` are `args` (WebElements become DOM elements).
        """
        return self.driver.execute_script(DEEP_JS + body, *args)

    def query(self, selector: str, within: str | None = None) -> list:
        """WebElements matching `selector`, searched through shadow roots.

        With `within`, only under the elements matching that selector (e.g. a
        dashboard: `within="tf-scalar-dashboard"`).
        """
        return self.evaluate(
            """
            const [selector, within] = arguments;
            const roots = within ? deep(document, within) : [document];
            return [...new Set(roots.flatMap((root) => deep(root, selector)))];
            """,
            selector,
            within,
        )

    def texts(self, selector: str, within: str | None = None) -> list:
        """The text (shadow trees included) of each element `query` would find."""
        return self.evaluate(
            """
            const [selector, within] = arguments;
            const roots = within ? deep(document, within) : [document];
            return [...new Set(roots.flatMap((root) => deep(root, selector)))].map(deepText);
            """,
            selector,
            within,
        )

    def text(self, within: str) -> str:
        """All the text of the elements matching `within`, shadow trees included."""
        return " ".join(self.texts(within))

    # --- waiting --------------------------------------------------------------------

    def wait_for(
        self,
        condition: Callable[[], object],
        *,
        what: str,
        timeout: float | None = None,
        screenshot: str | None = None,
    ):
        """Calls `condition` until it returns something truthy, and returns that.

        A JavaScript error or a stale element inside counts as "not yet" (the
        dashboards re-render as their data arrives). On timeout it raises
        AssertionError naming `what` and the last value, after saving the
        screenshot `<screenshot>-timeout.png` when given.
        """
        from selenium.common.exceptions import (
            JavascriptException,
            StaleElementReferenceException,
            TimeoutException,
        )
        from selenium.webdriver.support.ui import WebDriverWait

        last = {"value": None}

        def check(_driver):
            try:
                last["value"] = condition()
            except (JavascriptException, StaleElementReferenceException) as error:
                last["value"] = f"<{type(error).__name__}: {error.msg}>"
                return False
            return last["value"]

        seconds = self.timeout if timeout is None else timeout
        try:
            return WebDriverWait(self.driver, seconds, poll_frequency=0.25).until(check)
        except TimeoutException:
            where = ""
            if screenshot:
                where = f"; screenshot {self.screenshot(f'{screenshot}-timeout')}"
            raise AssertionError(
                f"timed out after {seconds:.0f} s waiting for {what} "
                f"(last value: {str(last['value'])[:500]!r}){where}"
            ) from None

"""Headless-Chromium check of a self-contained HTML report (``reports/report.html``).

``inspect_report(path)`` opens the file in headless Chromium and returns what a
reader's browser would do with it: every URL the page requested (other than the
report itself and ``data:`` URIs), the text visible in the first viewport, and
whether ``#error-table`` is visible in that first screen.

Approach: the Chrome DevTools Protocol (CDP) spoken directly over
``--remote-debugging-pipe`` (NUL-terminated JSON on file descriptors 3 and 4),
with the standard library only.  Options weighed:

* Playwright (PyPI) with ``executable_path=/usr/lib/chromium/chromium`` does work
  here (1.65 with Debian's Chromium 156), but it is a 53 MB wheel / 165 MB
  installed that bundles a Node.js driver, and Playwright only supports the
  Chromium revision it pins (its own download cannot be fetched from this
  machine), so a distro-Chromium upgrade can break it.
* pyppeteer is unmaintained and wants to download its own Chromium; Selenium
  needs ``chromium-driver`` and its selenium-manager tries the network.
* CDP over a websocket needs a client library and a debugging port (races,
  port clashes).  The pipe is the transport Playwright and Puppeteer use
  themselves, needs no port and no library, and the handful of CDP methods used
  here (Target, Page, Network, Fetch, Emulation, Runtime) have been stable for
  years.

So: no Python dependency at all, only the ``chromium`` Debian package.

Requests are captured twice over: ``Fetch.requestPaused`` intercepts every
request the page (and any frame or worker, via auto-attach) makes, and
``Network.requestWillBeSent`` / ``Network.webSocketCreated`` record anything
that is not intercepted.  Requests to the network (http, https, ftp, ws, ...)
are recorded and then *failed* (``BlockedByClient``), so the check is hermetic
and fast whatever the machine's connectivity; ``file:``, ``data:`` and
``blob:`` loads are allowed to proceed (so nested requests, e.g. a font named
by another local stylesheet, are seen too).  After the load event the page is
given time to go quiet, measured at the top, then scrolled to the bottom (to
trigger lazy-loaded images) and given time to go quiet again.

Chromium runs with ``--no-sandbox`` (tests run as root), a temporary
user-data directory, and in its own session; on exit the whole process group
is killed and the directory removed, so no process is left behind.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["find_chromium", "inspect_report", "BrowserError"]

#: Candidate executables, in order.  Debian's ``/usr/bin/chromium`` is a shell
#: wrapper that adds flags (extensions, GPU rasterisation) from
#: ``/etc/chromium.d``; the real binary behind it is preferred when present.
_CANDIDATES = (
    "/usr/lib/chromium/chromium",
    "chromium",
    "chromium-browser",
    "google-chrome-stable",
    "google-chrome",
    "chrome",
    "headless_shell",
)

#: URL schemes that never leave the page or the report's own data.
_LOCAL_SCHEMES = ("data:", "blob:", "about:", "chrome-error:")

_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--remote-debugging-pipe",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--disable-breakpad",
    "--disable-crash-reporter",
    "--disable-client-side-phishing-detection",
    "--disable-domain-reliability",
    "--disable-features=Translate,MediaRouter,OptimizationHints,"
    "InterestFeedContentSuggestions,CalculateNativeWinOcclusion,AutofillServerCommunication",
    "--metrics-recording-only",
    "--no-pings",
    "--password-store=basic",
    "--use-mock-keychain",
    "--mute-audio",
    "--hide-scrollbars",
    "--force-color-profile=srgb",
    "--font-render-hinting=none",
)


class BrowserError(RuntimeError):
    """Chromium could not be started, died, or did not answer in time."""


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable, or None.

    ``$CHROMIUM`` (if set and executable) wins; then the Debian binary
    ``/usr/lib/chromium/chromium``; then ``chromium``, ``chromium-browser``,
    ``google-chrome`` ... on ``$PATH``.
    """
    env = os.environ.get("CHROMIUM")
    if env:
        found = shutil.which(env)
        if found:
            return found
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


# ---------------------------------------------------------------------------
# Minimal CDP client over --remote-debugging-pipe
# ---------------------------------------------------------------------------


class _Chromium:
    """One headless Chromium process, spoken to over the CDP pipe."""

    def __init__(self, executable: str, width: int, height: int, deadline: float):
        self.deadline = deadline
        self.tmp = tempfile.mkdtemp(prefix="report-check-")
        self.stderr_path = os.path.join(self.tmp, "chromium.stderr")
        self.proc: subprocess.Popen | None = None
        self._next_id = 0
        self._buf = b""
        self._events: list[dict] = []
        self.on_event = None  # callable(message) for every event while pumping
        # Pipes: the browser reads commands on fd 3 and writes replies on fd 4.
        # Our ends are kept; the child's ends are moved above fd 9 so that the
        # dup2 onto 3 and 4 in the child cannot clobber one another.
        cmd_r, self._cmd_w = os.pipe()
        self._out_r, out_w = os.pipe()
        child_r = fcntl.fcntl(cmd_r, fcntl.F_DUPFD_CLOEXEC, 10)
        child_w = fcntl.fcntl(out_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(cmd_r)
        os.close(out_w)

        def _map_fds():  # runs in the child between fork and exec
            os.dup2(child_r, 3)  # dup2 leaves the new fd inheritable
            os.dup2(child_w, 4)

        argv = [executable, *_FLAGS, f"--user-data-dir={os.path.join(self.tmp, 'profile')}",
                f"--window-size={width},{height}", "about:blank"]
        env = dict(os.environ)
        env.setdefault("HOME", self.tmp)
        env["XDG_CONFIG_HOME"] = os.path.join(self.tmp, "config")
        env["XDG_CACHE_HOME"] = os.path.join(self.tmp, "cache")
        try:
            with open(self.stderr_path, "wb") as err:
                self.proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env,
                    close_fds=False, preexec_fn=_map_fds, start_new_session=True, cwd=self.tmp)
        except BaseException:
            for fd in (child_r, child_w, self._cmd_w, self._out_r):
                os.close(fd)
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        os.close(child_r)
        os.close(child_w)

    # -- transport -----------------------------------------------------------

    def _stderr_tail(self) -> str:
        try:
            with open(self.stderr_path, "rb") as fh:
                return fh.read()[-2000:].decode(errors="replace")
        except OSError:
            return ""

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self._next_id += 1
        msg: dict = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        try:
            while data:
                data = data[os.write(self._cmd_w, data):]
        except (BrokenPipeError, OSError) as exc:
            raise BrowserError(f"chromium closed its pipe: {exc}\n{self._stderr_tail()}") from exc
        return self._next_id

    def _read_message(self, until: float) -> dict | None:
        """Next message from the browser, or None if ``until`` passes first."""
        while b"\0" not in self._buf:
            remaining = min(until, self.deadline) - time.monotonic()
            if remaining <= 0:
                if time.monotonic() >= self.deadline:
                    raise BrowserError("chromium did not answer in time\n" + self._stderr_tail())
                return None
            ready, _, _ = select.select([self._out_r], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(self._out_r, 1 << 20)
            if not chunk:
                code = self.proc.poll() if self.proc else None
                raise BrowserError(f"chromium exited (status {code})\n{self._stderr_tail()}")
            self._buf += chunk
        raw, _, self._buf = self._buf.partition(b"\0")
        return json.loads(raw)

    def pump(self, until: float) -> None:
        """Handle events until ``until`` (monotonic time)."""
        while True:
            msg = self._read_message(until)
            if msg is None:
                return
            self._dispatch(msg)

    def _dispatch(self, msg: dict) -> None:
        # Replies to fire-and-forget commands (``send``) are dropped here.
        if "method" in msg and self.on_event is not None:
            self.on_event(msg)

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 10.0) -> dict:
        """Send a command and wait for its reply, handling events meanwhile."""
        cid = self.send(method, params, session)
        until = time.monotonic() + timeout
        while True:
            msg = self._read_message(until)
            if msg is None:
                raise BrowserError(f"no reply to {method} within {timeout} s\n{self._stderr_tail()}")
            if msg.get("id") == cid:
                if "error" in msg:
                    raise BrowserError(f"{method} failed: {msg['error']}")
                return msg.get("result", {})
            self._dispatch(msg)

    # -- shutdown ------------------------------------------------------------

    def close(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                self.send("Browser.close")
                proc.wait(timeout=3)
            except (BrowserError, subprocess.TimeoutExpired):
                pass
        if proc is not None:
            # Renderer, GPU, zygote and crashpad helpers share the session's
            # process group: kill all of them, whatever the browser did.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        for fd in (self._cmd_w, self._out_r):
            try:
                os.close(fd)
            except OSError:
                pass
        self._kill_strays()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _kill_strays(self, wait: float = 3.0) -> None:
        """Kill processes that left the group but still name our temp dir.

        chrome_crashpad_handler detaches into its own session (so ``killpg``
        misses it); it normally exits with the browser, and its command line
        names its database under ``self.tmp``, which identifies it as ours.
        """
        marker = self.tmp.encode()
        until = time.monotonic() + wait
        while True:
            strays = []
            for entry in os.listdir("/proc"):
                if not entry.isdigit() or int(entry) == os.getpid():
                    continue
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as fh:
                        if marker in fh.read():
                            strays.append(int(entry))
                except OSError:
                    continue
            if not strays:
                return
            if time.monotonic() >= until:
                for pid in strays:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
                return
            time.sleep(0.05)


# ---------------------------------------------------------------------------
# What is measured in the page
# ---------------------------------------------------------------------------

_MEASURE_JS = r"""
(() => {
  const vw = window.innerWidth, vh = window.innerHeight;
  const visible = (el) => {
    if (!el) return false;
    if (el.checkVisibility) {
      return el.checkVisibility({checkOpacity: true, checkVisibilityCSS: true,
                                 opacityProperty: true, visibilityProperty: true});
    }
    const s = getComputedStyle(el);
    return s.display !== 'none' && s.visibility !== 'hidden' && s.opacity !== '0';
  };
  const onScreen = (r) => r.width > 0 && r.height > 0 && r.bottom > 0 && r.right > 0
                          && r.top < vh && r.left < vw;
  const inside = (r) => r.top >= 0 && r.left >= 0 && r.bottom <= vh && r.right <= vw;

  // Text visible in the first viewport: whole text nodes when entirely on
  // screen, word by word when they straddle its edge.
  const parts = [];
  const walker = document.createTreeWalker(document.body || document.documentElement,
                                           NodeFilter.SHOW_TEXT);
  const range = document.createRange();
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const text = node.nodeValue;
    if (!text || !text.trim() || !visible(node.parentElement)) continue;
    range.selectNodeContents(node);
    const rects = Array.from(range.getClientRects());
    if (!rects.some(onScreen)) continue;
    if (rects.every((r) => inside(r) || r.width === 0 || r.height === 0)) {
      parts.push(text);
      continue;
    }
    const words = [];
    const re = /\S+/g;
    let m;
    while ((m = re.exec(text)) !== null) {
      range.setStart(node, m.index);
      range.setEnd(node, m.index + m[0].length);
      if (Array.from(range.getClientRects()).some(onScreen)) words.push(m[0]);
    }
    if (words.length) parts.push(words.join(' '));
  }
  const firstScreenText = parts.join(' ').replace(/\s+/g, ' ').trim();

  const box = (el) => {
    if (!el) return null;
    const r = el.getBoundingClientRect();
    return {top: r.top + window.scrollY, left: r.left + window.scrollX,
            width: r.width, height: r.height};
  };
  const table = document.getElementById('error-table');
  const tableBox = box(table);
  const tableVisible = !!table && visible(table) && tableBox.width > 0 && tableBox.height > 0;
  const first = document.body ? document.body.firstElementChild : null;
  const describe = (el) => el ? el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') : null;
  const text = (id) => {
    const el = document.getElementById(id);
    return el ? el.textContent.replace(/\s+/g, ' ').trim() : null;
  };
  const section = document.getElementById('how-often-wrong');
  const h2 = section ? section.querySelector('h2') : null;
  return {
    title: document.title,
    viewport: {width: vw, height: vh},
    scroll_height: document.documentElement.scrollHeight,
    first_screen_text: firstScreenText,
    error_table_box: tableBox,
    error_table_visible: tableVisible,
    error_table_in_first_screen: tableVisible && tableBox.top >= 0 && tableBox.top < vh,
    first_body_element: describe(first),
    how_often_wrong_heading: h2 ? h2.textContent.replace(/\s+/g, ' ').trim() : null,
    natural_frequencies_text: text('natural-frequencies'),
  };
})()
"""

_SCROLL_JS = r"""
(async () => {
  const step = Math.max(200, window.innerHeight);
  for (let y = 0; y < document.documentElement.scrollHeight; y += step) {
    window.scrollTo(0, y);
    await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 20)));
  }
  window.scrollTo(0, document.documentElement.scrollHeight);
  return true;
})()
"""


def _strip_fragment(url: str) -> str:
    return url.split("#", 1)[0]


def inspect_report(html_path: Path, width: int = 1280, height: int = 800, *,
                   executable: str | None = None, timeout: float = 25.0,
                   quiet: float = 0.5, script: str | None = None) -> dict:
    """Open ``html_path`` in headless Chromium and report on it.

    Returns a dict with at least:

    ``requests``
        every URL the page requested, in order and without duplicates, other
        than the report's own ``file://`` URL and ``data:``/``blob:``/``about:``
        URLs.  Network requests are blocked after being recorded.
    ``first_screen_text``
        the text visible in the first ``width`` x ``height`` viewport,
        whitespace-normalised.
    ``error_table_in_first_screen``
        ``#error-table`` exists, is visible, and its bounding box's top is
        within the first viewport.
    ``title``
        ``document.title``.

    and, for diagnostics: ``error_table_box`` (document coordinates),
    ``error_table_visible``, ``first_body_element`` (e.g.
    ``"section#how-often-wrong"``), ``how_often_wrong_heading``,
    ``natural_frequencies_text``, ``viewport``, ``scroll_height``,
    ``blocked`` (the requests that were failed), ``console_errors`` (uncaught
    exceptions and ``console.error`` messages), ``load_event`` (whether the
    load event fired), ``browser`` (version), ``url``, ``user_data_dir`` (the
    temporary directory, already removed) and ``seconds``.

    ``script``, if given, is a JavaScript expression evaluated last (a promise is awaited);
    its JSON value is ``result["script"]``.

    Raises ``FileNotFoundError`` if the file is missing, ``BrowserError`` if
    Chromium is missing, fails to start, or does not answer within ``timeout``
    seconds.  ``quiet`` is how long the page must make no new request before
    it is measured.
    """
    started = time.monotonic()
    html_path = Path(html_path).resolve()
    if not html_path.is_file():
        raise FileNotFoundError(html_path)
    executable = executable or find_chromium()
    if not executable:
        raise BrowserError("chromium not installed: apt-get install chromium")
    own_url = html_path.as_uri()

    requests: list[str] = []
    blocked: list[str] = []
    console_errors: list[str] = []
    state = {"last_activity": time.monotonic(), "load": False}

    def record(url: str) -> None:
        state["last_activity"] = time.monotonic()
        if not url or url.startswith(_LOCAL_SCHEMES) or _strip_fragment(url) == own_url:
            return
        if url not in requests:
            requests.append(url)

    browser = _Chromium(executable, width, height, started + timeout)
    try:
        def on_event(msg: dict) -> None:
            method, params, session = msg["method"], msg.get("params", {}), msg.get("sessionId")
            if method == "Fetch.requestPaused":
                url = params["request"]["url"]
                record(url)
                scheme = url.split(":", 1)[0].lower()
                if scheme in ("file", "data", "blob", "about"):
                    browser.send("Fetch.continueRequest", {"requestId": params["requestId"]}, session)
                else:
                    if url not in blocked:
                        blocked.append(url)
                    browser.send("Fetch.failRequest", {"requestId": params["requestId"],
                                                       "errorReason": "BlockedByClient"}, session)
            elif method == "Network.requestWillBeSent":
                record(params["request"]["url"])
            elif method == "Network.webSocketCreated":
                record(params.get("url", ""))
                blocked.append(params.get("url", ""))
            elif method in ("Network.loadingFinished", "Network.loadingFailed",
                            "Network.responseReceived"):
                state["last_activity"] = time.monotonic()
            elif method == "Page.loadEventFired" and session == page_session:
                state["load"] = True
            elif method == "Target.attachedToTarget":
                # Frames in other processes and workers: capture their requests too.
                child = params["sessionId"]
                setup_session(child, params.get("targetInfo", {}).get("type"))
                browser.send("Runtime.runIfWaitingForDebugger", {}, child)
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                exc = details.get("exception", {})
                console_errors.append(exc.get("description") or details.get("text", ""))
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                console_errors.append(" ".join(
                    str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))

        def setup_session(session: str, kind: str | None) -> None:
            # Sent without waiting: replies are dispatched (and ignored) later.
            # Commands on a session are processed in order, so these are in
            # force before runIfWaitingForDebugger lets the target run.
            browser.send("Fetch.enable", {"patterns": [{"urlPattern": "*"}]}, session)
            browser.send("Network.enable", {}, session)
            browser.send("Runtime.enable", {}, session)
            if kind in (None, "page", "iframe"):
                browser.send("Target.setAutoAttach", {"autoAttach": True, "waitForDebuggerOnStart": True,
                                                      "flatten": True}, session)

        page_session = None
        browser.on_event = on_event
        version = browser.call("Browser.getVersion").get("product", "")
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        page_session = browser.call("Target.attachToTarget",
                                    {"targetId": target, "flatten": True})["sessionId"]
        browser.call("Page.enable", {}, page_session)
        browser.call("Emulation.setDeviceMetricsOverride",
                     {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                     page_session)
        browser.call("Fetch.enable", {"patterns": [{"urlPattern": "*"}]}, page_session)
        browser.call("Network.enable", {}, page_session)
        browser.call("Network.setCacheDisabled", {"cacheDisabled": True}, page_session)
        browser.call("Runtime.enable", {}, page_session)
        browser.call("Target.setAutoAttach", {"autoAttach": True, "waitForDebuggerOnStart": True,
                                              "flatten": True}, page_session)

        nav = browser.call("Page.navigate", {"url": own_url}, page_session)
        if nav.get("errorText"):
            raise BrowserError(f"could not open {own_url}: {nav['errorText']}")

        def settle(max_wait: float) -> None:
            """Pump events until the load event fired and nothing new for ``quiet`` s."""
            until = time.monotonic() + max_wait
            while time.monotonic() < until:
                browser.pump(min(until, time.monotonic() + 0.1))
                if state["load"] and time.monotonic() - state["last_activity"] >= quiet:
                    return

        def evaluate(expression: str):
            res = browser.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                    "awaitPromise": True}, page_session)
            if "exceptionDetails" in res:
                raise BrowserError(f"page script failed: {res['exceptionDetails']}")
            return res["result"].get("value")

        def budget() -> float:  # what is left of ``timeout``, keeping 3 s to measure and close
            return max(0.0, started + timeout - time.monotonic() - 3.0)

        settle(min(10.0, budget()))
        evaluate("document.fonts ? document.fonts.ready.then(() => true) : true")
        evaluate("window.scrollTo(0, 0); true")
        result = evaluate(_MEASURE_JS)
        # Scroll through the page so lazy-loaded content below the fold is requested too.
        evaluate(_SCROLL_JS)
        state["last_activity"] = time.monotonic()
        settle(min(5.0, budget()))
        if script is not None:
            result["script"] = evaluate(script)
    finally:
        browser.close()

    result.update(requests=requests, blocked=blocked, console_errors=console_errors,
                  load_event=state["load"], browser=version, url=own_url,
                  user_data_dir=browser.tmp,
                  seconds=round(time.monotonic() - started, 2))
    return result


if __name__ == "__main__":  # python tests/browser.py reports/report.html
    import sys

    out = inspect_report(Path(sys.argv[1] if len(sys.argv) > 1 else "reports/report.html"))
    print(json.dumps(out, indent=2))

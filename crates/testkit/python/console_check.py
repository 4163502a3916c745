"""Checks the web console in headless Chromium: it renders live figures and keeps them current.

Opens the console URL (its fragment may carry the access key, e.g. ``http://127.0.0.1:PORT/#key=SECRET``)
in headless Chromium through Selenium and the system chromedriver, then checks the page contract:

* ``#processed-total`` shows an integer (thousands separators of any kind are ignored) and
  ``#recent-orders tbody`` has at least one ``<tr>``;
* ``#processed-total`` and ``#updated`` both change within ``--timeout`` seconds, polled every 250 ms,
  without the page being reloaded;
* ``#error`` is empty once they have.

``#orders-total``, ``#throughput``, ``#cache-hit-ratio``, ``#e2e-p99`` and the row counts of ``#lag``
and ``#roles`` are reported as read. Then the charts of the last 15 minutes (``#chart-throughput``,
``#chart-lag``, ``#chart-latency``, ``#chart-dead-letters``) must each draw at least one series of two points
or more within ``--timeout`` (a point comes every few seconds); ``charts`` reports how many such series each
draws. On success it saves a PNG screenshot to ``--screenshot``, prints
one JSON line to stdout::

    {"first": {...}, "last": {...}, "rows": N, "roles": N, "charts": {...}, "screenshot": "PATH"}

where ``first`` and ``last`` are the readings before and after the change and ``rows`` and ``roles``
count the rows of ``#recent-orders`` and ``#roles`` at the end, and exits 0. On any failure, timeouts
included, it prints one line to stderr and exits 1 (after a best-effort screenshot to the same path).

The browser and driver are the given executables (Debian's ``chromium`` and ``chromium-driver`` by
default); Selenium Manager is never used, so nothing is downloaded. Requires ``selenium`` 4.x.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path

# Selenium Manager is bypassed (the driver path is explicit); these keep it quiet and offline regardless.
os.environ["SE_AVOID_STATS"] = "true"
os.environ["SE_OFFLINE"] = "true"

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402

POLL_SECONDS = 0.25
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

BROWSER_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
    # No traffic beyond the console itself: no component updates, field trials or first-run tasks.
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--no-default-browser-check",
)

# One script reads every figure at once, so a snapshot never mixes two refreshes of the page.
READ_PAGE = """
const text = (id) => { const e = document.getElementById(id); return e ? e.textContent : null; };
const count = (sel) => document.querySelectorAll(sel).length;
return {
  processed_total: text("processed-total"),
  orders_total: text("orders-total"),
  throughput: text("throughput"),
  cache_hit_ratio: text("cache-hit-ratio"),
  e2e_p99: text("e2e-p99"),
  updated: text("updated"),
  error: text("error"),
  recent_orders: count("#recent-orders tbody tr"),
  lag: count("#lag tbody tr"),
  roles: count("#roles tbody tr"),
  marker: window.__consoleCheckMarker || null,
  charts: Object.fromEntries(["throughput", "lag", "latency", "dead-letters"].map((id) => [id,
    [...document.querySelectorAll(`#chart-${id} polyline.series`)]
      .filter((line) => (line.getAttribute("points") || "").trim().split(/\s+/).length >= 2).length])),
};
"""


class CheckFailed(Exception):
    """The console broke its contract; the message is the one-line reason."""


def parse_int(text: str | None) -> int | None:
    """The integer in ``text`` with every non-digit (separators, spaces, units) dropped, or None."""
    digits = re.sub(r"[^0-9]", "", text or "")
    return int(digits) if digits else None


def clean(text: str | None) -> str | None:
    """``text`` with its whitespace runs (including non-breaking spaces) collapsed, or None if absent."""
    return None if text is None else " ".join(text.split())


def redact(url: str) -> str:
    """``url`` without its fragment, which may hold the access key."""
    return url.split("#", 1)[0] + ("#…" if "#" in url else "")


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def describe(err: Exception) -> str:
    """A one-line reason for ``err``: its own text for contract failures, the first line of the driver's
    message for WebDriver errors, the exception type and text otherwise."""
    if isinstance(err, CheckFailed):
        return str(err)
    if isinstance(err, WebDriverException):
        first = (err.msg or "").strip().splitlines()
        return first[0] if first else type(err).__name__
    return f"{type(err).__name__}: {err}"


def read_page(driver: webdriver.Chrome) -> dict:
    raw = driver.execute_script(READ_PAGE)
    return {
        "processed_total": parse_int(raw["processed_total"]),
        "orders_total": parse_int(raw["orders_total"]),
        "throughput": clean(raw["throughput"]),
        "cache_hit_ratio": clean(raw["cache_hit_ratio"]),
        "e2e_p99": clean(raw["e2e_p99"]),
        "updated": clean(raw["updated"]),
        "error": clean(raw["error"]) or "",
        "recent_orders": raw["recent_orders"],
        "lag": raw["lag"],
        "roles": raw["roles"],
        "marker": raw["marker"],
        "charts": raw["charts"],
    }


def wait_for(driver: webdriver.Chrome, timeout: float, ready, what: str) -> dict:
    """Polls the page every POLL_SECONDS until ``ready(snapshot)``; fails naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        snapshot = read_page(driver)
        if ready(snapshot):
            return snapshot
        if time.monotonic() >= deadline:
            hint = f"; page error: {snapshot['error']}" if snapshot["error"] else ""
            raise CheckFailed(f"timed out after {timeout:g} s waiting for {what}{hint}")
        time.sleep(POLL_SECONDS)


def public(snapshot: dict) -> dict:
    """The reported part of a snapshot."""
    keys = ("processed_total", "orders_total", "throughput", "cache_hit_ratio", "e2e_p99", "updated",
            "recent_orders", "lag", "roles")
    return {key: snapshot[key] for key in keys}


def save_screenshot(driver: webdriver.Chrome, path: Path) -> None:
    png = driver.get_screenshot_as_png()
    if not png.startswith(PNG_SIGNATURE):
        raise CheckFailed("the browser returned a screenshot that is not a PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)


def check(driver: webdriver.Chrome, url: str, timeout: float, screenshot: Path) -> dict:
    driver.set_page_load_timeout(timeout)
    driver.get(url)

    first = wait_for(
        driver, timeout,
        lambda s: s["processed_total"] is not None and s["recent_orders"] > 0,
        "a number in #processed-total and a row in #recent-orders",
    )
    # A reload would drop this marker: the figures must change in place.
    marker = uuid.uuid4().hex
    driver.execute_script("window.__consoleCheckMarker = arguments[0];", marker)

    def changed(s: dict) -> bool:
        if s["marker"] != marker:
            raise CheckFailed("the page reloaded; the console must update its figures in place")
        return (s["processed_total"] is not None and s["processed_total"] != first["processed_total"]
                and s["updated"] != first["updated"])

    last = wait_for(
        driver, timeout, changed,
        f"#processed-total (was {first['processed_total']}) and #updated (was {first['updated']!r}) to change",
    )
    if last["error"]:
        raise CheckFailed(f"the console reports an error: {last['error']}")
    charted = wait_for(
        driver, timeout,
        lambda s: all(n > 0 for n in s["charts"].values()),
        "every chart of the last 15 minutes to draw a line of two points",
    )

    save_screenshot(driver, screenshot)
    return {
        "first": public(first),
        "last": public(last),
        "rows": last["recent_orders"],
        "roles": last["roles"],
        "charts": charted["charts"],
        "screenshot": str(screenshot),
    }


def start_browser(chromium: str, chromedriver: str) -> webdriver.Chrome:
    for label, path in (("chromium", chromium), ("chromedriver", chromedriver)):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise CheckFailed(f"{label} not found or not executable: {path}")
    options = Options()
    options.binary_location = chromium
    for arg in BROWSER_ARGS:
        options.add_argument(arg)
    # The driver is local: never route the session through a proxy from the environment. The local
    # Chrome constructor takes no ClientConfig, so this (deprecated) switch is the only way to say so.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        options.ignore_local_proxy_environment_variables()
    service = Service(executable_path=chromedriver, log_output=subprocess.DEVNULL)
    return webdriver.Chrome(service=service, options=options)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", required=True,
                        help="console URL, e.g. http://127.0.0.1:PORT/#key=SECRET")
    parser.add_argument("--screenshot", required=True, type=Path, help="where to write the PNG screenshot")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="browser executable (%(default)s)")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver",
                        help="chromedriver executable (%(default)s)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds allowed for the page to load and render, and again for the figures "
                             "to change (%(default)g)")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    driver = None
    try:
        driver = start_browser(args.chromium, args.chromedriver)
        result = check(driver, args.url, args.timeout, args.screenshot)
    except Exception as err:  # noqa: BLE001 - every failure becomes one line on stderr and exit 1
        message = describe(err)
        if driver is not None:
            try:
                save_screenshot(driver, args.screenshot)
                message = f"{message} (screenshot: {args.screenshot})"
            except Exception:  # noqa: BLE001 - the screenshot is only a debugging aid here
                pass
        text = one_line(message).replace(args.url, redact(args.url))
        print(f"console_check: {text}", file=sys.stderr)
        return 1
    finally:
        if driver is not None:
            try:
                driver.quit()
            except Exception:  # noqa: BLE001 - the outcome is already decided
                pass
    print(json.dumps(result, ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

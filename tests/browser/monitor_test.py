"""The monitor page in a real browser: headless Chromium, driven by selenium,
against a running wsloop.

Usage: monitor_test.py http://127.0.0.1:PORT/ SCREENSHOT_DIR

Loads the page, waits for its WebSocket, sends a text and a binary message
through the page's own form, and checks what a person would see: the exact
echo in the feed, the page's counters, the server-wide figures from /stats
moving, no console errors. Saves a desktop and a phone screenshot. Every wait
is bounded; a failure says what was expected and what the page showed.

Run by scripts/browser-test.sh, which installs Chromium and starts the server.
"""

import json
import os
import sys
import tempfile
import time
import urllib.request
import uuid

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

WAIT_S = 5
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")


class Failure(Exception):
    pass


def start_browser(profile_dir):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # Headless, and nothing that reaches out to the network on its own: this
    # machine has none, and Chromium would log (and wait on) the attempts.
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile_dir}",
        "--window-size=1280,900",
    ):
        options.add_argument(flag)
    # Console messages, so the test can fail on any error the page logs.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S * 2)
    return driver


def wait_for(driver, what, condition, timeout=WAIT_S):
    """Waits until condition(driver) is truthy; fails naming `what`."""
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: condition(d))
    except Exception as error:  # TimeoutException, or the condition raised
        raise Failure(f"timed out after {timeout}s waiting for {what} ({type(error).__name__})") from None


def el(driver, element_id):
    return driver.find_element(By.ID, element_id)


def value(driver, element_id):
    """The raw number behind a figure (its data-value attribute)."""
    raw = el(driver, element_id).get_attribute("data-value")
    try:
        return float(raw)
    except (TypeError, ValueError):
        return None


def server_stats(base_url):
    with urllib.request.urlopen(base_url + "stats", timeout=WAIT_S) as response:
        return json.load(response)


def send_through_page(driver, text, kind):
    """Types `text` into the page's box and sends it as `kind` with its button."""
    el(driver, f"send-as-{kind}").click()
    box = el(driver, "message-input")
    box.clear()
    box.send_keys(text)
    el(driver, "send-button").click()


def received_entry(driver, text, kind):
    """The feed entry for the echo of `text` (exact), or None."""
    for item in driver.find_elements(By.CSS_SELECTOR, '#feed li[data-direction="received"]'):
        if item.get_attribute("data-text") == text and item.get_attribute("data-kind") == kind:
            return item
    return None


def check(condition, message):
    if not condition:
        raise Failure(message)


def run(driver, base_url, screenshot_dir):
    driver.get(base_url)
    check("ws-monitor" in driver.title, f"unexpected page title {driver.title!r}")

    wait_for(driver, "the page's WebSocket to open (#ws-state data-state=open)",
             lambda d: el(d, "ws-state").get_attribute("data-state") == "open")
    wait_for(driver, "the first /stats poll to be shown",
             lambda d: value(d, "server-messages-received") is not None)
    # The first poll may have been answered before the WebSocket was accepted:
    # wait for one that counts the page's own connection.
    wait_for(driver, "the server's open connections (#server-connections) to count the page's own",
             lambda d: (value(d, "server-connections") or 0) >= 1)
    server_before = value(driver, "server-messages-received")
    stats_before = server_stats(base_url)

    # Text: the echo must come back exactly, with an RTT, and the counters move.
    text = f"hello from the browser test {uuid.uuid4()} <b>&amp; ünïcødé ✓</b>"
    send_through_page(driver, text, "text")
    entry = wait_for(driver, f"the text echo {text!r} in #feed", lambda d: received_entry(d, text, "text"))
    payload = entry.find_element(By.CSS_SELECTOR, ".payload").text
    check(payload == text, f"feed shows {payload!r}, sent {text!r} (markup must be shown as text)")
    check(entry.find_element(By.CSS_SELECTOR, ".rtt").get_attribute("data-value") is not None,
          "the echo's feed entry has no RTT")
    check(entry.get_attribute("data-mismatch") is None, "the page says the echo differs from what was sent")
    sent_entries = [li for li in driver.find_elements(By.CSS_SELECTOR, '#feed li[data-direction="sent"]')
                    if li.find_element(By.CSS_SELECTOR, ".payload").text == text]
    check(len(sent_entries) == 1, f"expected one 'sent' feed entry for the message, found {len(sent_entries)}")
    wait_for(driver, "#sent-count and #received-count to show 1",
             lambda d: value(d, "sent-count") == 1 and value(d, "received-count") == 1)
    check(value(driver, "own-text-sent") == 1 and value(driver, "own-text-received") == 1,
          "TEXT frames sent/received for this connection did not move to 1")
    check(el(driver, "rtt-last").text not in ("", "–"), "#rtt-last shows no round-trip time")

    # Binary: same bytes back, as binary, and the binary counters move.
    binary_text = f"binary {uuid.uuid4()}"
    send_through_page(driver, binary_text, "binary")
    wait_for(driver, f"the binary echo of {binary_text!r} in #feed",
             lambda d: received_entry(d, binary_text, "binary"))
    wait_for(driver, "#own-binary-received to show 1",
             lambda d: value(d, "own-binary-received") == 1 and value(d, "own-binary-sent") == 1)
    check(value(driver, "sent-count") == 2 and value(driver, "received-count") == 2,
          f"after two messages the page shows sent {el(driver, 'sent-count').text}, "
          f"received {el(driver, 'received-count').text}")

    # Server-wide figures: the page polls /stats every second.
    wait_for(driver, f"the server's messages received (was {server_before:.0f}) to grow by 2 on the page",
             lambda d: (value(d, "server-messages-received") or 0) >= server_before + 2, timeout=WAIT_S)
    wait_for(driver, "server-wide TEXT and BINARY frames received to show our messages",
             lambda d: (value(d, "frames-received-text") or 0) >= stats_before["frames_received"]["text"] + 1
             and (value(d, "frames-received-binary") or 0) >= stats_before["frames_received"]["binary"] + 1)
    wait_for(driver, "a messages/s rate to be shown", lambda d: value(d, "server-rate-in") is not None)
    stats_after = server_stats(base_url)
    check(stats_after["messages"]["received"] >= stats_before["messages"]["received"] + 2,
          "/stats itself did not count the two messages")

    # A small burst: every round trip answered, percentiles shown.
    burst = el(driver, "burst-count")
    burst.clear()
    burst.send_keys("50")
    el(driver, "burst-button").click()
    wait_for(driver, "the burst of 50 to finish (#burst-result)",
             lambda d: "50 round trips" in el(d, "burst-result").text)
    # The burst's summary and the last echo's counter update land in the same
    # moment, in either order: wait (briefly) for the counter rather than read it once.
    wait_for(driver, "#received-count to reach 52 after the burst",
             lambda d: value(d, "received-count") == 52, timeout=3)
    wait_for(driver, "the server-wide figures to count the burst (messages received +52, TEXT frames +51)",
             lambda d: (value(d, "server-messages-received") or 0) >= server_before + 52
             and (value(d, "frames-received-text") or 0) >= stats_before["frames_received"]["text"] + 51)

    # The server's recent latency window (browser-test.sh starts it with
    # --stats-interval 3s) shows the burst once a window holding it closes.
    wait_for(driver, "the server's recent service latency (#lat-recent-count) to count messages",
             lambda d: (value(d, "lat-recent-count") or 0) > 0, timeout=8)
    check(el(driver, "lat-recent-p99").text not in ("", "–"), "recent p99 latency is not shown")

    # Self-contained: everything the page loaded came from the server itself.
    origin = driver.execute_script("return location.origin")
    foreign = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith(arguments[0]))",
        origin)
    check(not foreign, f"the page loaded resources from elsewhere: {foreign}")

    check_console(driver)

    set_viewport(driver, 1280, 900, mobile=False)
    desktop = os.path.join(screenshot_dir, "monitor.png")
    driver.save_screenshot(desktop)
    set_viewport(driver, 390, 844, mobile=True)
    check(driver.execute_script("return document.documentElement.scrollWidth") <= 390,
          "the page scrolls sideways at phone width (390px)")
    phone = os.path.join(screenshot_dir, "monitor-phone.png")
    driver.save_screenshot(phone)
    check_console(driver)
    print(f"monitor_test.py: screenshots {desktop}, {phone}")


def set_viewport(driver, width, height, mobile):
    """Sets the page's viewport exactly (a window size would include the
    browser's own frame); `mobile` also applies the page's viewport meta tag,
    as a phone does."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})
    wait_for(driver, f"the page to lay out at {width}px",
             lambda d: d.execute_script("return window.innerWidth") == width)
    time.sleep(0.2)  # let a frame paint at the new size


def check_console(driver):
    entries = driver.get_log("browser")
    for entry in entries:
        print(f"monitor_test.py: console {entry['level']}: {entry['message']}")
    errors = [e for e in entries if e["level"] == "SEVERE"]
    check(not errors, f"{len(errors)} console error(s): " + "; ".join(e["message"] for e in errors))


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: monitor_test.py http://HOST:PORT/ SCREENSHOT_DIR")
    base_url, screenshot_dir = sys.argv[1], sys.argv[2]
    if not base_url.endswith("/"):
        base_url += "/"
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="wsloop-chromium-") as profile:
        driver = start_browser(profile)
        try:
            run(driver, base_url, screenshot_dir)
        except Failure as failure:
            shot = os.path.join(screenshot_dir, "monitor-failure.png")
            try:
                driver.save_screenshot(shot)
                feed = el(driver, "feed").text[:2000]
            except Exception:  # the browser itself may be what failed
                feed = "(page unavailable)"
            print(f"monitor_test.py: FAILED: {failure}\n  screenshot: {shot}\n  feed:\n{feed}", file=sys.stderr)
            sys.exit(1)
        finally:
            driver.quit()
    print(f"monitor_test.py: the page works ({time.monotonic() - started:.1f}s)")


if __name__ == "__main__":
    main()

"""The monitor page in a real browser: headless Chromium, driven by selenium,
against a running wsloop.

Usage: monitor_test.py http://127.0.0.1:PORT/ SCREENSHOT_DIR
       WSLOOP_PUBLISH_TOKEN=T monitor_test.py --rooms http://127.0.0.1:PORT/ SCREENSHOT_DIR

Against an echo-mode server: loads the page, waits for its WebSocket, sends a
text and a binary message through the page's own form, and checks what a
person would see: the exact echo in the feed, the page's counters, the
server-wide figures from /stats moving, the room panel disabled, no console
errors. Saves a desktop and a phone screenshot.

With --rooms, against a server in --mode broadcast with --publish-token T:
two browsers open the page, each one's own connection in a private room,
both join one room in the room panel; a message typed in one appears in
both, a real POST /publish (from here, then from the page's form) appears in
both, and the room figures move. Saves monitor-rooms.png and
monitor-rooms-phone.png.

Every wait is bounded; a failure says what was expected and what the page
showed. Run by scripts/browser-test.sh, which installs Chromium and starts
the servers.
"""

import binascii
import concurrent.futures
import json
import os
import sys
import tempfile
import time
import ssl
import urllib.error
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
        # E.g. --ignore-certificate-errors-spki-list=... for a test certificate.
        *os.environ.get("CHROMIUM_EXTRA_FLAGS", "").split(),
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


# Over https://, the test's own requests trust the test certificate (MONITOR_TEST_CA).
TLS_CONTEXT = ssl.create_default_context(cafile=os.environ["MONITOR_TEST_CA"]) \
    if os.environ.get("MONITOR_TEST_CA") else None


def server_stats(base_url):
    with urllib.request.urlopen(base_url + "stats", timeout=WAIT_S, context=TLS_CONTEXT) as response:
        return json.load(response)


def publish(base_url, room, body, content_type, token):
    """A real POST /publish/<room>; returns the decoded JSON answer."""
    request = urllib.request.Request(base_url + "publish/" + room, data=body, method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=WAIT_S, context=TLS_CONTEXT) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        raise Failure(f"POST /publish/{room} answered {error.code}: {error.read()[:200]!r}") from None


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


def room_entry(driver, text, kind):
    """The room panel's entry for a message of the room (exact), or None."""
    for item in driver.find_elements(By.CSS_SELECTOR, '#room-feed li[data-direction="received"]'):
        if item.get_attribute("data-text") == text and item.get_attribute("data-kind") == kind:
            return item
    return None


def check(condition, message):
    if not condition:
        raise Failure(message)


def run(driver, base_url, screenshot_dir, prefix=""):
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

    # Echo mode: the page's own connection is on "/", and the room panel
    # says why it is off.
    check(el(driver, "server-address").get_attribute("data-path") == "/",
          f"in echo mode the page connected to {el(driver, 'server-address').text}, not to /")
    wait_for(driver, "the room panel to say rooms need --mode broadcast (#room-mode-note)",
             lambda d: el(d, "room-state").get_attribute("data-state") == "disabled"
             and "--mode broadcast" in el(d, "room-mode-note").text)
    for control in ("room-name", "room-join-button", "room-message", "room-send-button", "publish-button"):
        check(not el(driver, control).is_enabled(), f"#{control} is enabled in echo mode")
    check(value(driver, "rooms-count") == 0 and value(driver, "rooms-published-http") == 0,
          "the room figures are not shown as 0 in echo mode")

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

    check_resources(driver)
    check_console(driver)

    set_viewport(driver, 1280, 900, mobile=False)
    desktop = os.path.join(screenshot_dir, f"monitor{'-' + prefix.rstrip('-') if prefix else ''}.png")
    driver.save_screenshot(desktop)
    set_viewport(driver, 390, 844, mobile=True)
    check(driver.execute_script("return document.documentElement.scrollWidth") <= 390,
          "the page scrolls sideways at phone width (390px)")
    phone = os.path.join(screenshot_dir, f"monitor-{prefix}phone.png")
    driver.save_screenshot(phone)
    check_console(driver)
    print(f"monitor_test.py: screenshots {desktop}, {phone}")


def run_rooms(a, b, base_url, screenshot_dir, token):
    """Two pages (two browsers, as two people) in one room of a broadcast server."""
    pages = (("A", a), ("B", b))
    for name, driver in pages:
        driver.get(base_url)
    for name, driver in pages:
        wait_for(driver, f"page {name}'s own WebSocket to open",
                 lambda d: el(d, "ws-state").get_attribute("data-state") == "open")
        wait_for(driver, f"page {name}'s room panel to be ready (#room-state data-state=off)",
                 lambda d: el(d, "room-state").get_attribute("data-state") == "off"
                 and el(d, "room-join-button").is_enabled())
        check(not el(driver, "room-mode-note").is_displayed(), f"page {name} says rooms need --mode broadcast")

    # Each page's own connection is a room of one, not the shared "/".
    paths = [driver.find_element(By.ID, "server-address").get_attribute("data-path") for _, driver in pages]
    check(all(p.startswith("/monitor/") for p in paths) and paths[0] != paths[1],
          f"in broadcast mode the pages' own connections went to {paths}, not to two private /monitor/<id> rooms")

    # There, the echo works as in echo mode, and is A's alone.
    echo_text = f"echo in broadcast mode {uuid.uuid4()}"
    send_through_page(a, echo_text, "text")
    entry = wait_for(a, f"the echo {echo_text!r} in page A's feed", lambda d: received_entry(d, echo_text, "text"))
    check(entry.find_element(By.CSS_SELECTOR, ".rtt").get_attribute("data-value") is not None,
          "page A's echo in broadcast mode has no RTT")
    check(entry.get_attribute("data-mismatch") is None, "page A says its echo differs from what it sent")
    wait_for(a, "page A's #received-count to show 1", lambda d: value(d, "received-count") == 1)

    # Both join one room, fresh for this run.
    room = f"browser-test-{uuid.uuid4().hex[:8]}"
    for name, driver in pages:
        box = el(driver, "room-name")
        check(box.get_attribute("value") == "lobby", f"page {name}'s room name is not 'lobby' by default")
        box.clear()
        box.send_keys(room)
        el(driver, "room-join-button").click()
    for name, driver in pages:
        wait_for(driver, f"page {name} to join {room} (#room-state data-state=open)",
                 lambda d: el(d, "room-state").get_attribute("data-state") == "open")
        check(el(driver, "room-url").text.endswith(f"/{room}"), f"page {name}'s room URL is {el(driver, 'room-url').text}")
        check(el(driver, "room-join-button").text == "Leave", f"page {name}'s join button does not say Leave")
    # Two private rooms and the shared one: 3 rooms, 4 memberships.
    wait_for(a, "page A's room figures to count 3 rooms and 4 memberships",
             lambda d: value(d, "rooms-count") == 3 and value(d, "rooms-memberships") == 4)

    # Typed in A: in B's list, and back in A's own, marked as its own.
    typed = f"hello room {uuid.uuid4()} <i>&amp; ünïcødé ✓</i>"
    el(a, "room-message").send_keys(typed)
    el(a, "room-send-button").click()
    got_b = wait_for(b, f"A's message {typed!r} in page B's room list", lambda d: room_entry(d, typed, "text"))
    got_a = wait_for(a, f"A's message {typed!r} back in page A's room list", lambda d: room_entry(d, typed, "text"))
    check(got_b.find_element(By.CSS_SELECTOR, ".payload").text == typed,
          f"page B shows {got_b.find_element(By.CSS_SELECTOR, '.payload').text!r} (markup must be shown as text)")
    check(got_a.get_attribute("data-own") == "true", "page A does not mark its own message as 'this tab'")
    check(got_b.get_attribute("data-own") is None, "page B marks A's message as its own")
    check(received_entry(a, typed, "text") is None, "A's room message also reached A's own (echo) connection")

    # A real POST /publish from here, binary: in both lists, as bytes.
    published = f"published over HTTP {uuid.uuid4()}".encode()
    answer = publish(base_url, room, published, "application/octet-stream", token)
    check(answer == {"delivered": 2, "dropped": 0}, f"POST /publish/{room} answered {answer}, expected 2 delivered")
    hex_start = " ".join(f"{byte:02x}" for byte in published[:24])
    for name, driver in pages:
        item = wait_for(driver, f"the published binary message in page {name}'s room list",
                        lambda d: room_entry(d, published.decode(), "binary"))
        check(item.get_attribute("data-bytes") == str(len(published)),
              f"page {name} shows {item.get_attribute('data-bytes')} bytes, published {len(published)}")
        shown = item.find_element(By.CSS_SELECTOR, ".payload").text
        check(shown.startswith(hex_start), f"page {name} shows {shown!r}, not the hex of {binascii.hexlify(published)}")

    # And through B's own publish form, as text.
    b.find_element(By.CSS_SELECTOR, "#publish-details summary").click()
    wait_for(b, "page B's publish form to open", lambda d: el(d, "publish-token").is_displayed())
    el(b, "publish-token").send_keys(token)
    form_text = f"published from the page {uuid.uuid4()}"
    el(b, "publish-message").send_keys(form_text)
    el(b, "publish-button").click()
    wait_for(b, "page B's publish to answer delivered 2 (#publish-result)",
             lambda d: el(d, "publish-result").get_attribute("data-state") == "ok"
             and el(d, "publish-result").get_attribute("data-delivered") == "2")
    for name, driver in pages:
        wait_for(driver, f"the message published from page B's form in page {name}'s room list",
                 lambda d: room_entry(d, form_text, "text"))
    kept = b.execute_script(
        "return JSON.stringify(Object.entries(localStorage)) + JSON.stringify(Object.entries(sessionStorage))"
        " + document.cookie + location.href")
    check(token not in kept, "page B kept the publish token (storage, cookie or URL)")

    # The room figures move: two HTTP publishes, two from WebSocket (A's echo
    # and its room message), 7 deliveries (1 + 2 + 2 + 2), fan-out measured.
    wait_for(a, "page A's room figures to count 2 HTTP and 2 WebSocket publishes, 7 deliveries",
             lambda d: value(d, "rooms-published-http") == 2 and value(d, "rooms-published-websocket") == 2
             and value(d, "rooms-deliveries") == 7 and value(d, "rooms-deliveries-dropped") == 0)
    # The "out" tile counts deliveries in broadcast mode (the server counts
    # messages to rooms there, not in messages.sent).
    check(el(a, "l-out").text == "Deliveries/s out" and value(a, "server-messages-sent") == 7,
          f"the out tile shows {el(a, 'l-out').text!r} {el(a, 'server-messages-sent').text}, expected 7 deliveries")
    check((value(a, "fanout-life-count") or 0) >= 1 and el(a, "fanout-life-p99").text not in ("", "–"),
          "page A shows no lifetime fan-out latency")
    check(value(a, "rooms-slow-consumer-closes") == 0, "page A shows slow-consumer closes")
    stats = server_stats(base_url)
    check(stats["rooms"]["published"]["http"] == 2, f"/stats counts {stats['rooms']['published']} publishes")
    # browser-test.sh runs the server with --stats-interval 3s: the recent
    # fan-out window fills once a window holding these closes.
    wait_for(a, "the recent fan-out latency (#fanout-recent-count) to count messages",
             lambda d: (value(d, "fanout-recent-count") or 0) > 0, timeout=8)

    check(received_entry(b, echo_text, "text") is None, "page A's echo reached page B's own connection")
    for name, driver in pages:
        check_resources(driver)
        check_console(driver)

    set_viewport(a, 1280, 900, mobile=False)
    desktop = os.path.join(screenshot_dir, "monitor-rooms.png")
    a.save_screenshot(desktop)
    set_viewport(b, 390, 844, mobile=True)
    check(b.execute_script("return document.documentElement.scrollWidth") <= 390,
          "the page in a room scrolls sideways at phone width (390px)")
    b.execute_script("document.getElementById('room-panel').scrollIntoView()")
    time.sleep(0.2)
    phone = os.path.join(screenshot_dir, "monitor-rooms-phone.png")
    b.save_screenshot(phone)

    # Leaving closes the room's connection: one membership less.
    memberships = value(a, "rooms-memberships")
    el(b, "room-join-button").click()
    wait_for(b, "page B to leave the room (#room-state data-state=off)",
             lambda d: el(d, "room-state").get_attribute("data-state") == "off"
             and el(d, "room-join-button").text == "Join")
    wait_for(a, f"page A's memberships to drop from {memberships:.0f} after B left",
             lambda d: value(d, "rooms-memberships") == memberships - 1)
    for name, driver in pages:
        check_console(driver)
    print(f"monitor_test.py: screenshots {desktop}, {phone}")


def check_resources(driver):
    """Self-contained: everything the page loaded came from the server itself."""
    origin = driver.execute_script("return location.origin")
    foreign = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith(arguments[0]))",
        origin)
    check(not foreign, f"the page loaded resources from elsewhere: {foreign}")


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


def report_failure(failure, drivers, screenshot_dir):
    print(f"monitor_test.py: FAILED: {failure}", file=sys.stderr)
    for name, driver in drivers:
        shot = os.path.join(screenshot_dir, f"monitor-{name}failure.png")
        try:
            driver.save_screenshot(shot)
            feed = el(driver, "feed").text[:2000]
            room = el(driver, "room-feed").text[:2000]
        except Exception:  # the browser itself may be what failed
            feed = room = "(page unavailable)"
        print(f"  screenshot: {shot}\n  feed:\n{feed}\n  room panel:\n{room}", file=sys.stderr)


def main():
    args = sys.argv[1:]
    rooms = args[:1] == ["--rooms"]
    if rooms:
        args = args[1:]
    prefix = ""
    if args[:1] == ["--screenshots-prefix"]:
        prefix, args = args[1], args[2:]
    token = os.environ.get("WSLOOP_PUBLISH_TOKEN", "")
    if len(args) != 2 or (rooms and not token):
        sys.exit("usage: monitor_test.py http://HOST:PORT/ SCREENSHOT_DIR\n"
                 "       WSLOOP_PUBLISH_TOKEN=T monitor_test.py --rooms http://HOST:PORT/ SCREENSHOT_DIR")
    base_url, screenshot_dir = args
    if not base_url.endswith("/"):
        base_url += "/"
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="wsloop-chromium-") as profiles:
        count = 2 if rooms else 1
        # Two browsers start side by side: half the wait.
        with concurrent.futures.ThreadPoolExecutor(count) as pool:
            futures = [pool.submit(start_browser, os.path.join(profiles, str(i))) for i in range(count)]
        named = []
        try:
            drivers = [future.result() for future in futures]
            if rooms:
                named = [("rooms-a-", drivers[0]), ("rooms-b-", drivers[1])]
                run_rooms(drivers[0], drivers[1], base_url, screenshot_dir, token)
            else:
                named = [("", drivers[0])]
                run(drivers[0], base_url, screenshot_dir, prefix)
        except Failure as failure:
            report_failure(failure, named, screenshot_dir)
            sys.exit(1)
        finally:
            for future in futures:
                if future.exception() is None:
                    future.result().quit()
    what = "the room panel works in --mode broadcast" if rooms else f"the page works over {base_url.split(':')[0]}"
    print(f"monitor_test.py: {what} ({time.monotonic() - started:.1f}s)")


if __name__ == "__main__":
    main()

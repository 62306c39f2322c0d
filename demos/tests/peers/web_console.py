"""Drives the web console in a real headless Chromium (Debian's chromium and chromium-driver,
through selenium 4; never Selenium Manager, which would download a browser).

A line protocol on stdin and stdout, so that a test drives it step by step. It answers
"ok ready" once the browser is up, then one line per command, "ok ..." or "error ...":

  open URL                  load URL in the current tab
  new_tab URL               open a tab, load URL, make it current; answers "ok N", its index
  switch N                  make tab N (0 the first) current
  wait_text SECS TEXT       until TEXT (the rest of the line) is in the terminal's buffer
  wait_line SECS TEXT       until a line of the terminal is TEXT, exactly (trailing blanks aside)
  wait_count SECS N TEXT    until TEXT is in the terminal's buffer N times or more
  wait_status STATE SECS    until the page's state (connecting, connected, closed) is STATE
  wait_page SECS TEXT       until TEXT is in the page's visible text (outside the terminal too)
  type TEXT                 types TEXT into the terminal; \\n is Enter, \\\\ a backslash
  text                      the terminal's buffer, as a JSON string
  status                    the page's state and status line
  resize W H                sets the window's size
  sent_sizes                the resize messages the page sent, as JSON (see console.js)
  screenshot PATH           writes a PNG of the page
  console                   the browser's console messages so far, as JSON
  quit                      closes the browser and exits

Every wait is bounded by its SECS; a wait that runs out answers "error" with what the page
shows. The terminal is read through window.chardevConsole, which the page exposes for this.
"""
import ctypes
import json
import os
import signal
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
POLL = 0.05
PR_SET_PDEATHSIG = 1


def answer(line):
    sys.stdout.write(line.replace("\n", "\\n") + "\n")
    sys.stdout.flush()


def start():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,700",
                "--disable-gpu", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    # The TLS test trusts its own server's key, and only it: the key's SPKI hash, one
    # Chromium argument (--ignore-certificate-errors-spki-list=HASH).
    for arg in filter(None, os.environ.get("WEB_CONSOLE_CHROMIUM_ARGS", "").split(" ")):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit chromedriver path: selenium then never runs Selenium Manager. chromedriver
    # dies with this process (a test that kills its driver leaves no browser behind).
    service = Service(CHROMEDRIVER, popen_kw={"preexec_fn": die_with_parent})
    return webdriver.Chrome(service=service, options=options)


def die_with_parent():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def page_state(driver):
    return driver.execute_script(
        "const c = window.chardevConsole;"
        "return c ? {state: c.status(), line: c.statusText(), text: c.text ? c.text() : ''}"
        "         : {state: 'no console', line: document.body ? document.body.innerText : '', text: ''};")


def wait_for(driver, secs, check, what):
    end = time.monotonic() + secs
    while True:
        try:
            state = page_state(driver)
        except WebDriverException as e:
            state = {"state": "script error", "line": str(e).splitlines()[0], "text": ""}
        if check(state):
            return "ok"
        if time.monotonic() >= end:
            tail = "\n".join(state["text"].rstrip().splitlines()[-8:])
            return "error %s not seen within %s s; state %s (%s); screen ends: %s" % (
                what, secs, state["state"], state["line"], json.dumps(tail))
        time.sleep(POLL)


def type_keys(driver, text):
    area = driver.find_element(By.CSS_SELECTOR, ".xterm-helper-textarea")
    keys, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            keys.append({"n": Keys.ENTER, "\\": "\\"}.get(text[i + 1], text[i:i + 2]))
            i += 2
        else:
            keys.append(text[i])
            i += 1
    area.send_keys(*keys)


def run(driver, line):
    cmd, _, rest = line.partition(" ")
    if cmd == "open":
        driver.get(rest)
        return "ok"
    if cmd == "new_tab":
        driver.switch_to.new_window("tab")
        driver.get(rest)
        return "ok %d" % driver.window_handles.index(driver.current_window_handle)
    if cmd == "switch":
        driver.switch_to.window(driver.window_handles[int(rest)])
        return "ok"
    if cmd == "wait_text":
        secs, _, text = rest.partition(" ")
        return wait_for(driver, float(secs), lambda s: text in s["text"], json.dumps(text))
    if cmd == "wait_line":
        secs, _, text = rest.partition(" ")
        return wait_for(driver, float(secs),
                        lambda s: text.rstrip() in (l.rstrip() for l in s["text"].split("\n")),
                        "the line " + json.dumps(text))
    if cmd == "wait_count":
        secs, n, text = rest.split(" ", 2)
        return wait_for(driver, float(secs), lambda s: s["text"].count(text) >= int(n),
                        "%s times %s" % (n, json.dumps(text)))
    if cmd == "wait_page":
        secs, _, text = rest.partition(" ")
        return wait_for(driver, float(secs),
                        lambda s: text in driver.execute_script("return document.body.innerText"),
                        json.dumps(text))
    if cmd == "wait_status":
        want, _, secs = rest.partition(" ")
        return wait_for(driver, float(secs), lambda s: s["state"] == want, "state " + want)
    if cmd == "type":
        type_keys(driver, rest)
        return "ok"
    if cmd == "text":
        return "ok " + json.dumps(page_state(driver)["text"])
    if cmd == "status":
        s = page_state(driver)
        return "ok %s %s" % (s["state"], s["line"])
    if cmd == "resize":
        w, h = rest.split()
        driver.set_window_size(int(w), int(h))
        return "ok"
    if cmd == "sent_sizes":
        return "ok " + json.dumps(driver.execute_script(
            "return window.chardevConsole && window.chardevConsole.sentSizes ? "
            "window.chardevConsole.sentSizes() : null"))
    if cmd == "screenshot":
        return "ok " + rest if driver.save_screenshot(rest) else "error screenshot not written"
    if cmd == "console":
        return "ok " + json.dumps([e["message"] for e in driver.get_log("browser")])
    return "error unknown command %r" % cmd


def on_term(signum, frame):
    # A test that gives up on the driver sends SIGTERM: leave through main's finally, which
    # closes the browser (a SIGKILL would leave Chromium running).
    raise SystemExit(1)


def main():
    signal.signal(signal.SIGTERM, on_term)
    try:
        driver = start()
    except Exception as e:  # the test shows why the browser did not start
        answer("error cannot start chromium: %s: %s" % (type(e).__name__, str(e).splitlines()[0]))
        return 1
    try:
        answer("ok ready")
        for line in sys.stdin:
            line = line.rstrip("\n")
            if not line:
                continue
            if line == "quit":
                answer("ok")
                break
            try:
                answer(run(driver, line))
            except Exception as e:
                msg = str(e).strip().splitlines()
                answer("error %s: %s" % (type(e).__name__, msg[0] if msg else ""))
    finally:
        driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())

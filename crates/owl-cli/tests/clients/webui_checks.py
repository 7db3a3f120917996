"""The chat page of `owl serve`, in a real browser (headless Chromium through Selenium).

    python webui_checks.py URL API_KEY ARTIFACT_DIR

The server runs smollm2 with --api-key API_KEY. Prints "webui: ok" when every check passed;
a screenshot of the page goes to ARTIFACT_DIR/webui.png (and webui-failure.png on failure).
"""

import json
import os
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

URL, KEY, ARTIFACTS = sys.argv[1], sys.argv[2], sys.argv[3]
PAYLOAD = "<img src=x onerror=window.__xss=1>"


def check_headers():
    """The CSP header is on every page response, and the page embeds no key."""
    bodies = []
    for path in ["/", "/index.html", "/webui/app.js", "/webui/style.css"]:
        with urllib.request.urlopen(URL + path) as r:
            csp = r.headers.get("Content-Security-Policy") or ""
            assert "default-src 'none'" in csp and "script-src 'self'" in csp, (path, csp)
            assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp, (path, csp)
            assert r.headers.get("X-Content-Type-Options") == "nosniff", path
            bodies.append(r.read().decode())
    assert all(KEY not in b for b in bodies), "the API key must never be in the page"
    assert "http://" not in bodies[0] and "https://" not in bodies[0], "nothing fetched from elsewhere"


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"]:
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


# Read in one script call: the page re-renders the reply as it streams, so element
# handles go stale between calls.
def last_assistant_text(d):
    return d.execute_script(
        "const b = document.querySelectorAll('#messages .message.assistant .body');"
        "return b.length ? b[b.length - 1].innerText : '';"
    )


def streaming(d):
    return d.execute_script("return !document.getElementById('stop').hidden;")


def set_field(d, element_id, value):
    if not d.find_element(By.ID, "settings").is_displayed():
        d.find_element(By.ID, "settings-toggle").click()
    field = d.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(str(value))
    field.send_keys(Keys.TAB)


def send(d, text):
    box = d.find_element(By.ID, "input")
    box.send_keys(text)
    d.find_element(By.ID, "send").click()


def watch_stream(d, wait):
    """Text lengths of the reply while it streams, until it ends."""
    wait.until(streaming)
    lengths = []
    deadline = time.time() + 120
    while streaming(d) and time.time() < deadline:
        lengths.append(len(last_assistant_text(d)))
        time.sleep(0.03)
    assert not streaming(d), "the reply never ended"
    lengths.append(len(last_assistant_text(d)))
    return lengths


def main():
    check_headers()
    d = browser()
    wait = WebDriverWait(d, 120)
    try:
        d.get(URL + "/")
        # With a key set on the server and none in the page, the page asks for one.
        wait.until(lambda d: "API key" in d.find_element(By.ID, "error").text)
        assert d.find_element(By.ID, "settings").is_displayed()
        set_field(d, "api-key", KEY)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#model-picker option")) >= 1)
        assert d.find_element(By.ID, "model-picker").get_attribute("value") == "smollm2"
        set_field(d, "temperature", 0)
        set_field(d, "max-tokens", 48)

        # A streamed reply: the text grows while the stop button shows.
        send(d, "Write one sentence about owls.")
        lengths = watch_stream(d, wait)
        grew = sorted({n for n in lengths if n > 0})
        assert len(grew) >= 2, f"the reply did not stream: {lengths}"
        first_reply = last_assistant_text(d)
        assert first_reply.strip(), "empty reply"
        assert "tokens/s" in d.find_element(By.ID, "speed").text, d.find_element(By.ID, "speed").text

        # Stop a stream midway: it ends, marked stopped, and grows no more.
        set_field(d, "max-tokens", 400)
        send(d, "Write a very long story about a dragon who learns to read.")
        wait.until(streaming)
        wait.until(lambda d: len(last_assistant_text(d)) > 5)
        d.find_element(By.ID, "stop").click()
        wait.until(lambda d: not streaming(d))
        stopped = last_assistant_text(d)
        statuses = d.find_elements(By.CSS_SELECTOR, "#messages .message.assistant .status")
        assert statuses and statuses[-1].text == "stopped", [s.text for s in statuses]
        time.sleep(1.0)
        assert last_assistant_text(d) == stopped, "text grew after stop"

        # Regenerate the last reply (greedy: a fresh stream, same length bound).
        set_field(d, "max-tokens", 24)
        d.find_element(By.CSS_SELECTOR, "#messages .message.assistant button.regenerate").click()
        watch_stream(d, wait)
        assert last_assistant_text(d).strip()

        # Edit a past user turn: the conversation is cut there and goes on from the edit.
        before = len(d.find_elements(By.CSS_SELECTOR, "#messages .message"))
        d.find_elements(By.CSS_SELECTOR, "#messages .message.user button.edit")[0].click()
        area = d.find_element(By.CSS_SELECTOR, "#messages .message.user textarea")
        area.clear()
        area.send_keys("Name one bird.")
        d.find_element(By.XPATH, "//button[text()='Save and send']").click()
        watch_stream(d, wait)
        messages = d.find_elements(By.CSS_SELECTOR, "#messages .message")
        assert len(messages) == 2 < before, (len(messages), before)
        assert messages[0].find_element(By.CSS_SELECTOR, ".body").text == "Name one bird."

        # Model output and user text are shown as text, never as HTML.
        send(d, PAYLOAD)
        watch_stream(d, wait)
        assert not d.find_elements(By.CSS_SELECTOR, "#messages img")
        assert PAYLOAD in d.find_element(By.ID, "messages").text
        # A reply holding markup (stored, as a streamed reply is, then rendered again).
        stored = json.loads(d.execute_script("return localStorage.getItem('owl.conversations.v1')"))
        stored[0]["messages"].append({"role": "assistant", "content": f"<think>Let me think <b>hard</b>.</think>Here: {PAYLOAD} **bold** <script>window.__xss=2</script>\n\n```html\n<b>code</b>\n```"})
        d.execute_script("localStorage.setItem('owl.conversations.v1', arguments[0])", json.dumps(stored))
        d.refresh()
        wait.until(lambda d: PAYLOAD in d.find_element(By.ID, "messages").text)
        assert not d.find_elements(By.CSS_SELECTOR, "#messages img, #messages script, #messages b")
        assert d.find_elements(By.CSS_SELECTOR, "#messages strong"), "Markdown still renders"
        assert d.find_element(By.CSS_SELECTOR, "#messages pre code").text == "<b>code</b>"
        assert d.execute_script("return window.__xss") is None
        # The <think> section is shown folded, apart from the answer.
        details = d.find_elements(By.CSS_SELECTOR, "#messages .message.assistant details")
        assert details and details[-1].get_attribute("open") is None, "thinking folded"
        assert "Let me think <b>hard</b>." == d.execute_script(
            "const t = document.querySelectorAll('#messages details .thinking'); return t[t.length - 1].textContent;")
        assert "Let me think" not in last_assistant_text(d).split("Thinking")[-1]

        # Several conversations, kept in local storage across a reload.
        d.find_element(By.ID, "new-chat").click()
        set_field(d, "max-tokens", 8)
        send(d, "Hi")
        watch_stream(d, wait)
        d.refresh()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#conversations li")) == 2)

        d.save_screenshot(os.path.join(ARTIFACTS, "webui-chat.png"))
        # The model panel: license and the openness card.
        d.find_element(By.ID, "model-info").click()
        wait.until(lambda d: "Openness" in d.find_element(By.ID, "model-panel").text)
        panel = d.find_element(By.ID, "model-panel").text
        for needed in ["smollm2", "Apache", "weights", "training data", "MOF class"]:
            assert needed in panel, (needed, panel)

        d.save_screenshot(os.path.join(ARTIFACTS, "webui.png"))
        # Nothing the page did was refused by its own CSP, and no script error.
        problems = [e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE" or "Refused" in e["message"]]
        problems = [p for p in problems if "401" not in p]  # the first /v1/models call before the key
        assert not problems, problems
    except (AssertionError, TimeoutException):
        d.save_screenshot(os.path.join(ARTIFACTS, "webui-failure.png"))
        print(d.find_element(By.TAG_NAME, "body").text[:4000], file=sys.stderr)
        raise
    finally:
        d.quit()
    print("webui: ok")


if __name__ == "__main__":
    main()

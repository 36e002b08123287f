"""The web dashboard at /ui, in a real headless Chromium (Debian's chromium and chromedriver,
driven by selenium) against a real `llmctl serve` with two real llama-servers (SmolLM2) started
by `llmctl up`: the page loads without console errors, shows both servers running, a click on
"stop" stops one (as `llmctl status` says) and "start" brings it back, a click on "log" shows its
log; the key form, and the API's refusals (no key, another site's Origin, a form's content type).
The log's first answer is bounded (the last N KiB only), read from real files.

Set LLMCTL_SCREENSHOT=PATH to save the page (docs/dashboard.png is made that way)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from .util import cli, free_port, wait_for

KEY = "gw-" + os.urandom(6).hex()
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
needs_chromium = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="Debian's chromium and chromium-driver are not installed (scripts/setup.sh --tests installs them as root: "
           "apt-get install chromium chromium-driver)")


# -- the first answer of a log is bounded (real files, no servers) --------------------------
def test_log_tail_sends_only_the_last_kib_in_whole_lines_then_what_is_appended(tmp_path):
    from llmctl.gateway.ui_logs import read_more, read_tail

    log = tmp_path / "a.log"
    log.write_bytes(b"".join(b"line %06d %s\n" % (i, b"x" * 80) for i in range(40000)))  # 3.6 MB
    text, offset, inode = read_tail(log, 4)
    assert len(text.encode()) <= 4 * 1024 and text.endswith("line 039999 " + "x" * 80 + "\n")
    assert text.startswith("line ") and offset == log.stat().st_size
    with open(log, "ab") as f:
        f.write(b"appended\npartial")
    more, offset, _ = read_more(log, offset, inode)
    assert more == "appended\n"  # the unfinished line waits
    log.write_bytes(b"rotated\n")  # replaced by a shorter file: read again from its start
    assert read_more(log, offset, inode)[0] == "rotated\n"


def test_log_stream_follows_the_file_and_ends_when_the_gateway_stops(tmp_path):
    """A gateway in this process (no server is started: the log file is written by the test);
    an open log stream must not hold its shutdown for uvicorn's graceful timeout (5 s)."""
    import threading
    import time

    from llmctl import load_profiles
    from llmctl.gateway import GatewayConfig, start_in_thread
    from llmctl.paths import Paths

    f = tmp_path / "llmctl.yaml"
    f.write_text(f"profiles:\n  alpha: {{model: {tmp_path / 'none.gguf'}, port: {free_port()}}}\n")
    paths = Paths.from_env().ensure()
    log = paths.log_file("alpha")
    log.write_text("".join(f"old line {i}\n" for i in range(5000)) + "last old line\n")
    gw = start_in_thread(load_profiles([str(f)]), GatewayConfig(port=0), paths=paths)
    got: list[str] = []

    def read() -> None:
        with httpx.stream("GET", gw.url + "/ui/api/logs/alpha?kb=1", timeout=30) as r:
            got.extend(r.iter_text())

    reader = threading.Thread(target=read)
    try:
        reader.start()
        wait_for(lambda: "last old line" in "".join(got), 10, "the log's end")
        sent = [line[6:] for line in "".join(got).splitlines() if line.startswith("data: ")]
        assert len("\n".join(sent)) <= 1024 and sent[0].startswith("old line ") and "old line 0" not in sent
        with open(log, "a") as out:
            out.write("new line\n")
        wait_for(lambda: "data: new line" in "".join(got), 10, "the appended line")
    finally:
        t0 = time.monotonic()
        gw.stop()
        stopped_in = time.monotonic() - t0
        reader.join(10)
    assert stopped_in < 3 and not reader.is_alive()


# -- a real gateway and two real servers ----------------------------------------------------
class Served:
    def __init__(self, url: str, profiles: Path, home: Path) -> None:
        self.url, self.profiles, self.home = url, profiles, home

    def status(self, name: str) -> dict:
        out = cli("-f", str(self.profiles), "status", name, "--json", env={"LLMCTL_HOME": str(self.home)})
        return json.loads(out.stdout)[0]


@pytest.fixture(scope="module")
def served(tmp_path_factory, smollm2, llama_server):
    root = tmp_path_factory.mktemp("dashboard")
    home, port = root / "home", free_port()
    profiles = root / "llmctl.yaml"
    profiles.write_text(f"""
profiles:
  alpha: {{model: {smollm2}, port: {free_port()}, ctx_size: 512, threads: 1, idle_ttl: 3600}}
  beta: {{model: {smollm2}, port: {free_port()}, ctx_size: 512, threads: 1}}
tasks:
  summary: {{profile: alpha, fallback: [beta], max_tokens: 3}}
""")
    env = {**os.environ, "LLMCTL_HOME": str(home), "LLMCTL_GATEWAY_KEY": KEY}
    env.pop("LLMCTL_PROFILES", None)
    up = cli("-f", str(profiles), "up", "alpha", "beta", env=env)
    assert up.returncode == 0, up.stderr
    proc = subprocess.Popen([sys.executable, "-m", "llmctl", "-f", str(profiles), "serve", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url + "/health") or proc.poll() is not None, 60, "the gateway")
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        # one real request, for the recent-requests list
        httpx.post(url + "/v1/chat/completions", headers={"authorization": f"Bearer {KEY}"}, timeout=120,
                   json={"model": "summary", "messages": [{"role": "user", "content": "Hi"}]}).raise_for_status()
        yield Served(url, profiles, home)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
        cli("-f", str(profiles), "down", "--all", env=env)


@pytest.fixture(autouse=True)
def module_home(llmctl_home, monkeypatch, request):
    """The module's servers live under the module's LLMCTL_HOME."""
    if "served" in request.fixturenames:
        monkeypatch.setenv("LLMCTL_HOME", str(request.getfixturevalue("served").home))


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1200,800", f"--user-data-dir={tmp_path / 'chromium'}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def _cell(driver, name: str, cls: str) -> str:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    try:
        return driver.find_element("css selector", f"#profile-{name} td.{cls}").text
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def _errors(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]


@pytest.mark.engine
def test_api_refuses_without_the_key_from_another_site_and_as_a_form(served):
    auth = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    stop = served.url + "/ui/api/profiles/beta/stop"
    assert httpx.get(served.url + "/ui").status_code == 200  # the page itself carries no data
    assert httpx.get(served.url + "/ui/api/state").status_code == 401
    assert httpx.post(stop, content="{}", headers={"content-type": "application/json"}).status_code == 401
    assert httpx.post(stop, content="{}", headers={**auth, "origin": "http://evil.example"}).status_code == 403
    assert httpx.post(stop, content="a=1", headers={**auth, "content-type": "text/plain"}).status_code == 415
    assert httpx.post(stop, content="{}", headers={**auth, "host": "evil.example"}).status_code == 403
    assert httpx.post(served.url + "/ui/api/profiles/nope/stop", content="{}", headers=auth).status_code == 404
    state = httpx.get(served.url + "/ui/api/state", headers=auth).json()
    rows = {p["name"]: p for p in state["profiles"]}
    assert rows["alpha"]["state"] == rows["beta"]["state"] == "running"
    assert rows["alpha"]["pid"] and rows["alpha"]["uptime_s"] is not None and rows["alpha"]["idle_left_s"] > 3000
    chat = [r for r in state["recent"] if r["endpoint"] == "/v1/chat/completions"]
    assert chat and chat[0]["status"] == 200 and chat[0]["completion_tokens"] and "messages" not in chat[0]
    assert (chat[0]["model"], chat[0]["profile"]) == ("summary", "alpha")  # what was asked, and who served it
    assert served.status("beta")["state"] == "running"  # none of the refused stops went through


@pytest.mark.engine
@needs_chromium
def test_page_asks_for_the_key_then_shows_the_servers(served, browser):
    browser.get(served.url + "/ui")
    form = wait_for(lambda: browser.find_element("id", "key-form").is_displayed(), 30, "the key form")
    assert form
    browser.find_element("id", "key").send_keys(KEY + "\n")
    wait_for(lambda: _cell(browser, "alpha", "state") == "running", 30, "alpha shown running")
    # the only complaint: the first poll's 401, before the key was given
    assert all("401" in e["message"] for e in _errors(browser)), _errors(browser)


@pytest.mark.engine
@needs_chromium
def test_page_shows_servers_stops_one_and_streams_its_log(served, browser, smollm2):
    browser.get(f"{served.url}/ui#key={KEY}")
    wait_for(lambda: _cell(browser, "alpha", "state") == "running" and _cell(browser, "beta", "state") == "running",
             30, "both servers shown running")
    assert "#" not in browser.current_url  # the key left the address bar
    assert _cell(browser, "alpha", "model") == smollm2.name and _cell(browser, "alpha", "uptime")
    wait_for(lambda: "/v1/chat/completions" in browser.find_element("id", "recent").text, 10, "the recent request")
    row = next(r for r in browser.find_elements("css selector", "#recent tbody tr") if "/v1/chat/completions" in r.text)
    assert [td.text for td in row.find_elements("tag name", "td")][1:3] == ["summary", "alpha"]
    shot = os.environ.get("LLMCTL_SCREENSHOT")
    browser.find_element("css selector", "#profile-alpha button.log").click()
    wait_for(lambda: "llama" in browser.find_element("id", "log").text.lower(), 30, "alpha's log in the page")
    if shot:
        browser.save_screenshot(shot)
    browser.find_element("css selector", "#profile-beta button.stop").click()
    wait_for(lambda: served.status("beta")["state"] == "stopped", 60, "llmctl status: beta stopped")
    wait_for(lambda: _cell(browser, "beta", "state") == "stopped", 30, "beta shown stopped")
    assert served.status("alpha")["state"] == "running"
    wait_for(lambda: browser.find_element("css selector", "#profile-beta button.start").is_enabled(), 10, "start")
    browser.find_element("css selector", "#profile-beta button.start").click()  # through the pool: a start
    wait_for(lambda: served.status("beta")["state"] == "running", 120, "llmctl status: beta running again")
    wait_for(lambda: _cell(browser, "beta", "state") == "running", 30, "beta shown running")
    assert _errors(browser) == []

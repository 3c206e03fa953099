"""OIDC sign-in against a real OpenID Connect provider on loopback: the npm ``oidc-provider``
package (tests/oidc/server.js; install it with ``npm ci --prefix tests/oidc``), run with node.

The provider signs in whoever ``login_hint`` names (ada, rex, eve, una) without a form; the
seawall side is the real flow: discovery, authorization code with PKCE, state and nonce, the
token exchange, ID-token validation, userinfo, and the e-mail allow-list. Without node or the
installed package these tests skip (fail under CI).
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from seawall.ui.accounts import ui_sessions
from seawall.ui.auth import COOKIE
from seawall.ui.settings import OIDCSettings
from test_ui_support import (
    UIServer,
    bound_socket,
    chromium_path,
    keep,
    make_settings,
    missing,
    open_ui_store,
    screenshot_dir,
    ui_server,
    ui_settings,
)

OIDC_DIR = Path(__file__).parent / "oidc"
CLIENT_ID = "seawall-ui"
CLIENT_SECRET = "test-only-client-secret-0123456789"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        missing("node is not installed (apt-get install nodejs npm)")
    if not (OIDC_DIR / "node_modules" / "oidc-provider" / "package.json").is_file():
        missing("the test OIDC provider is not installed: run `npm ci --prefix tests/oidc`")
    assert node is not None
    return node


class Provider:
    """tests/oidc/server.js in a node process, until ``stop``; on a port the OS picks when it binds
    (``PORT=0``), which its "ready" line names in ``issuer``."""

    def __init__(self, node: str, redirect_uri: str) -> None:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PORT": "0",
            "CLIENT_ID": CLIENT_ID,
            "CLIENT_SECRET": CLIENT_SECRET,
            "REDIRECT_URI": redirect_uri,
            "NODE_ENV": "test",
        }
        self.process = subprocess.Popen(
            [node, "server.js"],
            cwd=OIDC_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []

        def read() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                self.output.append(line)
                lines.put(line)

        threading.Thread(target=read, daemon=True).start()
        try:
            while True:
                line = lines.get(timeout=30)
                if line.startswith("ready "):
                    self.issuer = line.split(" ", 1)[1].strip()
                    return
        except queue.Empty:
            self.stop()
            raise RuntimeError("the OIDC provider did not start: " + "".join(self.output)) from None

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UIServer]:
    node = _node()
    tmp = tmp_path_factory.mktemp("ui-oidc")
    sock = bound_socket()  # seawall's port first: the provider needs the redirect URI
    redirect_uri = f"http://127.0.0.1:{sock.getsockname()[1]}/ui/auth/callback"
    provider = Provider(node, redirect_uri)
    try:
        oidc = OIDCSettings(
            name="Test IdP",
            issuer=provider.issuer,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            roles={"ada@example.org": "admin", "rex@example.org": "reviewer"},
            allow_private_hosts=True,  # the provider runs on loopback
        )
        settings = make_settings(tmp)
        store = open_ui_store(settings)
        with ui_server(settings, ui_settings(tmp, oidc=oidc), store, sock=sock) as running:
            yield running
        store.close()
    finally:
        provider.stop()


def oidc_sign_in(server: UIServer, who: str, next_url: str = "/ui/") -> tuple[httpx.Client, httpx.Response]:
    """Click 'Sign in with Test IdP' as ``who``: follow every redirect through the provider."""
    http = server.http(follow_redirects=True)
    response = http.get("/ui/login/oidc", params={"next": next_url, "login_hint": who})
    return http, response


def test_an_allowed_admin_signs_in_through_the_provider(server: UIServer) -> None:
    http, response = oidc_sign_in(server, "ada", next_url="/ui/accounts")
    hops = [str(r.url) for r in response.history]
    authorize = next(hop for hop in hops if not hop.startswith(server.root))  # through the provider
    assert "code_challenge_method=S256" in authorize and "nonce=" in authorize and "state=" in authorize
    assert response.status_code == 200 and str(response.url) == f"{server.ui_root}/accounts"
    assert "Ada Admin" in response.text and ">admin<" in response.text
    assert http.get("/ui/users").status_code == 200
    with server.store.engine.connect() as connection:
        subjects = {row.subject: row.source for row in connection.execute(ui_sessions.select())}
    assert subjects.get("ada@example.org") == "oidc"
    http.close()


def test_an_allowed_reviewer_gets_the_reviewer_role(server: UIServer) -> None:
    http, response = oidc_sign_in(server, "rex")
    assert response.status_code == 200 and str(response.url) == f"{server.ui_root}/"
    assert "Rex Reviewer" in response.text
    assert http.get("/ui/accounts").status_code == 403
    http.close()


@pytest.mark.parametrize(
    ("who", "why"),
    [("eve", "eve@example.org is not allowed"), ("una", "has not verified ada@example.org")],
)
def test_people_off_the_list_or_unverified_are_refused(server: UIServer, who: str, why: str) -> None:
    http, response = oidc_sign_in(server, who)
    assert response.status_code == 403 and why in response.text
    assert COOKIE not in http.cookies or http.get("/ui/", follow_redirects=False).status_code == 303
    http.close()


def test_a_callback_without_the_flow_state_is_refused(server: UIServer) -> None:
    with server.http() as http:  # a forged callback: no state in this browser's cookie
        response = http.get("/ui/auth/callback", params={"code": "stolen", "state": "made-up"})
        assert response.status_code == 403 and "could not be signed in" in response.text
        assert http.get("/ui/").status_code == 303
    with server.http() as http:
        denied = http.get("/ui/auth/callback", params={"error": "access_denied"})
        assert denied.status_code == 403 and "access_denied" in denied.text


def test_taking_someone_off_the_allow_list_ends_their_access(server: UIServer) -> None:
    http, response = oidc_sign_in(server, "rex")
    assert response.status_code == 200
    view: Any = server.ui  # the settings object the running UI reads
    oidc = view.oidc
    assert oidc is not None
    del oidc.roles["rex@example.org"]
    try:
        assert http.get("/ui/", follow_redirects=False).status_code == 303
    finally:
        oidc.roles["rex@example.org"] = "reviewer"
    http.close()


def test_oidc_sign_in_in_the_browser(server: UIServer, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extra)")
    executable = chromium_path()
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=args)
        try:
            page = browser.new_page()
            page.goto(f"{server.ui_root}/")
            page.get_by_role("link", name="Sign in with Test IdP").click()
            page.wait_for_url(f"{server.ui_root}/")
            assert page.get_by_text("Ada Admin").is_visible()
            sync_api.expect(page.locator('[data-chart="requests"]')).to_have_attribute(
                "data-rendered", "true"
            )
            shot = screenshot_dir(tmp_path) / "oidc-signed-in.png"
            page.screenshot(path=str(shot), full_page=True)
            keep(shot)
        finally:
            browser.close()

"""The gateway without a browser: sign-in off loopback, the users file, the owner check, the queue's token.

These start only the gateway (``drasclr web``; no session process is started, so no slicer work is done):
- on a non-loopback address the server refuses to start without a users file (exit 2, one ``error:`` line);
- with one, every page asks for sign-in first, a wrong password is refused (and audited), a right one opens;
- a session id that is not the user's (or has a path in it) answers 404, and the queue refuses callers
  without the gateway's token.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar

import pytest
from web_support import MODULE_DIR, WebServer, free_port

pytest.importorskip("aiohttp", reason="aiohttp is not installed (pip install '.[web]')")


def env():
    path = [str(MODULE_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path))


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def client():
    jar = CookieJar()
    return urllib.request.build_opener(NoRedirect, urllib.request.HTTPCookieProcessor(jar)), jar


def fetch(opener, url, data=None, method=None):
    try:
        with opener.open(urllib.request.Request(url, data=data, method=method), timeout=30) as r:
            return r.status, r.headers, r.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read().decode(errors="replace")


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "reading-room.example"])
def test_off_loopback_without_users_refuses_to_start(host, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "drasclr", "web", "--host", host, "--port", str(free_port()),
                           "--data", str(tmp_path / "data")], capture_output=True, text=True, env=env(), timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error:") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "--users" in proc.stderr and "reading room: http" not in proc.stdout


def test_add_user_stores_only_a_hash(tmp_path):
    users = tmp_path / "users.json"
    proc = subprocess.run([sys.executable, "-m", "drasclr", "web", "--users", str(users), "--add-user", "alice"],
                          input="correct horse\n", capture_output=True, text=True, env=env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = users.read_text()
    assert "correct horse" not in text and json.loads(text)["users"]["alice"]["password"].startswith("scrypt$")
    assert oct(users.stat().st_mode & 0o777) == "0o600"
    from DrasCLRSlicerWeb.auth import Users

    db = Users(users)
    assert db.verify("alice", "correct horse") and not db.verify("alice", "wrong horse")
    assert not db.verify("mallory", "correct horse")


@pytest.fixture(scope="module")
def signed_server(tmp_path_factory):
    from DrasCLRSlicerWeb.auth import add_user

    tmp = tmp_path_factory.mktemp("gateway")
    add_user(tmp / "users.json", "alice", "alice-secret-1")
    server = WebServer(tmp / "data", tmp / "server.log", host="0.0.0.0", args=("--users", str(tmp / "users.json")))
    server.wait_ready(120)
    yield server
    server.stop()


def test_sign_in_is_required_off_loopback(signed_server):
    url = signed_server.url
    opener, jar = client()
    for path in ("", "sessions", "s/0123456789abcdef/", "s/0123456789abcdef/ws"):
        status, headers, _ = fetch(opener, url + path)
        assert status in (302, 401), (path, status)
        assert status == 401 or headers["Location"].startswith(("login", "../")), (path, headers["Location"])
    status, _, body = fetch(opener, url + "login")
    assert status == 200 and 'type="password"' in body
    bad = urllib.parse.urlencode({"username": "alice", "password": "guess"}).encode()
    status, _, body = fetch(opener, url + "login", bad)
    assert status == 401 and "wrong user name or password" in body and not list(jar)
    good = urllib.parse.urlencode({"username": "alice", "password": "alice-secret-1"}).encode()
    status, headers, _ = fetch(opener, url + "login", good)
    assert status == 302 and any(c.name == "drasclr_user" for c in jar)
    status, _, body = fetch(opener, url + "sessions")
    assert status == 200 and "alice" in body
    audit = [json.loads(ln) for ln in (signed_server.data / "audit.log").read_text().splitlines()]
    assert [(e["user"], e["action"]) for e in audit] == [("alice", "sign-in refused"), ("alice", "sign-in")]


def test_forged_cookie_other_session_and_queue_token_are_refused(signed_server):
    url = signed_server.url
    opener, jar = client()
    good = urllib.parse.urlencode({"username": "alice", "password": "alice-secret-1"}).encode()
    fetch(opener, url + "login", good)
    # a session folder of another user, and ids with paths in them: 404 (no process is started for them)
    other = signed_server.data / "sessions" / "b0b0b0b0b0b0b0b0"
    other.mkdir(parents=True)
    (other / "session.json").write_text(json.dumps({"id": other.name, "user": "bob", "jobs": []}))
    for path in (f"s/{other.name}/", f"s/{other.name}/ws", "s/..%2F..%2Fusers.json/", "s/%2e%2e/index.html"):
        status, _, _ = fetch(opener, url + path)
        assert status == 404, (path, status)
    # a cookie signed for bob by someone without the server's secret
    cookie = next(c for c in jar if c.name == "drasclr_user")
    status, _, _ = fetch_with_cookie(url + "sessions", cookie.value.replace("alice", "bob"))
    assert status == 302  # back to sign-in
    # the queue is for session processes only
    status, _, _ = fetch(opener, url + "_queue", json.dumps({"session": other.name}).encode(), method="POST")
    assert status == 403


def fetch_with_cookie(url, value):
    req = urllib.request.Request(url, headers={"Cookie": f"drasclr_user={value}"})
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, b""


def room_pids(session_id: str) -> list[int]:
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if b"DrasCLRSlicerWeb.room" in cmd and session_id.encode() in cmd:
            pids.append(int(pid))
    return pids


@pytest.mark.slow
def test_idle_session_stops_and_reopens(tmp_path):
    """Loopback without users: a browser gets its own anonymous session; with no page connected it stops after
    the idle time (its process exits), and the same browser reopens the same session, CT restored."""
    pytest.importorskip("trame_slicer", reason="trame-slicer is not installed (pip install '.[web]')")
    import time

    server = WebServer(tmp_path / "data", tmp_path / "server.log", args=("--idle-minutes", "0.05"))
    try:
        server.wait_ready(120)
        opener, _ = client()
        status, headers, _ = fetch(opener, server.url)  # the anonymous identity cookie
        status, headers, _ = fetch(opener, server.url)
        assert status == 302 and headers["Location"].startswith("s/")
        sid = headers["Location"].split("/")[1]
        other, _ = client()  # a second browser gets another session
        fetch(other, server.url)
        assert fetch(other, server.url)[1]["Location"] != headers["Location"]
        status, _, body = fetch(opener, server.url + f"s/{sid}/")
        assert status == 200 and "<html" in body.lower()
        assert room_pids(sid)
        record = server.data / "sessions" / sid / "session.json"
        record.write_text(json.dumps({**json.loads(record.read_text()), "ct": "demo"}))  # as after Load demo
        t0 = time.monotonic()
        while room_pids(sid) and time.monotonic() - t0 < 120:
            time.sleep(0.5)
        assert not room_pids(sid), "the idle session was not stopped"
        status, headers, _ = fetch(opener, server.url)
        assert headers["Location"] == f"s/{sid}/"  # the last session, reopened
        assert fetch(opener, server.url + f"s/{sid}/")[0] == 200 and room_pids(sid)
        audit = [json.loads(ln) for ln in (server.data / "audit.log").read_text().splitlines()]
        assert [e["action"] for e in audit if e["session"] == sid] == ["session start", "reopen"]
    finally:
        server.stop()

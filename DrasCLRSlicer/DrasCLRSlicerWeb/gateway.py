"""The gateway: what a browser reaches. Sign-in, one session process per browser session, the shared job queue.

Routes (all relative, so the gateway also works under a reverse proxy's path prefix):

- ``/login``, ``/logout``: sign-in with the users file (:mod:`.auth`) when there is one. Without one (only
  possible on loopback) every browser gets an anonymous identity cookie, so two browsers still get two sessions.
- ``/``: the signed-in user's live session, else their last one (reopened), else a new one;
  ``/sessions``: the user's sessions (reopen one, or start a new one).
- ``/s/<id>/...`` and ``/s/<id>/ws``: the page and websocket of session ``<id>``, proxied to its process
  (wslink's own websocket forwarder) after checking that the session belongs to the signed-in user; another
  user's session answers 404, exactly like a session that does not exist.
- ``/_queue``: the job queue (:mod:`.jobqueue`) for the session processes, guarded by a per-start token.

Sessions are processes started by wslink's launcher (:mod:`.sessions`); idle ones are stopped by a sweeper.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import logging
import secrets
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from wslink.backends.aiohttp.relay import ForwardConnection

from .audit import AuditLog
from .auth import COOKIE, Cookies, valid_user_name
from .jobqueue import FairQueue, default_slots
from .sessions import SessionDenied, SessionRegistry, session_environment

log = logging.getLogger(__name__)
PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>DrasCLR reading room</title>
<style>body{{font-family:sans-serif;background:#1e1e1e;color:#eee;margin:40px}} input,button{{font-size:15px;
margin:4px 0;padding:4px}} a{{color:#8cf}} .error{{color:#f77}} td{{padding:2px 10px}}</style></head>
<body><h2>DrasCLR reading room</h2>{body}</body></html>"""
LOGIN = """<form method="post" action="login"><div class="error" id="login-error">{error}</div>
<div><input id="username" name="username" placeholder="user" autofocus></div>
<div><input id="password" name="password" type="password" placeholder="password"></div>
<input type="hidden" name="next" value="{next}"><button id="btn-sign-in" type="submit">Sign in</button></form>"""


class Gateway:
    def __init__(self, data_root: Path, host: str, port: int, users=None, models=None, device: str = "auto",
                 finetune_seconds: float = 30.0, ct: str | None = None, max_jobs: int = 0,
                 idle_seconds: float = 1800.0, max_sessions: int = 50, max_upload_mb: float = 2048):
        self.data_root = Path(data_root).expanduser().resolve()
        (self.data_root / "sessions").mkdir(parents=True, exist_ok=True)
        self.host, self.port, self.users = host, port, users
        self.cookies = Cookies(self.data_root / "run" / "cookie-secret")
        self.audit = AuditLog(self.data_root / "audit.log")
        self.token = secrets.token_hex(16)
        self.queue = FairQueue(max_jobs or default_slots())
        room_args = ["--data", str(self.data_root), "--device", device, "--finetune-seconds", f"{finetune_seconds:g}",
                     "--max-upload-mb", f"{max_upload_mb:g}"]
        if models:
            room_args += ["--models", str(Path(models).expanduser().resolve())]
        if users is not None:
            room_args.append("--per-user-models")  # a user's fine-tuned versions are theirs alone
        if ct:
            room_args += ["--ct", ct]
        self.registry = SessionRegistry(self.data_root, room_args, (port + 1, port + max_sessions), idle_seconds,
                                        on_end=self.queue.leave_session)
        self.http: aiohttp.ClientSession | None = None

    # --- who is asking -------------------------------------------------------------------------------------
    def user_of(self, request) -> str | None:
        user = self.cookies.user(request.cookies.get(COOKIE))
        if user is None:
            return None
        if self.users is not None and user not in self.users:
            return None  # removed from the users file, or an anonymous cookie from a loopback-only start
        return user

    # --- pages ---------------------------------------------------------------------------------------------
    async def health(self, request):
        return web.Response(text="ok")

    async def login_page(self, request, error: str = "", status: int = 200):
        if self.users is None:
            raise web.HTTPFound("./")
        nxt = html.escape(request.query.get("next", ""))
        return web.Response(text=PAGE.format(body=LOGIN.format(error=html.escape(error), next=nxt)),
                            content_type="text/html", status=status)

    async def login(self, request):
        if self.users is None:
            raise web.HTTPFound("./")
        form = await request.post()
        name, password = str(form.get("username", "")), str(form.get("password", ""))
        ok = valid_user_name(name) and await asyncio.get_running_loop().run_in_executor(
            None, self.users.verify, name, password)
        if not ok:
            self.audit.write("sign-in refused", user=name if valid_user_name(name) else "?", session="",
                             address=request.remote or "")
            await asyncio.sleep(1.0)  # slows password guessing
            return await self.login_page(request, "wrong user name or password", status=401)
        self.audit.write("sign-in", user=name, session="", address=request.remote or "")
        nxt = str(form.get("next", ""))
        response = web.HTTPFound(nxt if nxt.startswith("s/") and ".." not in nxt else "./")
        response.set_cookie(COOKIE, self.cookies.make(name), max_age=int(self.cookies.max_age), httponly=True,
                            samesite="Strict", secure=request_is_https(request), path="/")
        raise response

    async def logout(self, request):
        user = self.user_of(request)
        if user:
            self.audit.write("sign-out", user=user, session="")
        response = web.HTTPFound("login" if self.users is not None else "./")
        response.del_cookie(COOKIE, path="/")
        raise response

    def _who(self, request, prefix: str = "") -> str:
        """The signed-in user; else sign-in (users file) or a new anonymous identity (loopback only)."""
        user = self.user_of(request)
        if user is not None:
            return user
        if self.users is not None:
            raise web.HTTPFound(f"{prefix}login?next={request.path.lstrip('/')}")
        user = f"anon-{secrets.token_hex(6)}"
        response = web.HTTPFound(f"{prefix}{request.path.lstrip('/')}" or "./")
        response.set_cookie(COOKIE, self.cookies.make(user), max_age=int(self.cookies.max_age), httponly=True,
                            samesite="Strict", path="/")
        raise response

    async def home(self, request):
        user = self._who(request)
        raise web.HTTPFound(f"s/{self.registry.last_or_new(user)}/")

    async def sessions_page(self, request):
        user = self._who(request)
        rows = "".join(
            f"<tr><td><a class='session' href='s/{r['id']}/'>{r['id']}</a></td>"
            f"<td>{time.strftime('%Y-%m-%d %H:%M', time.localtime(r.get('created', 0)))}</td>"
            f"<td>{html.escape(Path(str(r.get('ct') or '')).name)}</td><td>{'open' if r['live'] else ''}</td></tr>"
            for r in self.registry.of_user(user))
        body = (f"<p>Signed in as <b id='who'>{html.escape(user)}</b> · <a href='logout'>sign out</a></p>"
                f"<form method='post' action='sessions/new'><button id='btn-new-session'>New session</button></form>"
                f"<table id='sessions'><tr><th>session</th><th>started</th><th>CT</th><th></th></tr>{rows}</table>")
        return web.Response(text=PAGE.format(body=body), content_type="text/html")

    async def new_session(self, request):
        user = self._who(request, prefix="../")
        session_id = self.registry.new(user)
        self.audit.write("new session", user=user, session=session_id)
        raise web.HTTPFound(f"../s/{session_id}/")

    # --- a session's page and websocket --------------------------------------------------------------------
    async def _live(self, request):
        session_id = request.match_info["sid"]
        user = self.user_of(request)
        if user is None:
            raise web.HTTPUnauthorized(text="sign in first")
        try:
            return await self.registry.ensure(session_id, user)
        except SessionDenied:
            self.audit.write("session refused", user=user, session=session_id[:64])
            raise web.HTTPNotFound(text="no such session") from None
        except (RuntimeError, TimeoutError) as exc:
            raise web.HTTPServiceUnavailable(text=f"the session could not be started: {exc}") from None

    async def slash(self, request):
        self._who(request, prefix="../")
        raise web.HTTPFound(f"{request.match_info['sid']}/")

    async def page(self, request):
        if self.user_of(request) is None:
            self._who(request, prefix="../../")
        live = await self._live(request)
        tail = request.match_info["tail"]
        if ".." in tail.split("/"):
            raise web.HTTPNotFound()
        async with self.http.get(f"http://127.0.0.1:{live.port}/{tail}", params=request.query) as r:
            body = await r.read()
            headers = {k: r.headers[k] for k in ("Content-Type", "Cache-Control") if k in r.headers}
            return web.Response(body=body, status=r.status, headers=headers)

    async def websocket(self, request):
        live = await self._live(request)
        self.registry.connected(live.id, +1)
        forward = ForwardConnection(request, f"ws://127.0.0.1:{live.port}/ws")
        try:
            await forward.connect()
        finally:
            self.registry.connected(live.id, -1)
        return forward._ws_server._ws or web.Response(status=502)

    # --- the queue, for session processes ------------------------------------------------------------------
    def _internal(self, request) -> None:
        if not hmac.compare_digest(request.headers.get("X-DrasCLR-Token", ""), self.token):
            raise web.HTTPForbidden()

    async def queue_enter(self, request):
        self._internal(request)
        body = await request.json()
        session_id, kind = str(body.get("session", "")), str(body.get("kind", "job"))
        if session_id not in self.registry.live:
            raise web.HTTPNotFound()
        ticket = self.queue.enter(session_id, self.registry.live[session_id].user, kind)
        place = self.queue.place(ticket.id)
        self.audit.write("queued", kind, user=ticket.user, session=session_id, place=place)
        return web.json_response({"ticket": ticket.id, "place": place})

    async def queue_place(self, request):
        self._internal(request)
        known = request.query.get("known", "")
        timeout = min(20.0, float(request.query.get("timeout", "10")))
        place = await self.queue.wait_change(request.match_info["ticket"], int(known) if known else None, timeout)
        if place is None:
            raise web.HTTPNotFound()
        return web.json_response({"place": place})

    async def queue_leave(self, request):
        self._internal(request)
        self.queue.leave(request.match_info["ticket"])
        return web.json_response({})

    # --- running -------------------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024)
        app.add_routes([
            web.get("/_health", self.health), web.get("/login", self.login_page), web.post("/login", self.login),
            web.get("/logout", self.logout), web.get("/", self.home), web.get("/sessions", self.sessions_page),
            web.post("/sessions/new", self.new_session),
            web.post("/_queue", self.queue_enter), web.get("/_queue/{ticket}", self.queue_place),
            web.delete("/_queue/{ticket}", self.queue_leave),
            web.get("/s/{sid}", self.slash), web.get("/s/{sid}/ws", self.websocket),
            web.get("/s/{sid}/{tail:.*}", self.page),
        ])
        return app

    def run(self) -> int:
        internal = self.host if self.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        session_environment(self.token, f"http://{internal}:{self.port}")
        try:
            asyncio.run(self._serve())
        except KeyboardInterrupt:
            pass
        finally:
            self.registry.stop_all()  # SIGTERM to every session process: each kills its engine child
        return 0

    async def _serve(self) -> None:
        self.http = aiohttp.ClientSession()
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.host, self.port).start()
        shown = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        print(f"DrasCLR reading room: http://{shown}:{self.port}/  (data folder {self.data_root}; "
              f"{'sign-in required' if self.users is not None else 'this machine only, no sign-in'}; "
              f"{self.queue.slots} heavy job(s) at a time; Ctrl+C stops)", flush=True)
        sweeper = asyncio.create_task(self.registry.sweep_forever(self.queue.busy_sessions))
        try:
            await asyncio.Event().wait()
        finally:
            sweeper.cancel()
            self.registry.stop_all()
            await self.http.close()
            await runner.cleanup()


def request_is_https(request) -> bool:
    """Behind a TLS reverse proxy the request reaches the gateway as http; the proxy says so in a header."""
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"

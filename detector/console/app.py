"""The console's pages. Server-rendered (Jinja2, autoescaped), no front-end build step.

    app = make_app(settings)                 # Starlette; `detector console` serves it with uvicorn
    GET  /login, POST /login, POST /logout   # a session cookie after a good name and password
    GET  /?severity=&status=&stream=&page=   # alerts, newest first; reloads itself, filter kept
    GET  /alerts/{alert_id}                  # score, reasons, the stream's recent events, history
    POST /alerts/{alert_id}/verdict          # fraud | legit | unsure, a note: to the verdicts topic

Every form carries the session's CSRF token; a POST without it is refused (403). The analyst's
name on a verdict is the logged-in user's, never a form field.
"""

from __future__ import annotations

import contextlib
import hmac
import secrets
import urllib.parse
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from detector.config import Settings
from detector.console.sources import AlertsReader, recent_events
from detector.console.store import STATUSES, Store
from detector.console.users import check
from detector.kafka.base import Client
from detector.kafka.factory import client_for

TEMPLATES = Path(__file__).parent / "templates"
VERDICTS = ("fraud", "legit", "unsure")
SEVERITIES = ("warning", "critical")


def _csrf(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return str(token)


async def _form(request: Request) -> dict[str, str] | None:
    """The posted form, or None when its CSRF token is not the session's."""
    form = await request.form()
    sent, want = str(form.get("csrf", "")), str(request.session.get("csrf", ""))
    if not want or not hmac.compare_digest(sent, want):
        return None
    return {k: str(v) for k, v in form.items()}


def make_app(settings: Settings, client: Client | None = None) -> Starlette:
    cfg, k = settings.console, settings.kafka
    client = client or client_for(k)
    readers = client_for(k.model_copy(update={"group_id": cfg.group_id}))
    store = Store(Path(cfg.db_path))
    # Autoescaped everywhere: every event field is shown as text, markup included.
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True)
    templates = Jinja2Templates(env=env)
    templates.env.filters["q"] = lambda s: urllib.parse.quote(str(s), safe="")
    state: dict[str, Any] = {}

    def page(request: Request, name: str, **ctx: Any) -> Response:
        ctx.update(user=request.session.get("user"), csrf=_csrf(request), reader_error=state["reader"].error)
        return templates.TemplateResponse(request, name, ctx)

    def who(request: Request) -> str | None:
        return request.session.get("user")

    def to_login(request: Request) -> Response:
        return RedirectResponse(
            f"/login?next={urllib.parse.quote(str(request.url.path) + '?' + request.url.query)}", 303
        )

    async def login(request: Request) -> Response:
        if request.method == "GET":
            return page(request, "login.html", error=None, next=request.query_params.get("next", "/"))
        form = await _form(request)
        if form is None:
            return PlainTextResponse("missing or wrong CSRF token", 403)
        nxt = form.get("next", "/")
        nxt = nxt if nxt.startswith("/") and not nxt.startswith("//") else "/"
        if not check(Path(cfg.users_file), form.get("user", ""), form.get("password", "")):
            return page(request, "login.html", error="wrong name or password", next=nxt)
        request.session.clear()
        request.session["user"] = form["user"]
        return RedirectResponse(nxt, 303)

    async def logout(request: Request) -> Response:
        if await _form(request) is None:
            return PlainTextResponse("missing or wrong CSRF token", 403)
        request.session.clear()
        return RedirectResponse("/login", 303)

    async def alerts(request: Request) -> Response:
        if not who(request):
            return to_login(request)
        q = request.query_params
        severity = q.get("severity") if q.get("severity") in SEVERITIES else None
        status = q.get("status") if q.get("status") in STATUSES else None
        stream = q.get("stream") or None
        pg = max(int(q.get("page", "0")) if q.get("page", "0").isdigit() else 0, 0)
        rows, total = store.alerts(severity, status, stream, pg, cfg.page_size)
        keep = {k: v for k, v in (("severity", severity), ("status", status), ("stream", stream)) if v}
        return page(
            request, "list.html", alerts=rows, total=total, page=pg, pages=max((total - 1) // cfg.page_size + 1, 1),
            severity=severity, status=status, stream=stream or "", query=urllib.parse.urlencode(keep),
            refresh=cfg.refresh_seconds, severities=SEVERITIES, statuses=STATUSES,
        )  # fmt: skip

    async def alert(request: Request) -> Response:
        if not who(request):
            return to_login(request)
        a = store.alert(request.path_params["alert_id"])
        if a is None:
            return PlainTextResponse("no such alert", 404)
        try:
            events = recent_events(client, a, k.input_topic, cfg.recent_events, cfg.events_scan)
            events_error = None
        except Exception as exc:  # noqa: BLE001 - Kafka away: the rest of the page still helps
            events, events_error = [], str(exc)[:300]
        history, verdicts = store.stream_history(a["stream_id"])
        return page(
            request, "alert.html", a=a, events=events, events_error=events_error, history=history,
            verdicts=verdicts, choices=VERDICTS, done=request.query_params.get("done"),
        )  # fmt: skip

    async def verdict(request: Request) -> Response:
        user = who(request)
        if not user:
            return to_login(request)
        form = await _form(request)
        if form is None:
            return PlainTextResponse("missing or wrong CSRF token", 403)
        a = store.alert(request.path_params["alert_id"])
        if a is None or form.get("verdict") not in VERDICTS:
            return PlainTextResponse("no such alert or verdict", 400)
        decided = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        v = {"alert_id": a["alert_id"], "stream_id": a["stream_id"], "verdict": form["verdict"], "analyst": user,
             "note": form.get("note", "")[:1000], "decided_at": decided}  # fmt: skip
        sink = state["sink"]
        sink.send(k.verdicts_topic, a["stream_id"].encode(), orjson.dumps(v))
        sink.flush(10.0)  # acknowledged before the analyst is told it is recorded
        store.add_verdict(a["alert_id"], a["stream_id"], v["verdict"], user, v["note"], decided)
        return RedirectResponse(f"/alerts/{urllib.parse.quote(a['alert_id'], safe='')}?done={v['verdict']}", 303)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        with AlertsReader(readers, store, k.alerts_topic) as reader, client.sink() as sink:
            state.update(reader=reader, sink=sink)
            yield
        store.close()

    secret = cfg.session_secret.get_secret_value() if cfg.session_secret else secrets.token_urlsafe(32)
    return Starlette(
        routes=[
            Route("/login", login, methods=["GET", "POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/", alerts),
            Route("/alerts/{alert_id:path}/verdict", verdict, methods=["POST"]),
            Route("/alerts/{alert_id:path}", alert),
            Route("/healthz", healthz),
        ],
        middleware=[Middleware(SessionMiddleware, secret_key=secret, same_site="strict", https_only=False)],
        lifespan=lifespan,
    )

"""The HTTP service: ``create_app(recommender, settings)`` builds a FastAPI app over a
:class:`~ragrec.inference.Recommender` (no module-level state; ``ragrec serve`` runs it on uvicorn).

Endpoints (see README "Serving"): recommendations in Gorse's resource style
(``GET /recommend/{user_id}``, ``POST /session/recommend``, ``GET /items/{id}``, ``GET /search``),
``GET /explain/{user_id}/{item_id}`` streamed as server-sent events, the OpenAI chat API
(``GET /v1/models``, ``POST /v1/chat/completions``, streamed or not), feedback
(``POST /feedback``, ``POST /items``), and operations (``/health/live``, ``/health/ready``,
``/metrics``). Errors are JSON in the OpenAI shape ``{"error": {"message", "type", "param",
"code"}}``; bad input is a 4xx naming the field, never a traceback.

Model work runs off the event loop: rank requests through the :class:`MicroBatcher` (one forward
pass for concurrent requests), everything else in worker threads (the recommender's lock keeps
one model call at a time).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from ragrec.errors import RagrecError, UnknownNameError
from ragrec.serve.batching import MicroBatcher
from ragrec.serve.live import replay
from ragrec.serve.schemas import (
    ChatRequest,
    EvidenceOut,
    ExplanationOut,
    FeedbackIn,
    FeedbackResponse,
    ItemOut,
    ItemsRequest,
    ItemsResponse,
    RankedOut,
    RecommendResponse,
    SearchResponse,
    SessionRecommendRequest,
    completion_id,
    now,
)
from ragrec.serve.settings import ServeSettings
from ragrec.serve.store import Deployment, FeedbackStore, Version
from ragrec.tasks import task_names
from ragrec.types import Item

__all__ = ["create_app", "serve_in_background", "ApiError", "ServiceState"]

log = logging.getLogger("ragrec.serve")


class ApiError(Exception):
    """A request the service refuses: HTTP ``status``, a message, the offending field (``param``)."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def _error(status: int, message: str, *, param: str | None = None, code: str | None = None, kind: str | None = None):
    kind = kind or ("invalid_request_error" if status < 500 else "server_error")
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


class _Metrics:
    """The app's Prometheus collectors, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("ragrec_requests_total", "HTTP requests.", ["endpoint", "scenario", "status"],
                                registry=self.registry)  # fmt: skip
        self.latency = Histogram("ragrec_request_seconds", "Request latency.", ["endpoint", "scenario"],
                                 registry=self.registry,
                                 buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120))  # fmt: skip
        self.batch = Histogram("ragrec_batch_size", "Requests per model call.", registry=self.registry,
                               buckets=(1, 2, 4, 8, 12, 16, 24, 32, 64))  # fmt: skip
        self.fallbacks = Counter("ragrec_fallbacks_total", "Answers that used a fallback.", ["endpoint", "scenario"],
                                 registry=self.registry)  # fmt: skip
        self.feedback = Counter("ragrec_feedback_total", "Interactions accepted.", ["scenario"], registry=self.registry)


@dataclass
class ServiceState:
    """What the app serves now: the recommender, its version, the feedback store. ``swap`` replaces
    the recommender between requests (a request keeps the one it started with)."""

    recommender: Any
    version: Version
    store: FeedbackStore | None = None
    feedback_lock: threading.Lock = field(default_factory=threading.Lock)
    replay_note: str | None = None

    def swap(self, recommender: Any, version: Version) -> None:
        self.recommender, self.version = recommender, version


class _Conversations:
    """Chat sessions by conversation so far (LRU); a conversation continues from its session once."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._sessions: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(version: str, scenario: str, user: str | None, turns: Sequence[tuple[str, str]]) -> str:
        blob = json.dumps([version, scenario, user, list(turns)], ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def pop(self, key: str) -> Any:
        with self._lock:
            return self._sessions.pop(key, None)

    def put(self, key: str, session: Any) -> None:
        if not self.size:
            return
        with self._lock:
            self._sessions[key] = session
            while len(self._sessions) > self.size:
                self._sessions.popitem(last=False)


def _evidence_out(evidence) -> list[EvidenceOut]:
    return [EvidenceOut(item_id=e.item_id, title=e.title, weight=float(e.weight), share=float(e.share))
            for e in evidence]  # fmt: skip


def _ranked(sc, items) -> list[RankedOut]:
    return [RankedOut(item_id=it.item_id, rank=it.rank, score=float(it.score), retriever_score=it.retriever_score,
                      title=sc.catalog[it.item_id].title if it.item_id in sc.catalog else None,
                      evidence=_evidence_out(it.evidence))
            for it in items]  # fmt: skip


def _item_out(item: Item) -> ItemOut:
    return ItemOut(item_id=item.item_id, title=item.title, year=item.year, categories=list(item.categories),
                   brand=item.brand, description=item.description)  # fmt: skip


def _explanation_out(ex) -> ExplanationOut:
    return ExplanationOut(item_id=ex.item_id, text=ex.text, grounded=ex.grounded, fallback=ex.fallback,
                          notes=list(ex.notes), evidence=_evidence_out(ex.evidence),
                          cited=list(ex.grounding.cited))  # fmt: skip


def _sse(event: str | None, data: Any) -> str:
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return (f"event: {event}\n" if event else "") + f"data: {payload}\n\n"


class _BodyLimit:
    """ASGI middleware: refuse a body over ``limit`` bytes with 413, whether its size is declared
    or it arrives in chunks (the body is read here, at most ``limit`` bytes, then handed on)."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        too_big = _error(413, f"request body over {self.limit} bytes", code="body_too_large")
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await too_big(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await too_big(scope, receive, send)
            if not message.get("more_body", False):
                break
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def create_app(
    recommender,
    settings: ServeSettings | None = None,
    *,
    deployment: Deployment | None = None,
    loader: Callable[[Version], Any] | None = None,
    store: FeedbackStore | None = None,
) -> FastAPI:
    """The service over ``recommender``.

    With a ``deployment`` (what ``ragrec serve PATH`` passes), feedback is stored in its database
    and replayed into ``recommender`` now, and a version published by ``ragrec retrain`` is loaded
    with ``loader(version)`` (default: ``Recommender.from_pretrained`` with the serving config) and
    swapped in. ``store`` alone gives durable feedback without versions (tests); with neither,
    feedback changes the recommender in memory only, and each answer says so (``stored: false``)."""
    settings = settings or ServeSettings()
    version = deployment.current() if deployment is not None else Version("in-memory", None)  # type: ignore[arg-type]
    if deployment is not None and store is None:
        store = deployment.open_store()
    state = ServiceState(recommender, version, store)
    if store is not None:
        rep = replay(recommender, store, version)
        state.replay_note = f"replayed {rep.items} items and {rep.interactions} interactions" + (
            f"; skipped: {'; '.join(rep.skipped)}" if rep.skipped else ""
        )
        log.info(json.dumps({"event": "replay", "items": rep.items, "interactions": rep.interactions,
                             "skipped": rep.skipped}))  # fmt: skip
    metrics = _Metrics()
    conversations = _Conversations(settings.chat_sessions)

    def run_rank(key: Hashable, payloads: Sequence[dict]) -> list:
        """One batched ``recommend_batch`` call for requests of the same key; a failing batch is
        retried one request at a time so that one bad request cannot fail the others."""
        rec = state.recommender
        scenario, n, kind, exclude = key  # type: ignore[misc]
        opts = {"exclude_items": list(exclude)} if exclude else {}

        def call(group: Sequence[dict]) -> list:
            if kind == "user":
                return rec.recommend_batch([p["user"] for p in group], scenario=scenario, k=n, **opts)
            return rec.recommend_batch(histories=[p["history"] for p in group], scenario=scenario, k=n, **opts)

        try:
            return [(r, state.version.name) for r in call(payloads)]
        except RagrecError:
            if len(payloads) == 1:
                raise
        out = []
        for p in payloads:
            try:
                out.append((call([p])[0], state.version.name))
            except RagrecError as exc:
                out.append(exc)
        return out

    batcher = MicroBatcher(
        run_rank,
        window_s=settings.batch_window_ms / 1000,
        max_batch=settings.max_batch,
        enabled=settings.micro_batching,
        on_batch=metrics.batch.observe,
    )

    async def watch_versions() -> None:
        """Load a newly published version in the background and swap it in."""
        while True:
            await asyncio.sleep(settings.reload_interval_s)
            try:
                current = await asyncio.to_thread(deployment.current)
                if current.name == state.version.name:
                    continue
                log.info(json.dumps({"event": "reload", "version": current.name}))
                new = await asyncio.to_thread(load, current)
                await asyncio.to_thread(switch, new, current)
                log.info(json.dumps({"event": "swapped", "version": current.name}))
            except Exception as exc:  # a bad version never stops the running one
                log.error(json.dumps({"event": "reload_failed", "error": str(exc)}))

    def load(current: Version):
        if loader is not None:
            return loader(current)
        from ragrec.inference import Recommender

        return Recommender.from_pretrained(current.path, **recommender_overrides)

    recommender_overrides = {"quantization": recommender.config.quantization, "device": recommender.config.device}

    def switch(new, current: Version) -> None:
        if state.store is None:
            state.swap(new, current)
            return
        done = replay(new, state.store, current)  # everything stored so far, while the old version serves
        with state.feedback_lock:  # then what arrived meanwhile, and the swap: no feedback is missed
            replay(new, state.store, Version(current.name, current.path, done.interactions_through,
                                             done.items_through))  # fmt: skip
            state.swap(new, current)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        watcher = None
        if deployment is not None and settings.reload_interval_s > 0:
            watcher = asyncio.create_task(watch_versions())
        yield
        if watcher is not None:
            watcher.cancel()
        await batcher.close()

    app = FastAPI(title="ragrec", version="1", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.ragrec = state
    app.state.metrics = metrics

    # ------------------------------------------------------------------ errors, once
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return _error(exc.status, exc.message, param=exc.param, code=exc.code)

    @app.exception_handler(UnknownNameError)
    async def _unknown(request: Request, exc: UnknownNameError):
        return _error(404 if exc.kind in ("scenario",) else 400, str(exc), param=exc.kind, code=f"unknown_{exc.kind}")

    @app.exception_handler(RagrecError)
    async def _ragrec(request: Request, exc: RagrecError):
        return _error(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        if first.get("type") == "json_invalid":
            return _error(400, "malformed JSON body", code="json_invalid")
        where = ".".join(loc) or "body"
        return _error(422, f"{where}: {first.get('msg', 'invalid value')}", param=where, code=first.get("type"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        log.error(json.dumps({"event": "error", "request_id": getattr(request.state, "request_id", None),
                              "error": type(exc).__name__}))  # fmt: skip
        return _error(500, "internal error; the request id is in the X-Request-ID header", code="internal")

    # ------------------------------------------------------------------ request id, logs, metrics
    @app.middleware("http")
    async def _observe(request: Request, call_next):
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        rid = rid[:64] if rid.isascii() and rid.isprintable() else uuid.uuid4().hex
        request.state.request_id = rid
        start = time.perf_counter()
        response = await call_next(request)
        elapsed = time.perf_counter() - start
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "unmatched")
        scenario = getattr(request.state, "scenario", "-")
        if endpoint != "/metrics":
            metrics.requests.labels(endpoint, scenario, str(response.status_code)).inc()
            metrics.latency.labels(endpoint, scenario).observe(elapsed)
        response.headers["X-Request-ID"] = rid
        entry = {"event": "request", "request_id": rid, "method": request.method, "route": endpoint,
                 "scenario": scenario, "status": response.status_code, "ms": round(elapsed * 1000, 1)}  # fmt: skip
        if settings.log_user_text:
            entry["path"] = request.url.path
        log.info(json.dumps(entry))
        return response

    app.add_middleware(_BodyLimit, limit=settings.max_body_bytes)

    # ------------------------------------------------------------------ auth
    key = settings.api_key.get_secret_value().encode() if settings.api_key is not None else None

    async def require_key(request: Request) -> None:
        if key is None:
            return
        given = request.headers.get("x-api-key", "")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not hmac.compare_digest(given.encode(), key):
            raise ApiError(401, "missing or wrong API key (Authorization: Bearer KEY or X-API-Key)",
                           code="invalid_api_key")  # fmt: skip

    # ------------------------------------------------------------------ helpers
    def scenario_of(request: Request, name: str | None):
        rec = state.recommender
        try:
            sc = rec.scenario(name)
        except UnknownNameError as exc:
            raise ApiError(404, str(exc), param="scenario", code="unknown_scenario") from None
        request.state.scenario = sc.name
        return rec, sc

    def check_n(n: int | None, rec) -> int:
        """``n`` checked against the candidates the model ranks (default: 10, or all of them when fewer)."""
        top = rec.config.candidates
        if n is None:
            return min(10, top)
        if not 1 <= n <= top:
            raise ApiError(400, f"n must be between 1 and {top} (the candidates the model ranks), got {n}", param="n")
        return n

    def check_items(sc, ids: Sequence[str], param: str) -> None:
        unknown = [i for i in ids if i not in sc.catalog]
        if unknown:
            raise ApiError(404, f"unknown item ids {unknown[:10]} in scenario {sc.name!r}", param=param,
                           code="unknown_item")  # fmt: skip

    def check_user(sc, user_id: str, param: str = "user_id", hint: str = "") -> None:
        if user_id not in sc.histories:
            raise ApiError(404, f"unknown user {user_id!r} in scenario {sc.name!r}{hint}", param=param,
                           code="unknown_user")  # fmt: skip

    def check_task(task: str) -> None:
        valid = task_names(recommend=True)
        if task not in valid:
            raise ApiError(422, f"task: unknown recommend task {task!r}; valid: {', '.join(valid)}", param="task",
                           code="unknown_task")  # fmt: skip

    def check_text(text: str, param: str) -> None:
        if len(text) > settings.max_message_chars:
            raise ApiError(400, f"{param} is {len(text)} characters; the limit is {settings.max_message_chars}",
                           param=param, code="message_too_long")  # fmt: skip

    async def bounded(work):
        """``work`` awaited within the request timeout, else 504."""
        try:
            return await asyncio.wait_for(work, settings.request_timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(504, f"the model did not answer within {settings.request_timeout_s:g} s",
                           code="timeout") from None  # fmt: skip

    async def in_thread(fn: Callable, *args, **kwargs):
        return await bounded(asyncio.to_thread(fn, *args, **kwargs))

    async def ranked(request: Request, sc, n: int, task: str, exclude: list[str], *, user=None, history=None):
        rec = state.recommender
        if task == "generate":  # free generation is not batched: one request, one decode
            res = await in_thread(rec.recommend, user, history=history, scenario=sc.name, k=n, task="generate",
                                  **({"exclude_items": exclude} if exclude else {}))  # fmt: skip
            answer, version = res, state.version.name
        else:
            batch_key = (sc.name, n, "user" if user is not None else "history", tuple(exclude))
            payload = {"user": user} if user is not None else {"history": history}
            out = await bounded(batcher.submit(batch_key, payload))
            if isinstance(out, Exception):
                raise out
            answer, version = out
        if answer.fallback:
            metrics.fallbacks.labels(request.scope["route"].path, sc.name).inc()
        return RecommendResponse(user_id=answer.user_id, scenario=sc.name, task=answer.task,
                                 items=_ranked(sc, answer.items), fallback=answer.fallback,
                                 notes=list(answer.notes), version=version)  # fmt: skip

    # ------------------------------------------------------------------ health and metrics (no key)
    health = APIRouter()

    @health.get("/health/live")
    async def live() -> dict:
        return {"status": "ok"}

    @health.get("/health/ready")
    async def ready() -> dict:
        # The app exists only once its recommender is loaded and the feedback replayed: it is ready.
        return {
            "status": "ready",
            "version": state.version.name,
            "scenarios": list(state.recommender.scenarios),
            "feedback_store": state.store is not None,
            "replay": state.replay_note,
        }

    api = APIRouter(dependencies=[Depends(require_key)])

    @api.get("/metrics", response_class=PlainTextResponse)
    async def metrics_endpoint():
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # ------------------------------------------------------------------ recommendations
    @api.get("/recommend/{user_id}", response_model=RecommendResponse)
    async def recommend(
        request: Request,
        user_id: str,
        scenario: str | None = None,
        n: int | None = None,
        task: Annotated[str, Query(description="A list-producing task (ragrec.tasks): rank or generate.")] = "rank",
        exclude: Annotated[
            list[str] | None, Query(description="Item ids to leave out (repeat or comma-separate).")
        ] = None,
        fallback: Annotated[
            bool, Query(description="Answer an unknown user with popularity (reported), not 404.")
        ] = False,
    ):
        rec, sc = scenario_of(request, scenario)
        n = check_n(n, rec)
        check_task(task)
        exclude = [e for part in exclude or () for e in part.split(",") if e]
        check_items(sc, exclude, "exclude")
        if not fallback:
            check_user(sc, user_id, hint="; send feedback for them, post their history to /session/recommend, "
                       "or add fallback=true for popular items")  # fmt: skip
        return await ranked(request, sc, n, task, exclude, user=user_id)

    @api.post("/session/recommend", response_model=RecommendResponse)
    async def session_recommend(request: Request, body: SessionRecommendRequest):
        rec, sc = scenario_of(request, body.scenario)
        n = check_n(body.n, rec)
        check_task(body.task)
        if len(body.history) > settings.max_history:
            raise ApiError(400, f"history has {len(body.history)} items; the limit is {settings.max_history}",
                           param="history")  # fmt: skip
        check_items(sc, body.history, "history")
        check_items(sc, body.exclude, "exclude")
        return await ranked(request, sc, n, body.task, body.exclude, history=list(body.history))

    @api.get("/items/{item_id}", response_model=ItemOut)
    async def get_item(request: Request, item_id: str, scenario: str | None = None):
        _, sc = scenario_of(request, scenario)
        check_items(sc, [item_id], "item_id")
        return _item_out(sc.catalog[item_id])

    @api.get("/search", response_model=SearchResponse)
    async def search(request: Request, q: str, scenario: str | None = None, n: int = 10, user_id: str | None = None):
        """Free-text search of the catalog; with ``user_id`` fused with that user's retrieval."""
        rec, sc = scenario_of(request, scenario)
        check_text(q, "q")
        if not 1 <= n <= 100:
            raise ApiError(400, f"n must be between 1 and 100, got {n}", param="n")
        if user_id is not None:
            check_user(sc, user_id)
        hits = await in_thread(rec.search, q, user_id, scenario=sc.name, k=n)
        return SearchResponse(scenario=sc.name, query_chars=len(q), items=_ranked(sc, hits.items),
                              notes=list(hits.notes))  # fmt: skip

    # ------------------------------------------------------------------ explanations (SSE)
    @api.get("/explain/{user_id}/{item_id}")
    async def explain(request: Request, user_id: str, item_id: str, scenario: str | None = None, stream: bool = True):
        rec, sc = scenario_of(request, scenario)
        check_items(sc, [item_id], "item_id")
        check_user(sc, user_id)
        if not stream:
            ex = await in_thread(rec.explain, item_id, user_id, scenario=sc.name)
            return _explanation_out(ex)
        pieces = await in_thread(rec.explain, item_id, user_id, scenario=sc.name, stream=True)

        def events() -> Iterator[str]:
            try:
                for piece in pieces:
                    yield _sse("delta", {"text": piece})
                yield _sse("result", _explanation_out(pieces.explanation).model_dump())
            except Exception as exc:  # the stream has started: report in-band
                log.error(json.dumps({"event": "stream_error", "error": type(exc).__name__}))
                yield _sse("error", {"error": {"message": "the explanation failed", "type": "server_error"}})

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    # ------------------------------------------------------------------ feedback
    @api.post("/feedback", response_model=FeedbackResponse)
    async def feedback(request: Request, body: FeedbackIn | list[FeedbackIn]):
        rows = body if isinstance(body, list) else [body]
        if not rows:
            raise ApiError(400, "no interactions in the body", param="body")
        if len(rows) > settings.max_feedback:
            raise ApiError(400, f"{len(rows)} interactions; the limit per request is {settings.max_feedback}",
                           param="body")  # fmt: skip
        stamp = int(time.time())
        checked = []
        for j, row in enumerate(rows):
            _, sc = scenario_of(request, row.scenario)
            check_items(sc, [row.item_id], f"[{j}].item_id")
            checked.append((sc.name, row.user_id, row.item_id, row.timestamp if row.timestamp is not None else stamp,
                            row.rating))  # fmt: skip
        return await in_thread(accept_feedback, checked)

    def accept_feedback(rows: list[tuple]) -> FeedbackResponse:
        with state.feedback_lock:
            ids = state.store.add_interactions(rows) if state.store is not None else []  # durable first
            target = state.recommender
            by_user: dict[tuple[str, str], list[tuple]] = {}
            for r in rows:
                by_user.setdefault((r[0], r[1]), []).append(r)
            for (scenario, user), group in by_user.items():
                target.scenario(scenario).add_interactions(user, [g[2] for g in group], [g[3] for g in group],
                                                           [g[4] for g in group])  # fmt: skip
                metrics.feedback.labels(scenario).inc(len(group))
        notes = [] if state.store is not None else ["no feedback database: kept in memory until the service stops"]
        return FeedbackResponse(accepted=len(rows), stored=state.store is not None, ids=ids, notes=notes)

    @api.post("/items", response_model=ItemsResponse, status_code=201)
    async def add_items(request: Request, body: ItemsRequest):
        _, sc = scenario_of(request, body.scenario)
        if len(body.items) > settings.max_feedback:
            raise ApiError(400, f"{len(body.items)} items; the limit per request is {settings.max_feedback}",
                           param="items")  # fmt: skip
        ids = [it.item_id for it in body.items]
        try:
            sc.check_new_items(ids)  # before anything is stored
        except RagrecError as exc:
            raise ApiError(409, str(exc), param="items", code="item_exists") from None
        items = [Item(it.item_id, it.title, it.year, tuple(it.categories), it.brand, it.description)
                 for it in body.items]  # fmt: skip
        for j, it in enumerate(body.items):
            check_text((it.title or "") + (it.description or ""), f"items[{j}]")

        def accept() -> ItemsResponse:
            with state.feedback_lock:
                if state.store is not None:
                    state.store.add_items(sc.name, items)
                state.recommender.scenario(sc.name).add_items(items)
            where = ["text search (/search, chat, LangChain retriever)"] if sc.text is not None else []
            if sc.retriever.encoder.kind == "text":
                where.append("user recommendations (text retriever)")
            return ItemsResponse(scenario=sc.name, added=ids, stored=state.store is not None, retrievable_by=where)

        return await in_thread(accept)

    # ------------------------------------------------------------------ OpenAI-compatible chat
    @api.get("/v1/models")
    async def models() -> dict:
        created = now()
        return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "ragrec"}
                                           for name in state.recommender.scenarios]}  # fmt: skip

    @api.post("/v1/chat/completions")
    async def chat(request: Request, body: ChatRequest):
        rec = state.recommender
        if body.model not in rec.scenarios:
            raise ApiError(404, f"unknown model {body.model!r}; models (scenarios): {', '.join(rec.scenarios)}",
                           param="model", code="model_not_found")  # fmt: skip
        _, sc = scenario_of(request, body.model)
        if len(body.messages) > settings.max_messages:
            raise ApiError(400, f"{len(body.messages)} messages; the limit is {settings.max_messages}",
                           param="messages")  # fmt: skip
        talk = [(j, m.role, m.text()) for j, m in enumerate(body.messages) if m.role in ("user", "assistant")]
        for j, _, text in talk:
            check_text(text, f"messages[{j}].content")
        if not talk or talk[-1][1] != "user" or not talk[-1][2].strip():
            raise ApiError(400, "the last user/assistant message must be a non-empty user message",
                           param="messages")  # fmt: skip
        if body.user is not None:
            check_user(sc, body.user, "user", " (leave `user` out to chat without a history)")
        turns, pending = [], None
        for _, role, text in talk[:-1]:
            if role == "user":
                pending = text
            elif pending is not None:
                turns.append((pending, text))
                pending = None
        question = talk[-1][2]
        answer = await in_thread(chat_turn, rec, sc, body.user, turns, question, state.version.name)
        if answer.fallback:
            metrics.fallbacks.labels("/v1/chat/completions", sc.name).inc()
        extra = {
            "items": [r.model_dump() for r in _ranked(sc, answer.items)],
            "grounded": answer.grounding.grounded and answer.fallback is None,
            "fallback": answer.fallback,
            "notes": list(answer.notes),
            "intent": answer.intent,
            "references": list(answer.references),
        }
        cid, created = completion_id(), now()
        if not body.stream:
            return {"id": cid, "object": "chat.completion", "created": created, "model": sc.name,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                                 "finish_reason": "stop", "logprobs": None}],
                    "ragrec": extra}  # fmt: skip

        def chunks() -> Iterator[str]:
            def chunk(delta: dict, finish: str | None = None, **more) -> str:
                body_ = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": sc.name,
                         "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **more}  # fmt: skip
                return _sse(None, body_)

            yield chunk({"role": "assistant", "content": ""})
            done, rest = sc.matcher.sentences(answer.text)
            parts = [*done, rest] if rest else done
            for j, part in enumerate(parts):
                yield chunk({"content": ("" if j == 0 else " ") + part})
            yield chunk({}, "stop", ragrec=extra)
            yield _sse(None, "[DONE]")

        return StreamingResponse(chunks(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    def chat_turn(rec, sc, user: str | None, turns: list[tuple[str, str]], question: str, version: str):
        key = conversations.key(version, sc.name, user, turns)
        session = conversations.pop(key)
        if session is None:
            session = rec.chat(user, scenario=sc.name) if user is not None else rec.chat(history=[], scenario=sc.name)
            for q, a in turns:
                session.record(q, a)
        answer = session.ask(question)
        conversations.put(conversations.key(version, sc.name, user, [*turns, (question, answer.text)]), session)
        return answer

    app.include_router(health)
    app.include_router(api)
    return app


@contextlib.contextmanager
def serve_in_background(app: FastAPI, host: str = "127.0.0.1", port: int = 0, timeout_s: float = 60) -> Iterator[str]:
    """Run ``app`` on uvicorn in a thread of this process (notebooks, tests, benchmarks); yields
    its base URL (``port`` 0: a free port) and stops the server on exit."""
    import socket

    import uvicorn

    if port == 0:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True, name="ragrec-serve")
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RagrecError(f"the service did not start on {host}:{port}")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)

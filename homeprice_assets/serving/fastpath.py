"""A fast path for one BentoML API: an ASGI middleware that answers its route itself.

BentoML 1.4's API dispatch (routing, the request context, serde lookup, the IO-model round trips and the
chunked response) costs more CPU per request than pricing one home does. ``FastApi`` answers
``POST <route>`` of one API without it, with the same contract as the dispatch it skips: the body is
validated by the API's own input model (``model_validate_json``, as BentoML's JSON serde does), the answer
is the handler's pydantic model as JSON, and errors get BentoML's status codes and bodies
(``ServiceAppFactory.api_endpoint_wrapper``). Every other request passes through unchanged.

Added with ``Service.add_asgi_middleware``, it sits inside BentoML's own middlewares (request metrics,
OpenTelemetry, access log, timeout and concurrency limits), which still see every request it answers, and
outside the CORS and request-context middlewares (it steps aside when CORS is enabled).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import bentoml
from bentoml.exceptions import BentoMLException
from pydantic import BaseModel, ValidationError
from starlette.responses import JSONResponse

from homeprice_assets.serving.middleware import ASGIApp, Message, Scope, send_json

UNEXPECTED = {"error": "An unexpected error has occurred, please check the server log."}
# The switch is read when the server builds its app (never at import): "0" sends the route back through
# BentoML's dispatch, e.g. to compare both paths (homeprice_assets_tests/serving/test_fastpath.py).
ENV_SWITCH = "HOMEPRICE_FAST_PREDICT"


class FastApi:
    """Answer ``POST`` to ``service.apis[api]``'s route with ``instance.<handler>(inputs, headers)``.

    ``handler`` is a plain method of the service instance (found at the first request: the instance is
    created at server start, after the app is built) taking the API's validated input model and the
    request's raw header pairs, and returning a pydantic model.
    """

    def __init__(self, app: ASGIApp, service: Any, api: str, handler: str) -> None:
        from bentoml._internal.configuration.containers import BentoMLContainer

        self.app, self.handler_name = app, handler
        method = service.apis[api]
        self.path = "/" + "/".join(
            p.strip("/") for p in (getattr(service, "path_prefix", None) or "", method.route) if p.strip("/")
        )
        self.input_model: type[BaseModel] = method.input_spec
        self.server = f"BentoML Service/{service.name}".encode()
        self.enabled = os.environ.get(ENV_SWITCH, "1") != "0" and not BentoMLContainer.http.cors.enabled.get()
        self.id_format = BentoMLContainer.logging_formatting.get()
        self.send_trace_id = bool(BentoMLContainer.http.response.trace_id.get())
        self._instance: object | None = None
        self._handler: Callable[[BaseModel, list[tuple[bytes, bytes]]], BaseModel] | None = None

    def handler(self) -> Callable[[BaseModel, list[tuple[bytes, bytes]]], BaseModel] | None:
        """The live instance's handler, or None before the instance exists (BentoML then answers)."""
        try:
            instance = bentoml.get_current_service()
        except BentoMLException:
            return None
        if instance is not self._instance:
            self._instance, self._handler = instance, getattr(instance, self.handler_name)
        return self._handler

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if not (
            self.enabled
            and scope["type"] == "http"
            and scope["path"] == self.path
            and scope.get("method") == "POST"
        ):
            await self.app(scope, receive, send)
            return
        handler = self.handler()
        if handler is None:
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left: nobody to answer
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        headers = list(scope.get("headers") or [])
        try:
            inputs = self.input_model.model_validate_json(b"".join(chunks) or b"{}")
            body = handler(inputs, headers).model_dump_json().encode()
        except Exception as exc:  # every error gets the answer BentoML gives it
            await self.error(exc, scope, receive, send)
            return
        await send_json(send, 200, body, self.trace_headers())

    def trace_headers(self) -> list[tuple[bytes, bytes]]:
        """What BentoML adds to an API's answer: its server name and, if tracing made them, the ids."""
        from bentoml._internal.context import trace_context

        out = [(b"server", self.server)]
        if trace_context.request_id is not None:
            request_id = format(trace_context.request_id, self.id_format["span_id"])
            out.append((b"x-bentoml-request-id", request_id.encode()))
        if self.send_trace_id and trace_context.trace_id is not None:
            trace_id = format(trace_context.trace_id, self.id_format["trace_id"])
            out.append((b"x-bentoml-trace-id", trace_id.encode()))
        return out

    async def error(self, exc: Exception, scope: Scope, receive: Callable, send: Callable) -> None:
        """The status and body BentoML's ``api_endpoint_wrapper`` gives ``exc``, logged the same way."""
        from bentoml._internal.server.http_app import log_exception
        from starlette.requests import Request

        log_exception(Request(scope), exc_info=(type(exc), exc, exc.__traceback__))
        data: Any
        if isinstance(exc, ValidationError):
            status = 400
            data = {
                "error": f"{exc.error_count()} validation error for {exc.title}",
                "detail": exc.errors(include_context=False, include_input=False),
            }
        elif isinstance(exc, BentoMLException):
            status = exc.error_code.value
            if status in (401, 403):
                data = {"error": "Authorization error"}
            elif status >= 500:
                data = UNEXPECTED
            else:
                data = ({"error": str(exc)},)  # sic: BentoML 1.4 answers a one-element list here
        else:
            status, data = 500, UNEXPECTED
        response = JSONResponse(data, status_code=status)
        response.raw_headers.extend(self.trace_headers())
        await response(scope, receive, send)

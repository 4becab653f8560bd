"""Route class and documented error responses shared by every router."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from enum import Enum
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute

from xcoin_trading.api.errors import MAX_MEMBERS, TOO_MANY_MEMBERS, error_response
from xcoin_trading.api.schemas.base import ErrorBody


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _loads(body: bytes) -> Any:
    members = 0

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal members
        members += len(items)
        if members > MAX_MEMBERS:  # stop parsing now: validating 100k unknown keys costs seconds
            raise ValueError(TOO_MANY_MEMBERS)
        return dict(items)

    return json.loads(body, parse_float=Decimal, parse_constant=_no_constants, object_pairs_hook=pairs)


class DecimalJSONRequest(Request):
    """JSON numbers parse to Decimal (money stays exact), NaN/Infinity are refused as invalid JSON, and
    so is a body with more than MAX_MEMBERS object members (the body size is limited before, in
    `middleware.BodyLimit`)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = _loads(body)
            except json.JSONDecodeError:
                raise
            except (ValueError, RecursionError) as exc:
                raise json.JSONDecodeError(str(exc), body.decode(errors="replace"), 0) from None
        return self._json


def _query_names(dependant: Any) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


class DecimalRoute(APIRoute):
    """Exact-decimal JSON bodies, and unknown query parameters refused: a typo such as
    `?stauts=FILLED` must not silently return unfiltered results."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()
        known = _query_names(self.dependant)

        async def route(request: Request) -> Response:
            unknown = sorted(set(request.query_params) - known)
            if unknown:
                return error_response(422, f"{unknown[0]!r} is not a known query parameter of this route")
            return await handler(DecimalJSONRequest(request.scope, request.receive))

        return route


def ERROR(description: str) -> dict[str, Any]:  # noqa: N802 - reads like a constant in route tables
    return {"model": ErrorBody, "description": description}


Responses = dict[int | str, dict[str, Any]]
COMMON: Responses = {
    422: ERROR("invalid request: names the field and the reason"),
    500: ERROR("unexpected error"),
}
AUTHED: Responses = {401: ERROR("missing, invalid or expired token"), **COMMON}
NOT_FOUND: Responses = {404: ERROR("no such object for this user (other users' objects are never revealed)")}
CONFLICT: Responses = {409: ERROR("clashes with the current state")}
FORBIDDEN: Responses = {403: ERROR("a public object of another user: visible, not changeable")}
NOT_YET: Responses = {501: ERROR("capability not available yet")}
UPSTREAM: Responses = {502: ERROR("the exchange or identity provider failed or could not be reached")}


def router(tags: list[str | Enum], *, authed: bool = True, prefix: str = "") -> APIRouter:
    return APIRouter(
        prefix=prefix, tags=tags, route_class=DecimalRoute, responses=AUTHED if authed else COMMON
    )

"""What the web front ends accept, decided in one place for the standalone app and for our routes in the webui.

- Only the app's own page and header-less clients (curl, scripts) may call it: a request that carries another
  site's `Origin` is refused, and so is a request that changes something whose `Referer` (or the browser's
  `Sec-Fetch-Site`) says another site sent it. A page on another site open in the same browser can neither read
  nor change anything.
- The `Host` header must be a name the app was bound to, which stops DNS rebinding.
- Our API takes small JSON objects: a body over `MAX_BODY_BYTES` is refused while it is read (413); a body with
  unknown fields, or that is not an object, is a 400 that names the field.
- Login: gradio's session cookie (the tab) or HTTP Basic with the same user and password (scripts).
- gradio's `/file=` route never serves the projects home.

Imports starlette/fastapi only (no gradio), so the same checks run in both gradio versions.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hmac
import ipaddress
import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

import pydantic
from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import AlreadyExists, InvalidName, LorakitError, NotFound, PathNotAllowed

log = logging.getLogger(__name__)

API_PREFIX = "/train-style/v1"
MAX_BODY_BYTES = 1 << 20  # our bodies are settings and path lists; images travel through gradio's upload
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
EVERY_ADDRESS = frozenset({"", "0.0.0.0", "::"})
AUTH_ENV = "TRAIN_STYLE_AUTH"
LOGIN_NEEDED = ("Log in first: open the app's page and sign in, or send the same user name and password with "
                "HTTP Basic (curl -u USER:PASS).")


# --- the policy -------------------------------------------------------------------------------------------------
def is_loopback(address: str) -> bool:
    name = address.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _split_host(value: str) -> tuple[str, Optional[int]]:
    """("name", port) of a Host header or URL netloc; raises ValueError when it is not one."""
    parts = urlsplit("//" + value)
    name = (parts.hostname or "").rstrip(".")
    if not name:
        raise ValueError(value)
    return name, parts.port


@dataclass(frozen=True)
class WebPolicy:
    """Which requests reach the app. `hosts` None: any Host (bound to every address, where login is required)."""

    hosts: Optional[frozenset[str]] = None
    origins: frozenset[str] = frozenset()  # other origins let in on purpose (the webui's --cors-allow-origins)

    @classmethod
    def for_bind(cls, address: str, *, allowed_hosts: Iterable[str] = (), origins: Iterable[str] = ()) -> WebPolicy:
        """The names a server bound to `address` answers to: loopback names, the address itself, `allowed_hosts`."""
        extra = {h.strip().strip("[]").lower().rstrip(".") for h in allowed_hosts if h.strip()}
        addr = address.strip().strip("[]").lower()
        everywhere = addr in EVERY_ADDRESS
        if everywhere and not extra:
            hosts = None
        else:
            local = LOOPBACK_NAMES if everywhere or is_loopback(addr) else frozenset()
            hosts = frozenset(local | extra | ({addr} if not everywhere else set()))
        return cls(hosts=hosts, origins=frozenset(o.strip().rstrip("/").lower() for o in origins if o.strip()))

    def refusal(self, *, method: str, headers: Mapping[str, str], api: bool = True) -> Optional[str]:
        """Why this request is refused, or None. `method` is "WEBSOCKET" for an upgrade; `api`: one of our routes."""
        host = headers.get("host", "")
        if self.hosts is not None:
            try:
                name = _split_host(host)[0].lower()
            except ValueError:
                name = ""
            if name not in self.hosts:
                return (f"This app does not answer to the name {host[:200]!r} (a page can point such a name at your "
                        f"computer). Open it by the address it was started with, or start it with --allowed-host "
                        f"NAME.")
        origin = headers.get("origin")
        if origin is not None:
            if self._own(origin, host):
                return None
            return (f"Refused a request from {origin[:200]}: only this app's own page and scripts without an Origin "
                    f"header may call it.")
        changes = method not in SAFE_METHODS
        referer = headers.get("referer")
        if changes and referer and not self._own(referer, host):
            return f"Refused a request sent by a page of another site ({referer[:200]})."
        cross = headers.get("sec-fetch-site") in ("cross-site", "same-site")
        if cross and (changes or api) and headers.get("sec-fetch-mode") != "navigate":
            return "Refused a request sent by a page of another site."
        return None

    def _own(self, url: str, host: str) -> bool:
        """True when `url` (an Origin or Referer) is this app's own origin as the browser reached it (`host`)."""
        url = url.strip()
        if url.rstrip("/").lower() in self.origins:
            return True
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False  # "null", file:, extensions
        try:
            name, port = _split_host(parts.netloc)
            own_name, own_port = _split_host(host)
        except ValueError:
            return False
        if name.lower() != own_name.lower():
            return False
        port = port or (443 if parts.scheme == "https" else 80)
        if own_port is None:  # a proxy in front: the browser used a default port of either scheme
            return port in (80, 443)
        return port == own_port


def file_refusal(path: str, blocked: Sequence[Path]) -> Optional[str]:
    """For gradio's `/file=PATH` and `/file/PATH`: a refusal when PATH resolves into a `blocked` folder."""
    for prefix in ("/file=", "/file/"):
        if path.startswith(prefix):
            requested = path[len(prefix):]
            break
    else:
        return None
    if "://" in requested or requested.startswith("//"):
        return None  # gradio answers a URL with a redirect, serving nothing
    try:
        real = os.path.realpath(os.path.join(os.getcwd(), requested))
    except (OSError, ValueError):
        return "File not allowed."
    for root in blocked:
        top = os.path.realpath(root)
        if real == top or real.startswith(top.rstrip(os.sep) + os.sep):
            return "Files of Train Style projects are not served by this route."
    return None


def exposure_refusal(address: str, credentials: Sequence[tuple[str, str]]) -> Optional[str]:
    """A reason not to start: listening beyond this machine without a login."""
    if is_loopback(address) or credentials:
        return None
    where = "every network interface" if address.strip("[]") in EVERY_ADDRESS else address
    return (f"Refusing to listen on {where} without a login: anyone on the network could create, import and "
            f"train. Start with --auth USER:PASS (or --auth-file FILE, or {AUTH_ENV}=USER:PASS), or leave --host "
            f"at 127.0.0.1.")


def blocked_file_paths(home: Path) -> list[str]:
    """The projects home as gradio's `blocked_paths` want it: every spelling (as given and with links resolved)."""
    given = os.path.abspath(home)
    return list(dict.fromkeys([given, os.path.realpath(given)]))


# --- the standalone app: one ASGI middleware in front of gradio -------------------------------------------------
class WebGuard:
    """ASGI middleware of the standalone app: the policy for every route, gradio's and ours; no CORS headers."""

    def __init__(self, app: ASGIApp, policy: WebPolicy, blocked: Sequence[Path] = ()):
        self.app = app
        self.policy = policy
        self.blocked = tuple(blocked)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        websocket = scope["type"] == "websocket"
        refusal = self.policy.refusal(method="WEBSOCKET" if websocket else scope["method"],
                                      headers=Headers(scope=scope), api=scope["path"].startswith(API_PREFIX))
        refusal = refusal or file_refusal(scope["path"], self.blocked)
        if refusal is None:
            await self.app(scope, receive, send)
        elif websocket:
            await send({"type": "websocket.close", "code": 1008})  # before accept: the server answers 403
        else:
            await _refuse(403, refusal)(scope, receive, send)


def install_guard(app: Any, policy: WebPolicy, blocked: Sequence[Path] = ()) -> None:
    """Put `WebGuard` outermost and drop gradio's CORS middleware (3.41: allow *; 4.x: any origin for a LAN name).

    Rebuilding the stack on a started app is what the webui itself does in `setup_middleware`.
    """
    from starlette.middleware import Middleware

    kept = [m for m in app.user_middleware if "CORSMiddleware" not in m.cls.__name__ and m.cls is not WebGuard]
    app.user_middleware = [Middleware(WebGuard, policy=policy, blocked=tuple(blocked)), *kept]
    app.middleware_stack = app.build_middleware_stack()


# --- our routes (standalone and webui): the policy, a capped body, errors as statuses -----------------------------
class SafeJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped, so text holding lone surrogates (undecodable file names) still serialises."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def _refuse(status: int, message: str, **headers: str) -> JSONResponse:
    return SafeJSONResponse({"detail": message}, status_code=status, headers=headers or None)


async def _read_capped(request: Request, limit: int) -> Optional[bytes]:
    """The body, or None as soon as it passes `limit` bytes (Content-Length is checked before reading)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # starlette's cache: fastapi parses from it instead of reading the stream again
    return body


def validation_message(errors: Sequence[Mapping[str, Any]]) -> str:
    """'Bad request: foo: extra fields not permitted' from fastapi's validation errors (either pydantic)."""
    parts = []
    for err in list(errors)[:5]:
        if "json" in str(err.get("type", "")):  # fastapi 0.94: value_error.jsondecode; 0.112: json_invalid
            return f"The body is not valid JSON ({err.get('msg', '')}); send a JSON object."
        loc = [str(p) for p in err.get("loc", ())]
        if loc and loc[0] == "body":
            loc = loc[1:]
        field = ".".join(loc) or "body"
        parts.append(f"{field}: {err.get('msg', 'invalid')}")
    return "Bad request: " + "; ".join(parts) + "."


# The one map from an error a route raised to the HTTP status it answers, first match wins (children before their
# parents). The exception family says what went wrong; ValueError/TypeError (UnicodeError is a ValueError) come from
# parsing the request's input. Anything else is a fault of ours: it stays a 500 and is logged by the server.
ERROR_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (PathNotAllowed, 403),
    (NotFound, 404),
    (AlreadyExists, 409),
    (InvalidName, 400),
    (LorakitError, 400),
    (ValueError, 400),
    (TypeError, 400),
)
NAME_TOO_LONG = "A name in the request is too long."


def status_of(e: Exception) -> Optional[int]:
    """The HTTP status of an error raised while handling a request (ERROR_STATUS); None: not the input's fault."""
    if isinstance(e, OSError) and not isinstance(e, LorakitError) and e.errno == errno.ENAMETOOLONG:
        return 400  # a name from the URL longer than the file system takes is bad input, not a failure
    return next((status for kind, status in ERROR_STATUS if isinstance(e, kind)), None)


def error_response(e: Exception) -> Optional[JSONResponse]:
    """The answer to an error a route raised, `{"detail": its text}` with its status; None when it is no 4xx."""
    status = status_of(e)
    if status is None:
        return None
    if isinstance(e, LorakitError):
        detail = str(e) or type(e).__name__
    elif isinstance(e, OSError):
        detail = NAME_TOO_LONG  # the file system's message would show a server path
    else:
        log.warning("Train Style: a request was refused by an unexpected %s", type(e).__name__, exc_info=True)
        detail = str(e) or type(e).__name__
    return _refuse(status, detail)


def guarded_route_class(policy: WebPolicy, *, max_body: int = MAX_BODY_BYTES) -> type[APIRoute]:
    """The one route helper of our API: an APIRoute that checks `policy`, caps the body, turns validation errors into
    readable 400s and every error of the family (ERROR_STATUS) into its status with the text the tab and the CLI show.

    It runs before fastapi reads the body or solves dependencies, and only for the routes of the router that uses
    it, so inside the webui nothing of the webui's own changes. A route just raises; it needs no wrapper.
    """

    class GuardedRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
            handler = super().get_route_handler()

            async def guarded(request: Request) -> Response:
                refusal = policy.refusal(method=request.method, headers=request.headers)
                if refusal:
                    return _refuse(403, refusal)
                body = await _read_capped(request, max_body)
                if body is None:
                    return _refuse(413, f"The request body is larger than {max_body // 1024} KiB; send less at "
                                        f"once (import a parent folder instead of listing every file).",
                                   connection="close")
                try:
                    return await handler(request)
                except RequestValidationError as e:  # before ValueError: pydantic 1's errors are ValueErrors
                    return _refuse(400, validation_message(e.errors()))
                except HTTPException:
                    raise  # the route chose its status itself
                except Exception as e:
                    answer = error_response(e)
                    if answer is None:
                        raise
                    return answer

            return guarded

    GuardedRoute.policy = policy  # a route that needs another body cap makes its own class with it
    return GuardedRoute


# --- bodies --------------------------------------------------------------------------------------------------------
if pydantic.VERSION.startswith("1."):
    class StrictBody(pydantic.BaseModel):
        """A request body that refuses fields it does not declare (a typo must not be silently ignored)."""

        class Config:
            extra = "forbid"

        @classmethod
        def validate(cls, value: Any) -> Any:
            if not isinstance(value, (dict, cls)):  # pydantic 1 would turn [["name", "x"]] or [] into a dict
                raise TypeError(f"expected a JSON object, got {type(value).__name__}")
            return super().validate(value)
else:
    class StrictBody(pydantic.BaseModel):  # type: ignore[no-redef]
        """A request body that refuses fields it does not declare (a typo must not be silently ignored)."""

        model_config = pydantic.ConfigDict(extra="forbid")


# --- login -------------------------------------------------------------------------------------------------------
Credentials = list[tuple[str, str]]


def parse_credentials(text: str, *, source: str) -> Credentials:
    """`USER:PASS` lines (blank lines and `#` comments skipped) as [(user, password)]."""
    found = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        missing = "the colon" if not sep else "the user name" if not user.strip() else "the password"
        if not sep or not user.strip() or not password:  # the value itself is not shown: it may hold a password
            raise LorakitError(f"{source}: expected USER:PASS (a user name, a colon, a password); {missing} is "
                               f"missing.")
        found.append((user.strip(), password))
    if not found:
        raise LorakitError(f"{source}: no USER:PASS found.")
    return found


def gather_credentials(*, auth: Sequence[str] = (), auth_file: Optional[Path] = None,
                       env: Mapping[str, str] = os.environ) -> Credentials:
    """Credentials from `--auth` values, an `--auth-file` and the TRAIN_STYLE_AUTH variable, in that order."""
    creds: Credentials = []
    for value in auth:
        creds += parse_credentials(value, source="--auth")
    if auth_file is not None:
        try:
            text = Path(auth_file).read_text(encoding="utf-8")
        except (OSError, UnicodeError) as e:
            raise LorakitError(f"--auth-file {auth_file}: cannot read it ({e.__class__.__name__}).") from e
        creds += parse_credentials(text, source=f"--auth-file {auth_file}")
    if env.get(AUTH_ENV):
        creds += parse_credentials(env[AUTH_ENV], source=AUTH_ENV)
    return creds


def _basic(header: str) -> Optional[tuple[str, str]]:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeError):
        return None
    return (user, password) if sep else None


def _password_ok(auth: Any, user: str, password: str) -> bool:
    if callable(auth):
        return bool(auth(user, password))
    expected = auth.get(user) if isinstance(auth, Mapping) else None
    return expected is not None and hmac.compare_digest(str(expected).encode(), password.encode())


def login_check(app: Any) -> Callable[[Request], None]:
    """A dependency: when gradio's login is on (`app.auth`), a valid session cookie or HTTP Basic is required.

    Reads gradio's own state per request: cookies `access-token[-unsecure]` (3.x) and `…-<cookie_id>` (4.x).
    """

    def authorize(request: Request) -> None:
        auth = getattr(app, "auth", None)
        if not auth:
            return
        tokens = getattr(app, "tokens", None) or {}
        names = ["access-token", "access-token-unsecure"]
        if getattr(app, "cookie_id", None):
            names = [f"{n}-{app.cookie_id}" for n in names] + names
        if any(request.cookies.get(n) in tokens for n in names if request.cookies.get(n)):
            return
        basic = _basic(request.headers.get("authorization", ""))
        if basic and _password_ok(auth, *basic):
            return
        raise HTTPException(status_code=401, detail=LOGIN_NEEDED,
                            headers={"WWW-Authenticate": 'Basic realm="Train Style"'})

    return authorize

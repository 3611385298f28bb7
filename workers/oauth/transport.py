"""The HTTP session every outbound request goes through: checked addresses, pinned connections.

:class:`GuardedAdapter` resolves the URL's host once through the
:class:`~workers.oauth.addresses.AddressPolicy`, refuses a forbidden or unresolvable
host before anything is sent, and connects to exactly the address it checked.
Nothing resolves the name again between the check and the connect, so a DNS
answer that changes in between (rebinding) cannot steer the request elsewhere.
TLS is still verified against the name in the URL: it is sent as SNI and the
certificate must match it.

Every request also has a hard wall-clock deadline: connect timeout + read
timeout, counted from the start of the request and covering DNS resolution,
connect, TLS, headers and the body. requests' read timeout only bounds each
socket read, so a server dripping a byte now and then could otherwise hold a
worker for as long as it liked. The lookup runs in a thread given only the
time left; a watchdog timer shuts the request's socket down when the deadline
passes (which ends a blocked read at once); bodies are read through
:func:`iter_body`, which raises :class:`DeadlinePassed` once it has passed,
so a body cut short there is never taken for a whole one.
"""

from __future__ import annotations

import contextlib
import contextvars
import email.utils
import functools
import heapq
import itertools
import os
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.utils import prepend_scheme_if_needed, select_proxy
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import LocationValueError

from workers.oauth.addresses import AddressPolicy, AddressRefused, ResolutionTimeout

# HTTP statuses that say "later" rather than "no" (RFC 9110 §15.5.9, RFC 8470, RFC 6585 §4).
TRANSIENT_STATUSES = frozenset({408, 425, 429})


def retry_after_seconds(headers: Mapping[str, str], now: float) -> float | None:
    """``Retry-After`` as seconds from now, from either of its RFC 9110 forms."""
    raw = (headers.get("Retry-After") or "").strip()
    if not raw:
        return None
    if raw.isascii() and raw.isdigit():  # "²".isdigit() is true, and float("²") fails
        return float(raw)
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


class ForbiddenAddressError(requests.exceptions.InvalidURL):
    """The policy refused the request's host; nothing was sent."""


class DeadlinePassed(requests.exceptions.Timeout):
    """The request's wall-clock deadline (connect + read timeouts) passed; its connection was shut down."""


class Deadline:
    """A request's wall-clock budget, and the watchdog that shuts its sockets down when the budget is spent."""

    def __init__(self, budget: float) -> None:
        self.budget = budget
        self.at = time.monotonic() + budget
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._fired = False
        self._ended = False
        _watchdog.add(self)

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def passed(self) -> bool:
        return self._fired or self.remaining() <= 0

    def check(self) -> None:
        """Raise DeadlinePassed once the deadline has passed."""
        if self.passed():
            raise DeadlinePassed(self.describe())

    def describe(self) -> str:
        return f"the {self.budget:g}s deadline (connect + read timeouts) passed"

    def watch(self, sock: socket.socket | None) -> None:
        """Shut ``sock`` down when the deadline passes (at once if it already has)."""
        if sock is None:
            return
        with self._lock:
            if self._ended:
                return
            self._sockets.append(sock)
            if not self._fired:
                return
        _shut(sock)

    def end(self) -> bool:
        """Stop watching (the connection goes back to the pool or away); True if the watchdog had fired."""
        with self._lock:
            # Under the lock: once this returns, the timer can no longer shut a socket another request may reuse.
            self._ended = True
            self._sockets.clear()
            return self._fired

    def _fire(self) -> None:
        with self._lock:
            if self._ended:
                return
            self._fired = True
            for sock in self._sockets:
                _shut(sock)


class _Watchdog:
    """One thread per process that fires deadlines in the order they fall due.

    Cheaper than a timer thread per request (a thread start costs about as much as a
    loopback request); a deadline that ended early stays queued until its time, inert.
    """

    def __init__(self) -> None:
        self._reset()
        # A forked child (Celery prefork) has no watchdog thread and may inherit a held lock.
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._due = threading.Condition()
        self._queue: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, deadline: Deadline) -> None:
        with self._due:
            heapq.heappush(self._queue, (deadline.at, next(self._order), deadline))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="tokenkeeper-deadlines", daemon=True)
                self._thread.start()
            elif self._queue[0][2] is deadline:
                self._due.notify()  # due before whatever the thread is waiting for

    def _run(self) -> None:
        while True:
            with self._due:
                while True:
                    wait = self._queue[0][0] - time.monotonic() if self._queue else None
                    if wait is not None and wait <= 0:
                        deadline = heapq.heappop(self._queue)[2]
                        break
                    self._due.wait(wait)
            deadline._fire()


_watchdog = _Watchdog()


def _shut(sock: socket.socket) -> None:
    # OSError: already closed, or detached into the TLS socket that is watched too.
    with contextlib.suppress(OSError):
        # Unlike close(), shutdown() wakes a thread blocked in recv on this socket.
        sock.shutdown(socket.SHUT_RDWR)


def deadline_budget(timeout: Any) -> float:
    """The whole-request budget for a requests ``timeout``: connect + read timeout."""
    if isinstance(timeout, urllib3.Timeout):
        if isinstance(timeout.total, (int, float)):
            return float(timeout.total)
        timeout = (timeout.connect_timeout, timeout.read_timeout)
    if isinstance(timeout, tuple):
        connect, read = timeout
    else:
        connect = read = timeout
    if not isinstance(connect, (int, float)) or not isinstance(read, (int, float)):
        raise ValueError("every request through a guarded session needs connect and read timeouts")
    return float(connect) + float(read)


# The deadline of the request being sent on this thread (between the adapter and the pool).
_current: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("tokenkeeper_deadline", default=None)
# The client certificate (tls_client_auth) the request being sent presents, set by post_form.
_client_tls: contextvars.ContextVar[ssl.SSLContext | None] = contextvars.ContextVar(
    "tokenkeeper_client_tls", default=None
)


class _WatchedConnection(HTTPConnection):
    deadline: Deadline | None = None

    def _new_conn(self) -> socket.socket:
        if self.deadline is not None:
            # Connect and TLS handshake get no more than the time left.
            self.timeout = max(0.001, min(self.timeout or self.deadline.budget, self.deadline.remaining()))
        sock = super()._new_conn()
        if self.deadline is not None:
            self.deadline.watch(sock)
        return sock

    def connect(self) -> None:
        super().connect()
        if self.deadline is not None:
            self.deadline.watch(self.sock)  # the TLS socket, if TLS wrapped the one watched above


class _WatchedHTTPSConnection(_WatchedConnection, HTTPSConnection):
    pass


class _WatchedPool(HTTPConnectionPool):
    ConnectionCls = _WatchedConnection

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn: Any = super()._get_conn(timeout)  # one of ours: a _WatchedConnection
        deadline = _current.get()
        conn.deadline = deadline
        if deadline is not None:
            deadline.watch(conn.sock)  # a kept-alive connection already has its socket
        return conn

    def _put_conn(self, conn: Any) -> None:
        deadline = getattr(conn, "deadline", None)
        if deadline is not None:
            conn.deadline = None
            if deadline.end():
                conn.close()  # shut down by the watchdog: not to be reused
        super()._put_conn(conn)


class _WatchedHTTPSPool(_WatchedPool, HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS = {"http": _WatchedPool, "https": _WatchedHTTPSPool}


@contextlib.contextmanager
def _sending(request: requests.PreparedRequest, timeout: Any) -> Iterator[Deadline]:
    """The deadline of one request, current on this thread while it is sent; ended if sending fails
    (a failure after the deadline passed is reported as :class:`DeadlinePassed`)."""
    deadline = Deadline(deadline_budget(timeout))
    token = _current.set(deadline)
    try:
        yield deadline
    except DeadlinePassed:
        deadline.end()
        raise
    except requests.RequestException:
        deadline.end()
        if deadline.passed():
            raise DeadlinePassed(deadline.describe(), request=request) from None
        raise
    except BaseException:
        deadline.end()
        raise
    finally:
        _current.reset(token)


class GuardedAdapter(HTTPAdapter):
    def __init__(self, policy: AddressPolicy, **kwargs: Any) -> None:
        self.policy = policy
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        # An HTTP(S) proxy uses urllib3's own pools, which can be watched; a SOCKS proxy brings its own.
        if manager.pool_classes_by_scheme is urllib3.poolmanager.pool_classes_by_scheme:
            manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        with _sending(request, timeout) as deadline:
            response = super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies)
        response.deadline = deadline  # type: ignore[attr-defined]  # read by iter_body
        return response

    def send_form(self, request: requests.PreparedRequest, timeout: tuple[float, float], verify: Any) -> FormAnswer:
        """:meth:`send` for a token request that no proxy carries: the same checks, pool and deadline,
        without what requests adds around them (its Response, cookie extraction, a second proxy
        lookup): about a seventh of a loopback token request's CPU."""
        with _sending(request, timeout) as deadline:
            try:
                pool = self.get_connection_with_tls_context(request, verify)
            except LocationValueError as exc:
                raise requests.exceptions.InvalidURL(exc, request=request) from None
            self.cert_verify(pool, request.url, verify, None)  # type: ignore[no-untyped-call]  # unannotated in requests
            try:
                raw = pool.urlopen(
                    method="POST",
                    url=request.path_url,
                    body=request.body,
                    headers=request.headers,
                    redirect=False,
                    assert_same_host=False,
                    preload_content=False,
                    decode_content=False,
                    retries=self.max_retries,
                    timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]),
                    chunked=False,
                )
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise _as_requests_error(exc, request) from exc
        return FormAnswer(raw, deadline)

    def get_connection_with_tls_context(
        self,
        request: requests.PreparedRequest,
        verify: Any,
        proxies: Any = None,
        cert: Any = None,
    ) -> Any:  # a urllib3 connection pool (requests' own annotation says ConnectionPool)
        parts = urlsplit(request.url or "")
        host = parts.hostname or ""
        deadline = _current.get()
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            address = self.policy.resolve_checked(
                host, port, timeout=deadline.remaining() if deadline is not None else None
            )
        except (AddressRefused, ValueError) as exc:
            raise ForbiddenAddressError(str(exc), request=request) from None
        except ResolutionTimeout:
            raise DeadlinePassed(
                deadline.describe() if deadline else "DNS resolution timed out", request=request
            ) from None
        client_tls = _client_tls.get()
        if client_tls is not None and parts.scheme != "https":
            raise requests.exceptions.InvalidSchema("a client certificate goes only over https")
        proxy = select_proxy(request.url or "", proxies) if proxies else None
        if proxy and client_tls is None:
            # The proxy resolves and connects; the check above is all that can be done here.
            return super().get_connection_with_tls_context(request, verify, proxies=proxies, cert=cert)
        # A CA bundle path: requests would stat it on every request to tell a file from a folder.
        bundle = verify if isinstance(verify, str) else None
        host_params, typed_kwargs = self.build_connection_pool_key_attributes(request, True if bundle else verify, cert)
        # urllib3 takes server_hostname as a pool argument; requests' TypedDict does not list it.
        pool_kwargs: dict[str, Any] = dict(typed_kwargs)
        if bundle:
            pool_kwargs[_ca_argument(bundle)] = bundle
        if client_tls is not None:
            # Part of the pool's key: a connection that presented one certificate carries no other's request.
            pool_kwargs["ssl_context"] = client_tls
        if proxy:
            manager = self.proxy_manager_for(prepend_scheme_if_needed(proxy, "http"))  # type: ignore[no-untyped-call]  # unannotated in requests
            return manager.connection_from_host(**host_params, pool_kwargs=pool_kwargs)
        host_params["host"] = str(address)
        if host_params["scheme"] == "https":
            # SNI and the certificate check use the name; the socket goes to the checked address.
            pool_kwargs["server_hostname"] = host
        request.headers["Host"] = parts.netloc.rpartition("@")[2]
        return self.poolmanager.connection_from_host(**host_params, pool_kwargs=pool_kwargs)


@functools.lru_cache(maxsize=8)
def _ca_argument(bundle: str) -> str:
    """urllib3's argument for a CA bundle path: a folder of certificates or one file (looked at once)."""
    return "ca_cert_dir" if os.path.isdir(bundle) else "ca_certs"


def _as_requests_error(exc: Exception, request: requests.PreparedRequest) -> Exception:
    """The requests exception :meth:`HTTPAdapter.send` raises for a urllib3 or socket error (requests 2.32):
    callers classify failures by these types. One difference: a urllib3 error requests would let through
    as it is becomes a ``RequestException`` (a transient "request_failed"), not an unexpected failure."""
    errors = urllib3.exceptions
    if isinstance(exc, errors.MaxRetryError):
        reason = exc.reason
        if isinstance(reason, errors.ConnectTimeoutError) and not isinstance(reason, errors.NewConnectionError):
            return requests.exceptions.ConnectTimeout(exc, request=request)
        if isinstance(reason, errors.ResponseError):
            return requests.exceptions.RetryError(exc, request=request)
        if isinstance(reason, errors.ProxyError):
            return requests.exceptions.ProxyError(exc, request=request)
        if isinstance(reason, errors.SSLError):
            return requests.exceptions.SSLError(exc, request=request)
        return requests.exceptions.ConnectionError(exc, request=request)
    if isinstance(exc, (errors.ProtocolError, OSError, errors.ClosedPoolError)):
        return requests.exceptions.ConnectionError(exc, request=request)
    if isinstance(exc, errors.ProxyError):
        return requests.exceptions.ProxyError(exc, request=request)
    if isinstance(exc, errors.SSLError):
        return requests.exceptions.SSLError(exc, request=request)
    if isinstance(exc, errors.ReadTimeoutError):
        return requests.exceptions.ReadTimeout(exc, request=request)
    if isinstance(exc, errors.InvalidHeader):
        return requests.exceptions.InvalidHeader(exc, request=request)
    # requests lets these through as they are; named here so that no caller meets a urllib3 type.
    return requests.exceptions.RequestException(exc, request=request)


class FormAnswer:
    """A streamed answer from :meth:`GuardedAdapter.send_form`: what a token request reads of a response.

    Read errors become the requests exceptions ``Response.iter_content`` raises, and closing it
    does what closing a ``Response`` does: a body not read to its end drops the connection.
    """

    def __init__(self, raw: urllib3.BaseHTTPResponse, deadline: Deadline) -> None:
        self.raw = raw
        self.status_code = raw.status
        self.headers: Mapping[str, str] = raw.headers  # case-insensitive, repeated fields joined like requests'
        self.deadline = deadline
        self._consumed = False

    def iter_content(self, chunk_size: int = 65536) -> Iterator[bytes]:
        errors = urllib3.exceptions
        try:
            yield from self.raw.stream(chunk_size, decode_content=True)
        except errors.ProtocolError as exc:
            raise requests.exceptions.ChunkedEncodingError(exc) from exc
        except errors.DecodeError as exc:
            raise requests.exceptions.ContentDecodingError(exc) from exc
        except errors.ReadTimeoutError as exc:
            raise requests.exceptions.ConnectionError(exc) from exc
        except errors.SSLError as exc:
            raise requests.exceptions.SSLError(exc) from exc
        self._consumed = True

    def close(self) -> None:
        if not self._consumed:
            self.raw.close()
        self.raw.release_conn()

    def __enter__(self) -> FormAnswer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Streamed(Protocol):
    """A response whose body :func:`iter_body` reads: a requests ``Response`` or a :class:`FormAnswer`."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    def iter_content(self, chunk_size: int = ...) -> Iterator[bytes]: ...


def iter_body(response: Streamed, chunk_size: int = 65536) -> Iterator[bytes]:
    """The body of a streamed response, raising DeadlinePassed when its request's deadline passes.

    The watchdog ends a dripping body by shutting the socket down, which can look like
    a clean end of body; the check after the last chunk keeps that from passing as one.
    """
    deadline: Deadline | None = getattr(response, "deadline", None)
    try:
        for chunk in response.iter_content(chunk_size=chunk_size):
            if deadline is not None:
                deadline.check()
            yield chunk
    except requests.RequestException:
        if deadline is not None:
            deadline.check()
        raise
    if deadline is not None:
        deadline.check()


# Kept-alive connections: a pool per token endpoint (host and pinned address), up to HOST_POOLS of them
# (requests keeps 10: a fleet on a few dozen providers would reconnect, TLS and all, on most refreshes),
# each keeping up to HOST_POOL_SIZE idle connections (more are opened when a batch overlaps more requests,
# and closed after). At most 800 idle sockets a process, well inside the usual limit of 1,024 files.
HOST_POOLS = 100
HOST_POOL_SIZE = 8

# Sent with every token request: some providers' firewalls refuse a request that names no client.
USER_AGENT = "tokenkeeper"


def post_form(
    session: requests.Session,
    url: str,
    form: Mapping[str, str | Sequence[str]],
    headers: Mapping[str, str],
    timeout: Any,
    client_tls: ssl.SSLContext | None = None,
) -> FormAnswer | requests.Response:
    """POST ``form`` (URL-encoded) to ``url`` through ``session``'s adapter; the response is streamed.

    Straight to the adapter, past ``Session.request``: what it adds is not wanted for token
    requests and costs about as much as a whole loopback request: the session's default
    headers and params merged in, its cookie jar (a cookie one integration's answer set
    would go out with another integration's request to the same host), hooks, and
    redirects, which are never followed here anyway. Proxies from the environment are
    still honoured, as ``Session.request`` would.
    """
    prepared = requests.PreparedRequest()
    prepared.prepare_method("POST")
    prepared.prepare_url(url, None)
    prepared.prepare_headers({"User-Agent": USER_AGENT, **headers, "Content-Type": "application/x-www-form-urlencoded"})
    # doseq: a parameter given several times (RFC 8707's resource) is sent once per value.
    prepared.prepare_body(urlencode(form, doseq=True), None)
    if session.trust_env:
        settings = session.merge_environment_settings(url, {}, True, None, None)
        proxies, verify, cert = settings["proxies"], settings["verify"], settings["cert"]
    else:
        proxies, verify, cert = session.proxies, session.verify, session.cert
    verify = True if verify is None else verify
    adapter = session.get_adapter(url)
    token = _client_tls.set(client_tls)
    try:
        if (
            isinstance(adapter, GuardedAdapter)
            and isinstance(timeout, tuple)
            and cert is None
            and not (proxies and select_proxy(prepared.url or url, proxies))
        ):
            return adapter.send_form(prepared, timeout, verify)
        return adapter.send(prepared, stream=True, timeout=timeout, verify=verify, cert=cert, proxies=proxies)
    finally:
        _client_tls.reset(token)


def guard(session: requests.Session, policy: AddressPolicy) -> requests.Session:
    """Route every http(s) request of ``session`` through ``policy``; returns the session."""
    for prefix in ("http://", "https://"):
        current = session.adapters.get(prefix)
        if not (isinstance(current, GuardedAdapter) and current.policy == policy):
            session.mount(prefix, GuardedAdapter(policy, pool_connections=HOST_POOLS, pool_maxsize=HOST_POOL_SIZE))
    return session


def guarded_session(policy: AddressPolicy) -> requests.Session:
    """The HTTP session for token, discovery, revocation and webhook requests.

    With no proxy configured in the environment, requests' per-request scan of
    the environment for proxy settings is skipped: it costs about a millisecond a
    request, as much as the request itself on loopback. With a proxy configured,
    requests keeps honouring it (and NO_PROXY) as usual.
    """
    session = requests.Session()
    if not urllib.request.getproxies():
        session.trust_env = False
        # What trust_env would have read besides proxies: a CA bundle for private CAs.
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle:
            session.verify = bundle
    return guard(session, policy)

"""A real OAuth 2.0 authorization server for tests, built from Authlib's server components.

Client authentication by secret (Basic, POST), by signed client assertion (``private_key_jwt``,
``client_secret_jwt``, RFC 7523 §2.2, each ``jti`` accepted once), by mutual TLS
(``tls_client_auth``, RFC 8705 §2.1: served over TLS that requires a client certificate, whose
subject must be the one registered) or none (public clients). Client credentials, the JWT
bearer grant (RFC 7523 §2.1) and the device authorization grant (RFC 8628: a test approves or
denies a user code, or has the server ask for slower polling) and token exchange (RFC 8693, on
Authlib's grant base, which has no exchange grant of its own: the subject token must be a live
access token of this server, the new one is for the ``audience`` asked) besides the code flow;
revocation (RFC 7009). Login form for
several users (a test picks who signs in and consents; ``/logout`` ends the provider session),
consent page with Allow / Deny, authorization code grant with PKCE and, when the scope has
``openid``, an OpenID Connect id_token (RS256) whose ``sub`` is the user's; refresh-token grant
with rotation and reuse detection, and short-lived tokens; served by werkzeug on 127.0.0.1 in
a thread.
"""

from __future__ import annotations

import secrets
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import InvalidClientError, InvalidGrantError, InvalidRequestError, grants
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion, JWTBearerGrant
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc8628 import DeviceAuthorizationEndpoint, DeviceCodeGrant
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, redirect, request, session
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey
from markupsafe import escape
from werkzeug.serving import make_server

USERNAME, PASSWORD = "alice", "wonderland"
SECRET_METHODS = ("client_secret_basic", "client_secret_post")
ASSERTION_METHODS = ("private_key_jwt", "client_secret_jwt")
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
ALL_METHODS = [*SECRET_METHODS, *ASSERTION_METHODS, "tls_client_auth", "none"]
# joserfc, under Authlib, takes only HS256, RS256 and ES256 unless told: this server is told all tokenkeeper signs.
ALGORITHMS = ["RS256", "PS256", "ES256", "EdDSA", "HS256"]
# Who can sign in, and the OpenID subject each one gets.
USERS = {"alice": "wonderland", "bob": "builder"}
SUBJECTS = {"alice": "sub-alice-1001", "bob": "sub-bob-2002"}


@dataclass
class Client:
    client_id: str
    client_secret: str
    redirect_uris: list[str]
    scope: str = "openid profile email"
    # How this client must authenticate: a secret either way, or exactly the method named.
    auth_method: str = "client_secret_basic"
    public_key: str | None = None  # PEM: verifies private_key_jwt client assertions and JWT bearer grants
    grant_types: tuple[str, ...] = ("authorization_code", "refresh_token")
    tls_subject: str | None = None  # tls_client_auth: the subject (RFC 4514) its certificate must have

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str) -> str:
        allowed = set(self.scope.split())
        return " ".join(s for s in (scope or "").split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.auth_method in SECRET_METHODS:
            return method in SECRET_METHODS
        return method == self.auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types

    def verification_key(self) -> Any:
        if self.auth_method == "client_secret_jwt":
            return OctKey.import_key(self.client_secret)
        assert self.public_key is not None
        for kind in (RSAKey, ECKey, OKPKey):
            try:
                return kind.import_key(self.public_key)
            except Exception:  # noqa: BLE001, S112 -- not this kind of key: try the next
                continue
        raise ValueError("unusable public key")


@dataclass
class Code:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: str
    code_challenge: str | None
    code_challenge_method: str | None
    nonce: str | None = None
    auth_time: int = 0

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> None:
        return None


@dataclass
class Token:
    client_id: str
    user: str | None
    scope: str
    access_token: str
    refresh_token: str | None
    expires_at: float
    revoked: bool = False

    def check_client(self, client: Client) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return int(self.expires_at - time.time())

    def is_expired(self) -> bool:
        return False  # refresh tokens here live until rotated

    def is_revoked(self) -> bool:
        return self.revoked

    def get_user(self) -> str | None:
        return self.user

    def get_client(self) -> None:
        return None


@dataclass
class DeviceCredential:
    client_id: str
    scope: str
    user_code: str
    expires_at: float

    def get_client_id(self) -> str:
        return self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_user_code(self) -> str:
        return self.user_code

    def is_expired(self) -> bool:
        return time.time() > self.expires_at


@dataclass
class State:
    clients: dict[str, Client] = field(default_factory=dict)
    codes: dict[str, Code] = field(default_factory=dict)
    tokens: list[Token] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    refreshes: int = 0
    exchanges: int = 0
    # Per grant type (and client), how many tokens were issued; claims of each JWT bearer assertion;
    # each client assertion's jti, and the replays refused.
    issued: dict[str, int] = field(default_factory=dict)
    assertions: list[dict[str, Any]] = field(default_factory=list)
    form_keys: list[set[str]] = field(default_factory=list)
    seen_jti: set[str] = field(default_factory=set)
    replayed_jti: list[str] = field(default_factory=list)
    revoked: list[tuple[str, str]] = field(default_factory=list)
    # tls_client_auth: (client_id the body named, subject of the certificate the connection presented).
    certificates: list[tuple[str, str]] = field(default_factory=list)
    # Every assertion and client assertion received, as sent.
    raw_assertions: list[str] = field(default_factory=list)
    # Device grant: device code -> credential; user code -> (user, approved); polls seen; slow_down answers to give.
    devices: dict[str, DeviceCredential] = field(default_factory=dict)
    device_grants: dict[str, tuple[str, bool]] = field(default_factory=dict)
    device_polls: list[float] = field(default_factory=list)
    slow_downs: int = 0
    # Token exchange: (client, subject token, audience, resource list) of each exchange.
    exchanged: list[tuple[str, str, str, list[str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class AuthorizationServerApp:
    def __init__(
        self,
        lifetime: int = 4,
        issue_refresh_tokens: bool = True,
        require_pkce: bool = False,
        tls: ssl.SSLContext | None = None,
        device_interval: int = 1,
        device_lifetime: int = 60,
        lifetimes: dict[str, int] | None = None,
    ) -> None:
        self.state = State()
        self.lifetime = lifetime
        app = Flask(__name__)
        app.secret_key = secrets.token_hex(16)
        app.config.update(
            OAUTH2_TOKEN_EXPIRES_IN={
                "authorization_code": lifetime,
                "refresh_token": lifetime,
                "client_credentials": lifetime,
                JWTBearerGrant.GRANT_TYPE: lifetime,
                DeviceCodeGrant.GRANT_TYPE: lifetime,
                TOKEN_EXCHANGE: lifetime,
                **(lifetimes or {}),  # per grant type, where a test needs some tokens to outlive others
            },
            OAUTH2_REFRESH_TOKEN_GENERATOR=issue_refresh_tokens,
        )
        server = AuthorizationServer(app, query_client=self.state.clients.get, save_token=self._save_token)
        server.register_grant(self._code_grant(), [CodeChallenge(required=require_pkce), self._openid()])
        server.register_grant(self._refresh_grant())
        server.register_grant(self._client_credentials_grant())
        server.register_grant(self._jwt_bearer_grant())
        for method in ASSERTION_METHODS:
            server.register_client_auth_method(method, self._client_assertion(method))
        server.register_grant(self._device_grant())
        server.register_grant(self._exchange_grant())
        server.register_endpoint(self._device_endpoint(device_interval, device_lifetime))
        server.register_client_auth_method("tls_client_auth", self._tls_client_auth)
        server.register_endpoint(self._revocation())
        self._routes(app, server)
        self.httpd = make_server("127.0.0.1", 0, app, threaded=True, ssl_context=tls)
        self.scheme = "https" if tls else "http"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.httpd.server_port}"

    def start(self) -> AuthorizationServerApp:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/token"

    def register_client(
        self,
        redirect_uri: str = "http://127.0.0.1/unused",
        client_id: str = "tk-client",
        client_secret: str = "tk-secret",
        **options: Any,
    ) -> Client:
        client = Client(client_id, client_secret, [redirect_uri], **options)
        self.state.clients[client_id] = client
        return client

    def answer_device(self, user_code: str, approve: bool, user: str = USERNAME) -> None:
        """What the person does on the verification page: approve or deny the code shown to them."""
        with self.state.lock:
            self.state.device_grants[user_code] = (user, approve)

    def live_tokens(self, client_id: str) -> list[Token]:
        with self.state.lock:
            now = time.time()
            return [t for t in self.state.tokens if t.client_id == client_id and not t.revoked and t.expires_at > now]

    def is_valid(self, access_token: str) -> bool:
        with self.state.lock:
            return any(
                t.access_token == access_token and t.expires_at > time.time() and not t.revoked
                for t in self.state.tokens
            )

    def _save_token(self, token: dict[str, Any], req: Any) -> None:
        with self.state.lock:
            key = f"{req.payload.grant_type}:{req.client.client_id}"
            self.state.issued[key] = self.state.issued.get(key, 0) + 1
            self.state.form_keys.append(set(req.form))
            self.state.raw_assertions += [req.form[k] for k in ("assertion", "client_assertion") if req.form.get(k)]
            self.state.tokens.append(
                Token(
                    client_id=req.client.client_id,
                    user=req.user,
                    scope=token.get("scope", ""),
                    access_token=token["access_token"],
                    refresh_token=token.get("refresh_token"),
                    # No expires_in (a lifetime of 0 asked for): the token does not expire.
                    expires_at=time.time() + token["expires_in"] if "expires_in" in token else float("inf"),
                )
            )

    def _code_grant(self) -> type:
        state = self.state

        class CodeGrant(grants.AuthorizationCodeGrant):
            TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ALL_METHODS

            def save_authorization_code(self, code: str, req: Any) -> None:
                state.codes[code] = Code(
                    code,
                    req.client.client_id,
                    req.payload.redirect_uri,
                    req.payload.scope or "",
                    req.user,
                    req.payload.data.get("code_challenge"),
                    req.payload.data.get("code_challenge_method"),
                    req.payload.data.get("nonce"),
                    int(time.time()),
                )

            def query_authorization_code(self, code: str, client: Client) -> Code | None:
                item = state.codes.get(code)
                return item if item and item.client_id == client.client_id else None

            def delete_authorization_code(self, authorization_code: Code) -> None:
                state.codes.pop(authorization_code.code, None)
                state.exchanges += 1

            def authenticate_user(self, authorization_code: Code) -> str:
                return authorization_code.user

        return CodeGrant

    def _openid(self) -> OpenIDCode:
        """id_tokens signed with a key made for this server, naming the user by a stable ``sub``."""
        key = RSAKey.import_key(
            rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        issuer = lambda: self.base_url  # noqa: E731 -- the port is known only once the server is bound

        class OpenID(OpenIDCode):
            def resolve_client_private_key(self, client: Client) -> RSAKey:
                return key

            def get_client_algorithm(self, client: Client) -> str:
                return "RS256"

            def get_client_claims(self, client: Client) -> dict[str, Any]:
                return {"iss": issuer(), "aud": [client.client_id], "exp": int(time.time()) + 600}

            def exists_nonce(self, nonce: str, req: Any) -> bool:
                return False

            def generate_user_info(self, user: str, scope: str) -> UserInfo:
                return UserInfo(sub=SUBJECTS[user], name=user.title(), email=f"{user}@example.com")

        return OpenID(require_nonce=False)

    def _refresh_grant(self) -> type:
        state = self.state

        class RefreshGrant(grants.RefreshTokenGrant):
            TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ALL_METHODS
            INCLUDE_NEW_REFRESH_TOKEN = True

            def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
                with state.lock:
                    for token in state.tokens:
                        if token.refresh_token == refresh_token:
                            if token.revoked:
                                state.reused.append(refresh_token)
                                return None
                            return token
                return None

            def authenticate_user(self, credential: Token) -> str:
                return credential.user

            def revoke_old_credential(self, credential: Token) -> None:
                with state.lock:
                    credential.revoked = True
                    state.refreshes += 1

        return RefreshGrant

    def _device_endpoint(self, interval: int, lifetime: int) -> DeviceAuthorizationEndpoint:
        state = self.state
        page = lambda: f"{self.base_url}/device"  # noqa: E731 -- the port is known only once the server is bound

        class Endpoint(DeviceAuthorizationEndpoint):
            CLIENT_AUTH_METHODS: ClassVar[list[str]] = ALL_METHODS
            INTERVAL = interval
            EXPIRES_IN = lifetime

            def get_verification_uri(self) -> str:
                return page()

            def save_device_credential(self, client_id: str, scope: str, data: dict[str, Any]) -> None:
                with state.lock:
                    state.devices[data["device_code"]] = DeviceCredential(
                        client_id, scope or "", data["user_code"], time.time() + data["expires_in"]
                    )

        return Endpoint

    def _device_grant(self) -> type:
        state = self.state

        class Device(DeviceCodeGrant):
            TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ALL_METHODS

            def query_device_credential(self, device_code: str) -> DeviceCredential | None:
                with state.lock:
                    state.device_polls.append(time.time())
                    return state.devices.get(device_code)

            def query_user_grant(self, user_code: str) -> tuple[str, bool] | None:
                with state.lock:
                    return state.device_grants.get(user_code)

            def should_slow_down(self, credential: DeviceCredential) -> bool:
                with state.lock:
                    if state.slow_downs > 0:
                        state.slow_downs -= 1
                        return True
                return False

        return Device

    def _exchange_grant(self) -> type:
        state = self.state
        is_valid = self.is_valid

        class Exchange(grants.BaseGrant, grants.TokenEndpointMixin):  # type: ignore[misc]
            GRANT_TYPE = TOKEN_EXCHANGE
            TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ALL_METHODS

            def validate_token_request(self) -> None:
                form = self.request.form
                client = self.authenticate_token_endpoint_client()
                if not client.check_grant_type(self.GRANT_TYPE):
                    raise InvalidClientError(description="not allowed to exchange tokens")
                if form.get("subject_token_type") != ACCESS_TOKEN_TYPE or not form.get("subject_token"):
                    raise InvalidRequestError("subject_token and an access-token subject_token_type are required")
                if not is_valid(form["subject_token"]):
                    raise InvalidGrantError(description="the subject token is not a live token of this server")
                self.request.client = client

            def create_token_response(self) -> Any:
                form = self.request.form
                with state.lock:
                    state.exchanged.append(
                        (
                            self.request.client.client_id,
                            form["subject_token"],
                            form.get("audience", ""),
                            request.form.getlist("resource"),  # Flask's request: every value given
                        )
                    )
                token = self.generate_token(scope=self.request.payload.scope, include_refresh_token=False)
                token["issued_token_type"] = ACCESS_TOKEN_TYPE
                self.save_token(token)
                return 200, token, self.TOKEN_RESPONSE_HEADER

        return Exchange

    def _tls_client_auth(self, query_client: Any, req: Any) -> Client | None:
        """RFC 8705 §2.1.2: the TLS layer checked the chain; the subject must be the client's registered one."""
        pem = request.environ.get("SSL_CLIENT_CERT")
        client = query_client(req.form.get("client_id"))
        if not pem or client is None or client.auth_method != "tls_client_auth":
            return None
        subject = x509.load_pem_x509_certificate(pem.encode()).subject.rfc4514_string()
        with self.state.lock:
            self.state.certificates.append((client.client_id, subject))
        return client if subject == client.tls_subject else None

    def _client_credentials_grant(self) -> type:
        class ClientCredentials(grants.ClientCredentialsGrant):
            TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ALL_METHODS

        return ClientCredentials

    def _jwt_bearer_grant(self) -> type:
        state = self.state
        token_url = lambda: self.token_url  # noqa: E731 -- the port is known only once the server is bound

        class Bearer(JWTBearerGrant):
            TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ALL_METHODS

            def resolve_issuer_client(self, issuer: str) -> Client | None:
                return state.clients.get(issuer)

            def resolve_client_public_key(self, client: Client) -> Any:
                return client.verification_key()

            def get_audiences(self) -> list[str]:
                return [token_url()]

            def authenticate_user(self, subject: str) -> str | None:
                return subject

            def has_granted_permission(self, client: Client, user: str) -> bool:
                return True

            def process_assertion_claims(self, assertion: str) -> Any:
                # Authlib's own steps, with the algorithms this server accepts.
                _, claims = self.extract_assertion(assertion)
                client = self.resolve_issuer_client(claims.get("iss")) if isinstance(claims.get("iss"), str) else None
                if client is None:
                    raise InvalidGrantError(description="The client does not exist on this server.")
                try:
                    token = jwt.decode(assertion, self.resolve_client_public_key(client), algorithms=ALGORITHMS)
                except (JoseError, ValueError) as exc:
                    raise InvalidGrantError(description=str(exc)) from None
                self.verify_claims(token.claims)
                with state.lock:
                    state.assertions.append(dict(token.claims))
                return token.claims

        return Bearer

    def _client_assertion(self, method: str) -> JWTBearerClientAssertion:
        state = self.state
        token_url = lambda: self.token_url  # noqa: E731 -- the port is known only once the server is bound

        class Assertion(JWTBearerClientAssertion):
            CLIENT_AUTH_METHOD = method

            def __call__(self, query_client: Any, request: Any) -> Any:
                # Both methods read the same form fields: each takes only its own clients (else the other
                # one's check would spend the jti first).
                assertion = request.form.get("client_assertion")
                if assertion:
                    _, claims = self.extract_assertion(assertion)
                    client = query_client(claims.get("sub")) if isinstance(claims.get("sub"), str) else None
                    if client is not None and client.auth_method != method:
                        return None
                return super().__call__(query_client, request)

            def process_assertion_claims(self, assertion: str, resolve_key: Any) -> Any:
                try:
                    token = jwt.decode(assertion, resolve_key, algorithms=ALGORITHMS)
                except (JoseError, ValueError) as exc:
                    raise InvalidClientError(description=str(exc)) from None
                self.verify_claims(token.claims)
                return token.claims

            def get_audiences(self) -> list[str]:
                return [token_url()]

            def validate_jti(self, claims: Any, jti: str) -> bool:
                with state.lock:
                    if jti in state.seen_jti:
                        state.replayed_jti.append(jti)
                        return False
                    state.seen_jti.add(jti)
                    return True

            def resolve_client_public_key(self, client: Client) -> Any:
                return client.verification_key()

        return Assertion()

    def _revocation(self) -> type:
        state = self.state

        class Revocation(RevocationEndpoint):
            CLIENT_AUTH_METHODS: ClassVar[list[str]] = ALL_METHODS

            def query_token(self, token_string: str, token_type_hint: str | None) -> Token | None:
                with state.lock:
                    for token in state.tokens:
                        if token_string in (token.access_token, token.refresh_token):
                            return token
                return None

            def revoke_token(self, token: Token, request: Any) -> None:
                with state.lock:
                    token.revoked = True
                    state.revoked.append((token.client_id, request.form.get("token_type_hint", "")))

        return Revocation

    def _routes(self, app: Flask, server: AuthorizationServer) -> None:
        @app.route("/authorize", methods=["GET", "POST"])
        def authorize() -> Any:
            if "user" not in session:
                return _page(f"""<h1>Sign in</h1><form method="post" action="/login">
                    <input type="hidden" name="next" value="{escape(request.full_path)}">
                    <label>User <input id="username" name="username"></label>
                    <label>Password <input id="password" name="password" type="password"></label>
                    <button id="login" type="submit">Sign in</button></form>""")
            if request.method == "GET":
                grant = server.get_consent_grant(end_user=session["user"])
                return _page(f"""<h1>Allow {escape(grant.client.client_id)}?</h1>
                    <p>Scopes: {escape(grant.request.payload.scope or "")}</p>
                    <form method="post" action="{escape(request.full_path)}">
                    <button id="allow" name="confirm" value="yes">Allow</button>
                    <button id="deny" name="confirm" value="no">Deny</button></form>""")
            grant = server.get_consent_grant(end_user=session["user"])
            user = session["user"] if request.form.get("confirm") == "yes" else None
            return server.create_authorization_response(grant_user=user, grant=grant)

        @app.post("/login")
        def login() -> Any:
            user = request.form.get("username", "")
            if user in USERS and request.form.get("password") == USERS[user]:
                session["user"] = user
            return redirect(request.form.get("next") or "/authorize")

        @app.get("/logout")
        def logout() -> Any:
            session.clear()
            return _page("<h1 id='signed-out'>Signed out</h1>")

        @app.post("/token")
        def token() -> Any:
            return server.create_token_response()

        @app.post("/device_authorization")
        def device_authorization() -> Any:
            return server.create_endpoint_response("device_authorization")

        @app.post("/revoke")
        def revoke() -> Any:
            return server.create_endpoint_response("revocation")


def _page(body: str) -> str:
    return f"<!doctype html><html><body>{body}</body></html>"

"""A real OAuth 2.0 authorization server for tests, built from Authlib's server components.

Login form for several users (a test picks who signs in and consents; ``/logout`` ends the
provider session), consent page with Allow / Deny, authorization code grant with PKCE and,
when the scope has ``openid``, an OpenID Connect id_token (RS256) whose ``sub`` is the user's;
refresh-token grant with rotation and reuse detection, and short-lived tokens; served by
werkzeug on 127.0.0.1 in a thread.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, redirect, request, session
from joserfc.jwk import RSAKey
from markupsafe import escape
from werkzeug.serving import make_server

USERNAME, PASSWORD = "alice", "wonderland"
# Who can sign in, and the OpenID subject each one gets.
USERS = {"alice": "wonderland", "bob": "builder"}
SUBJECTS = {"alice": "sub-alice-1001", "bob": "sub-bob-2002"}


@dataclass
class Client:
    client_id: str
    client_secret: str
    redirect_uris: list[str]
    scope: str = "openid profile email"

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
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in ("authorization_code", "refresh_token")


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
    user: str
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

    def get_user(self) -> str:
        return self.user

    def get_client(self) -> None:
        return None


@dataclass
class State:
    clients: dict[str, Client] = field(default_factory=dict)
    codes: dict[str, Code] = field(default_factory=dict)
    tokens: list[Token] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    refreshes: int = 0
    exchanges: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class AuthorizationServerApp:
    def __init__(self, lifetime: int = 4, issue_refresh_tokens: bool = True, require_pkce: bool = False) -> None:
        self.state = State()
        self.lifetime = lifetime
        app = Flask(__name__)
        app.secret_key = secrets.token_hex(16)
        app.config.update(
            OAUTH2_TOKEN_EXPIRES_IN={"authorization_code": lifetime, "refresh_token": lifetime},
            OAUTH2_REFRESH_TOKEN_GENERATOR=issue_refresh_tokens,
        )
        server = AuthorizationServer(app, query_client=self.state.clients.get, save_token=self._save_token)
        server.register_grant(self._code_grant(), [CodeChallenge(required=require_pkce), self._openid()])
        server.register_grant(self._refresh_grant())
        self._routes(app, server)
        self.httpd = make_server("127.0.0.1", 0, app, threaded=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}"

    def start(self) -> AuthorizationServerApp:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()

    def register_client(
        self, redirect_uri: str, client_id: str = "tk-client", client_secret: str = "tk-secret"
    ) -> Client:
        client = Client(client_id, client_secret, [redirect_uri])
        self.state.clients[client_id] = client
        return client

    def is_valid(self, access_token: str) -> bool:
        with self.state.lock:
            return any(
                t.access_token == access_token and t.expires_at > time.time() and not t.revoked
                for t in self.state.tokens
            )

    def _save_token(self, token: dict[str, Any], req: Any) -> None:
        with self.state.lock:
            self.state.tokens.append(
                Token(
                    client_id=req.client.client_id,
                    user=req.user,
                    scope=token.get("scope", ""),
                    access_token=token["access_token"],
                    refresh_token=token.get("refresh_token"),
                    expires_at=time.time() + token["expires_in"],
                )
            )

    def _code_grant(self) -> type:
        state = self.state

        class CodeGrant(grants.AuthorizationCodeGrant):
            TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ["client_secret_basic", "client_secret_post"]

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
            TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ["client_secret_basic", "client_secret_post"]
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


def _page(body: str) -> str:
    return f"<!doctype html><html><body>{body}</body></html>"

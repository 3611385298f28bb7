"""The ``tokenkeeper`` command: producers' and operators' way in.

Every command exits 0 on success, or non-zero with a one-line reason on stderr.
Commands that change integrations enqueue the contract's tasks and wait for a
worker's answer; commands that read go to Redis directly.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from config import Settings, SettingsError, load_settings, local_environ
from workers.errors import TokenkeeperError


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    options = parser.parse_args(argv)
    try:
        settings = load_settings(local_environ(os.environ))
        return options.run(settings, options) or 0
    except (TokenkeeperError, SettingsError) as exc:
        return _fail(str(exc).replace("\n", " "))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 -- the contract promises one line, not a traceback
        return _fail(_describe_unexpected(exc))


def _fail(message: str) -> int:
    print(f"tokenkeeper: {message}", file=sys.stderr)
    return 1


def _describe_unexpected(exc: Exception) -> str:
    from celery.exceptions import TimeoutError as CeleryTimeout
    from kombu.exceptions import OperationalError

    if isinstance(exc, CeleryTimeout):
        return "no worker answered in time: is a worker running (tokenkeeper standalone)?"
    # Without TOKENKEEPER_REDIS_URL we looked for standalone's Redis on this machine.
    hint = (
        ""
        if "TOKENKEEPER_REDIS_URL" in os.environ
        else " (is `tokenkeeper standalone` running? or set TOKENKEEPER_REDIS_URL)"
    )
    if isinstance(exc, OperationalError):
        return f"cannot reach the broker: {exc}{hint}"
    import redis

    if isinstance(exc, redis.RedisError):
        return f"cannot reach Redis: {exc}{hint}"
    # Celery rebuilds a worker's error as its own type; its text is ours and secret-free.
    return f"{type(exc).__name__}: {exc}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tokenkeeper", description="Keep OAuth 2.0 access tokens fresh.")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, run: Any, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(run=run)
        return sub

    pin_help = "seal secrets to this public key, not the one derived from the secret key or TOKENKEEPER_PUBLIC_KEY"
    sub = command("create", _create, "create an integration from a JSON spec (FILE or - for stdin)")
    sub.add_argument("file", nargs="?")
    sub.add_argument("--timeout", type=float, default=60.0)
    sub.add_argument("--public-key", help=pin_help)
    sub.add_argument(
        "--service-account",
        metavar="KEY_FILE",
        help="instead of FILE: a Google service-account integration from its key file (with --name, --scopes)",
    )
    sub.add_argument("--name", help="with --service-account: the integration's name")
    sub.add_argument("--scopes", help="with --service-account: the scopes, space-separated")
    sub.add_argument("--subject", help="with --service-account: the user to act for (domain-wide delegation)")
    planning = command(
        "plan",
        _plan,
        "show what applying a YAML or JSON file of integrations would change (exit 0: nothing, 2: changes, 1: error)",
    )
    applying = command("apply", _apply, "make the integrations what a YAML or JSON file says (shows the plan first)")
    applying.add_argument("--yes", action="store_true", help="apply without asking")
    for sub, prune in ((planning, "also list"), (applying, "delete")):
        sub.add_argument("file")
        sub.add_argument("--prune", action="store_true", help=f"{prune} the project's integrations the file leaves out")
        sub.add_argument(
            "--adopt", action="store_true", help="take over integrations the file names that no file keeps"
        )
        sub.add_argument("--timeout", type=float, default=120.0)
        sub.add_argument("--public-key", help=pin_help)
    sub = command("update", _update, "apply JSON changes (FILE or -) to an integration")
    sub.add_argument("name")
    sub.add_argument("file")
    sub.add_argument("--timeout", type=float, default=60.0)
    sub.add_argument("--public-key", help=pin_help)
    sub = command("delete", _delete, "delete an integration and everything stored for it")
    sub.add_argument("name")
    sub.add_argument("--timeout", type=float, default=60.0)
    sub = command("refresh", _refresh, "refresh an integration's token now")
    sub.add_argument("name")
    sub.add_argument("--timeout", type=float, default=60.0)
    sub = command(
        "list",
        _list,
        "list integrations in name order, a page at a time (the status page's index), with status and expiry",
    )
    sub.add_argument("--prefix", default="", help="only names that start with this")
    sub.add_argument("--status", default="", help="only this status (needs_reauth, retrying, …)")
    sub.add_argument("--grant", default="", help="only this grant type (authorization_code, …)")
    sub.add_argument("--provider", default="", help="only this provider preset ('none': without one)")
    sub.add_argument("--limit", type=int, default=100, help="rows per page (default 100, at most 1000)")
    sub.add_argument("--after", default="", metavar="NAME", help="the page after this name (the next page)")
    sub.add_argument("--all", action="store_true", help="every page, one after the other")
    command(
        "reindex",
        _reindex,
        "file every integration in the status page's index and drop what has no integration "
        "(once after upgrading from a version without it; harmless to repeat)",
    )
    sub = command("show", _show, "show an integration (no secrets) and its status history")
    sub.add_argument("name")
    sub = command("token", _token, "print an integration's access token")
    sub.add_argument("name")
    sub.add_argument(
        "--min-valid", type=float, default=0.0, help="refresh first if the token expires within this many seconds"
    )
    sub = command(
        "exec",
        _exec,
        "run a command with tokens in its environment (--env VAR=INTEGRATION or VAR='{{ template }}'); "
        "its exit status is returned",
    )
    sub.add_argument("--env", action="append", default=[], metavar="VAR=VALUE", help="repeatable")
    sub.add_argument(
        "--min-valid", type=float, default=0.0, help="refresh first any token that expires within this many seconds"
    )
    sub.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    sub = command("render", _render, "fill {{ $.integrations.NAME.FIELD }} placeholders (TEMPLATE text or -)")
    sub.add_argument("template")
    sub = command(
        "authorize-url",
        _authorize_url,
        "print a signed, expiring, single-use link that lets a person authorize an integration",
    )
    sub.add_argument("name")
    sub.add_argument(
        "--expires",
        metavar="DURATION",
        help="how long the link stays valid: 90s, 30m, 24h, 7d or seconds "
        "(default TOKENKEEPER_AUTHORIZE_LINK_TTL, 24h)",
    )
    sub.add_argument("--new-account", action="store_true", help="accept an account other than the one connected before")
    command("genkey", _genkey, "print a new Fernet key for TOKENKEEPER_SECRET_KEY")
    command(
        "public-key",
        _public_key,
        "print the public key (standard base64) that task secrets are sealed to, for TOKENKEEPER_PUBLIC_KEY",
    )
    sub = command("seal", _seal, 'seal a secret read from stdin; prints {"sealed": ...} for a spec field')
    sub.add_argument("--base64", action="store_true", help="print only the box's base64")
    sub.add_argument("--public-key", help=pin_help)
    command("rotate-keys", _rotate_keys, "re-encrypt every stored secret under the first TOKENKEEPER_SECRET_KEY")
    command("standalone", _standalone, "run Redis (if none answers), worker, beat, callback app and Flower")
    return parser


def _read_json(source: str) -> Any:
    try:
        if source == "-":
            return json.load(sys.stdin)
        with open(source, encoding="utf-8") as handle:
            return json.load(handle)
    except OSError as exc:
        raise TokenkeeperError(f"cannot read {source}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise TokenkeeperError(f"{source} is not valid JSON: {exc.msg} at line {exc.lineno}") from None


def _celery(settings: Settings) -> Any:
    from workers.celery_app import create_celery
    from workers.ops import tracing

    # The commands that send tasks: their spans start the traces the workers continue.
    tracing.setup(settings)
    return create_celery(settings)


def _print_json(data: Any, out: TextIO = sys.stdout) -> None:
    print(json.dumps(data, indent=2, sort_keys=True), file=out)


def _create(settings: Settings, options: argparse.Namespace) -> int:
    from workers.producer import call

    spec = _service_account_spec(options) if options.service_account else _read_specs(_one_source(options))
    if isinstance(spec, list):
        return _create_many(settings, spec, options.public_key)
    result = call(
        _celery(settings),
        "tokenkeeper.create_integration",
        spec,
        timeout=options.timeout,
        public_key=options.public_key,
    )
    _print_json(result)
    if result.get("authorization_url"):
        print(f"\nRegister this redirect URI at the provider: {settings.callback_url}", file=sys.stderr)
        print(f"Send the user to: {result['authorization_url']}", file=sys.stderr)
    if result.get("user_code"):
        print(
            f"\nOn any device, open {result['verification_uri']} and enter the code {result['user_code']}",
            file=sys.stderr,
        )
        if result.get("verification_uri_complete"):
            print(f"(or open {result['verification_uri_complete']})", file=sys.stderr)
    return 0


def _one_source(options: argparse.Namespace) -> str:
    if options.file is None:
        raise TokenkeeperError("create needs a spec FILE (or - for stdin), or --service-account KEY_FILE")
    if options.name or options.scopes or options.subject:
        raise TokenkeeperError("--name, --scopes and --subject go with --service-account; a spec FILE says them itself")
    return options.file


def _service_account_spec(options: argparse.Namespace) -> dict[str, Any]:
    """The spec of a Google service-account integration: the key file goes as it is (sealed on its way)."""
    if options.file is not None:
        raise TokenkeeperError("give either a spec FILE or --service-account, not both")
    if not options.name:
        raise TokenkeeperError("--service-account needs --name")
    try:
        key_file = Path(options.service_account).read_text(encoding="utf-8")
    except OSError as exc:
        raise TokenkeeperError(f"cannot read {options.service_account}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise TokenkeeperError(f"{options.service_account} is not a key file (not UTF-8 text)") from None
    spec: dict[str, Any] = {"name": options.name, "private_key": key_file}
    if options.scopes:
        spec["scopes"] = options.scopes
    if options.subject:
        spec["assertion_claims"] = {"sub": options.subject}
    return spec


def _read_specs(source: str) -> Any:
    """One JSON spec, a JSON array of specs, or JSON Lines (one spec per line)."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise TokenkeeperError(f"cannot read {source}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as whole:
        lines = [line for line in text.splitlines() if line.strip()]
        if len(lines) < 2:
            raise TokenkeeperError(f"{source} is not valid JSON: {whole.msg} at line {whole.lineno}") from None
        specs = []
        for number, line in enumerate(lines, start=1):
            try:
                specs.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise TokenkeeperError(f"{source} line {number} is not valid JSON: {exc.msg}") from None
        return specs


# A bulk creation goes out in tasks of this many specs, this many tasks unanswered at a time.
CREATIONS_PER_TASK = 100
CREATION_TASKS_IN_FLIGHT = 20


def _create_many(settings: Settings, specs: list[Any], public_key: str | None = None) -> int:
    """Create many integrations with a progress bar on stderr; failures are listed, the rest go on."""
    from workers.producer import call_many

    total, started = len(specs), time.monotonic()
    counts = {"ok": 0, "failed": 0}
    interactive = sys.stderr.isatty()
    last_line = [-1]

    def progress(index: int, ok: bool, value: Any) -> None:
        counts["ok" if ok else "failed"] += 1
        done = counts["ok"] + counts["failed"]
        rate = done / max(time.monotonic() - started, 1e-9)
        bar = "#" * (30 * done // total) + "-" * (30 - 30 * done // total)
        line = f"[{bar}] {done}/{total} created {counts['ok']} failed {counts['failed']} {rate:.0f}/s"
        percent = 100 * done // total
        if interactive:
            print("\r" + line, end="" if done < total else "\n", file=sys.stderr, flush=True)
        elif percent // 5 != last_line[0] or done == total:
            last_line[0] = percent // 5
            print(line, file=sys.stderr, flush=True)

    failures: list[tuple[int, str]] = []

    def outcomes(chunk: int, ok: bool, value: Any) -> None:
        first = chunk * CREATIONS_PER_TASK
        count = min(CREATIONS_PER_TASK, total - first)
        for offset in range(count):
            outcome = value[offset] if ok else {"error": value}
            if "error" in outcome:
                failures.append((first + offset, outcome["error"]))
            progress(first + offset, "error" not in outcome, outcome)

    # In tasks of CREATIONS_PER_TASK specs: a batch shares its Redis round trips and overlaps its token requests.
    chunks = (specs[start : start + CREATIONS_PER_TASK] for start in range(0, total, CREATIONS_PER_TASK))
    call_many(
        _celery(settings),
        "tokenkeeper.create_integrations",
        ((chunk,) for chunk in chunks),
        window=CREATION_TASKS_IN_FLIGHT,
        on_result=outcomes,
        public_key=public_key,
    )
    failures.sort()
    succeeded = total - len(failures)
    for index, message in failures[:20]:
        name = specs[index].get("name", f"#{index + 1}") if isinstance(specs[index], dict) else f"#{index + 1}"
        print(f"  {name}: {message}", file=sys.stderr)
    _print_json({"created": succeeded, "failed": len(failures), "seconds": round(time.monotonic() - started, 1)})
    if failures:
        raise TokenkeeperError(f"{len(failures)} of {total} integrations were not created")
    return 0


def _plan(settings: Settings, options: argparse.Namespace) -> int:
    from workers.plan_apply import plan_command

    return plan_command(_celery(settings), options)


def _apply(settings: Settings, options: argparse.Namespace) -> int:
    from workers.plan_apply import apply_command, ask_at_terminal

    return apply_command(_celery(settings), options, ask_at_terminal)


def _update(settings: Settings, options: argparse.Namespace) -> int:
    from workers.producer import call

    changes = _read_json(options.file)
    _print_json(
        call(
            _celery(settings),
            "tokenkeeper.update_integration",
            options.name,
            changes,
            timeout=options.timeout,
            public_key=options.public_key,
        )
    )
    return 0


def _delete(settings: Settings, options: argparse.Namespace) -> int:
    from workers.producer import call

    _print_json(call(_celery(settings), "tokenkeeper.delete_integration", options.name, timeout=options.timeout))
    return 0


def _refresh(settings: Settings, options: argparse.Namespace) -> int:
    from workers.producer import call

    _print_json(call(_celery(settings), "tokenkeeper.refresh_integration", options.name, timeout=options.timeout))
    return 0


def _runtime(settings: Settings) -> Any:
    from workers.engine.runtime import build_runtime

    return build_runtime(settings)


def _list(settings: Settings, options: argparse.Namespace) -> int:
    """A page of the index in columns; what comes next is said on stderr, so stdout stays the table."""
    import dataclasses

    from workers.engine.overview import listing, parse_query

    query = parse_query(
        prefix=options.prefix,
        status=options.status,
        grant=options.grant,
        provider=options.provider,
        after=options.after,
        limit=options.limit,
    )
    store = _runtime(settings).store
    lines = [("NAME", "GRANT", "STATUS", "EXPIRES IN", "REASON")]
    while True:
        shown = listing(store, query, time.time())
        for row in shown.rows:
            expires = "-" if row.expires_in is None else f"{int(row.expires_in)}s"
            lines.append((row.name, row.grant_type, row.status, expires, row.reason[:60]))
        page = shown.page
        if not (options.all and page.more_after):
            break
        query = dataclasses.replace(query, after=page.names[-1])
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    if page.more_after:
        rest = page.matching - page.position - len(page.names)
        print(f"{rest} more: add --after {page.names[-1]} (or --all)", file=sys.stderr)
    if page.indexed != page.stored:
        print(
            f"the index holds {page.indexed} of {page.stored} integrations: run `tokenkeeper reindex`",
            file=sys.stderr,
        )
    return 0


def _reindex(settings: Settings, options: argparse.Namespace) -> int:
    started = time.monotonic()
    rebuilt = _runtime(settings).store.index.rebuild()
    _print_json(
        {
            "filed": rebuilt.filed,
            "removed": rebuilt.removed,
            "recounted": rebuilt.recounted,
            "seconds": round(time.monotonic() - started, 2),
        }
    )
    return 0


def _show(settings: Settings, options: argparse.Namespace) -> int:
    store = _runtime(settings).store
    record = store.load(options.name)
    if record is None:
        raise TokenkeeperError(f"no integration named {options.name!r}")
    token = store.token(options.name)
    shown: dict[str, Any] = {
        "name": record.name,
        "grant_type": record.grant_type,
        "status": record.status,
        "reason": record.reason,
        "spec": dict(record.public),
        "expires_at": token.get("expires_at", ""),
        "scope": token.get("scope", ""),
        "account": dict(record.account),
        "refreshed_at": record.refreshed_at,
        "next_refresh_at": record.refresh_at,
        "history": store.history(options.name),
    }
    if record.device:
        # A device grant waiting for its person: the code to enter and where (RFC 8628 §3.3).
        shown["device"] = dict(record.device)
    _print_json(shown)
    return 0


def _reader(settings: Settings) -> Any:
    from workers.consumer import TokenReader
    from workers.engine.runtime import redis_client
    from workers.producer import send

    app = _celery(settings)
    return TokenReader(
        redis_client(settings.redis_url, settings.redis_sentinel_master),
        settings.key_prefix,
        request_refresh=lambda name: send(app, "tokenkeeper.refresh_integration", name),
    )


def _token(settings: Settings, options: argparse.Namespace) -> int:
    token = _reader(settings).get(options.name, min_valid=options.min_valid)
    print(token.access_token)
    return 0


# An environment variable's name, as a shell would take it.
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _exec(settings: Settings, options: argparse.Namespace) -> int:
    """Run a command with tokens in its environment; its exit status is ours (the process becomes it)."""
    from workers.templates import placeholders, render

    command = list(options.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise TokenkeeperError("exec needs a command after --, e.g. tokenkeeper exec --env T=name -- curl …")
    wanted: dict[str, str] = {}
    for item in options.env:
        variable, sep, value = item.partition("=")
        if not sep or not _VARIABLE.fullmatch(variable):
            raise TokenkeeperError(f"--env {variable or item!r}: give VAR=INTEGRATION or VAR='… {{{{ template }}}} …'")
        # A bare name is that integration's access token; anything else is a template.
        wanted[variable] = value if "{{" in value else f"{{{{ $.integrations[{json.dumps(value)}].access_token }}}}"
    reader = _reader(settings)
    names = sorted({name for template in wanted.values() for name, _ in placeholders(template)})
    for name in names:
        # Fresh enough first (a refresh through the single-flight path when not): then read as the command sees it.
        reader.get(name, min_valid=options.min_valid)
    environment = {**os.environ, **{variable: render(template, reader) for variable, template in wanted.items()}}
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(command[0], command, environment)  # noqa: S606 -- the user's command, as typed: no shell
    except OSError as exc:
        raise TokenkeeperError(f"cannot run {command[0]!r}: {exc.strerror}") from None
    return 0  # not reached: the command has taken the process over


def _render(settings: Settings, options: argparse.Namespace) -> int:
    from workers.templates import render

    template = sys.stdin.read() if options.template == "-" else options.template
    sys.stdout.write(render(template, _reader(settings)))
    if not template.endswith("\n"):
        sys.stdout.write("\n")
    return 0


def _authorize_url(settings: Settings, options: argparse.Namespace) -> int:
    from workers.engine.links import authorization_link, parse_duration

    try:
        ttl = parse_duration(options.expires) if options.expires is not None else settings.authorize_link_ttl
    except ValueError as exc:
        raise TokenkeeperError(f"--expires: {exc}") from None
    if not settings.secret_keys:
        raise TokenkeeperError(
            "TOKENKEEPER_SECRET_KEY is not set: authorize-url signs the link with it; run with the service's settings"
        )
    record = _runtime(settings).store.load(options.name)
    if record is None:
        raise TokenkeeperError(f"no integration named {options.name!r}")
    if record.grant_type != "authorization_code":
        raise TokenkeeperError(f"integration {options.name!r} uses {record.grant_type}, not authorization_code")
    now = time.time()
    print(authorization_link(settings, options.name, now=now, ttl=ttl, new_account=options.new_account))
    until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now + ttl))
    kind = "any account" if options.new_account else "the connected account only, if one is"
    print(f"valid until {until}, for one successful authorization; accepts {kind}", file=sys.stderr)
    return 0


def _genkey(settings: Settings, options: argparse.Namespace) -> int:
    from workers.crypto.secretbox import generate_key

    print(generate_key())
    return 0


def _public_key(settings: Settings, options: argparse.Namespace) -> int:
    from workers.producer import find_public_key

    print(find_public_key(settings))
    return 0


def _seal(settings: Settings, options: argparse.Namespace) -> int:
    from workers.crypto.sealing import Sealer
    from workers.producer import find_public_key

    if sys.stdin.isatty():
        import getpass

        secret = getpass.getpass("secret (not echoed): ")
    else:
        # `echo "$SECRET" | tokenkeeper seal`: the newline echo adds is not part of the secret.
        secret = sys.stdin.read().removesuffix("\n").removesuffix("\r")
    if not secret:
        raise TokenkeeperError("nothing to seal: give the secret on stdin")
    box = Sealer(options.public_key or find_public_key(settings)).seal(secret)
    print(box["sealed"] if options.base64 else json.dumps(box))
    return 0


def _rotate_keys(settings: Settings, options: argparse.Namespace) -> int:
    from workers.engine.keyrotation import purge_old_ciphertext, rotate_secrets

    runtime = _runtime(settings)
    report = rotate_secrets(runtime)
    print(f"re-encrypted {report.rotated} integration(s) under the first key")
    if report.busy:
        raise TokenkeeperError(f"busy, try again: {', '.join(report.busy)}")
    disk = purge_old_ciphertext(runtime.store.redis)
    if disk.rewrote_aof:
        print("rewrote the Redis AOF: the old ciphertext is off the disk")
    return 0


def _standalone(settings: Settings, options: argparse.Namespace) -> int:
    from workers.ops.standalone import run

    return run(settings, dict(os.environ))


if __name__ == "__main__":
    sys.exit(main())

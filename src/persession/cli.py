"""The ``persession`` command.

::

    persession purge sqlite:///var/lib/app/sessions.db   # delete expired sessions now
    persession nginx 127.0.0.1:8001-8004 --balance cookie --output app.conf  # for nginx's conf.d/
    persession serve myapp:app --ports 8001-8004         # one server process per port
    persession --version

Bad input (an unknown option, a value a spec rejects) is reported on standard
error naming the option, with exit status 2; never a traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from typing import Literal

from . import __version__
from .exceptions import ConfigError, PersessionError

__all__ = ["main"]

_EPILOG = """examples:
  persession purge sqlite:///var/lib/app/sessions.db
  persession purge sqlite://          # the default file, ~/.local/state/persession/sessions.db
  persession nginx 127.0.0.1:8001-8004 --server-name example.com
  persession serve myapp.main:app --ports 8001-8004

'persession COMMAND --help' describes each command.
"""

_NGINX_EPILOG = """examples (each runs as shown in an empty directory; 'nginx -t' accepts what it prints or writes):
  persession nginx 127.0.0.1:8001-8004
  persession nginx 127.0.0.1:8001-8004 --balance cookie --cookie-name connect.sid --server-name example.com
  persession nginx 127.0.0.1:8001-8004 --balance least_conn --websocket-path /ws --no-keepalive

  # TLS, with a self-signed pair to try it (nginx reads both files when it starts)
  openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=example.com -days 1 \\
      -keyout example.com.key -out example.com.pem
  persession nginx 127.0.0.1:8001-8004 --server-name example.com \\
      --tls-certificate example.com.pem --tls-key example.com.key --redirect-http --output persession.conf

  # a complete nginx.conf for an nginx without root, its pid, logs and temp files in ./nginx-run
  persession nginx 127.0.0.1:8001-8002 --listen 127.0.0.1:8080 --balance round_robin --debug-header \\
      --standalone nginx-run --foreground --output nginx-run/nginx.conf
  nginx -t -p "$PWD/nginx-run" -c "$PWD/nginx-run/nginx.conf" -e stderr

Without --standalone the output is a snippet for nginx's http context (conf.d/):
maps, the upstream and the server blocks. With --standalone DIR it is a complete
nginx.conf keeping its pid, logs and temp files in DIR, for an unprivileged nginx
started with 'nginx -p DIR -c DIR/nginx.conf -e stderr' (DIR absolute; the file's
header shows the exact command). A relative path given to --tls-certificate,
--tls-key or --standalone is taken from the current directory and written out
absolute; --output and --standalone create the directories they need.
"""

_SERVE_EPILOG = """examples:
  persession serve myapp.main:app --ports 8001-8004
  persession serve myapp.wsgi:application --ports 8001,8002 --server gunicorn -- --timeout 60
  persession serve examples.starlette_app.app:app --ports 8001-8004 --host 127.0.0.1

Arguments after '--' go to every server process unchanged. Each process gets
PERSESSION_SERVE_PORT set to its port. SIGTERM or SIGINT stops them all.
"""

# The spec's option names as the nginx command spells them, for error messages.
_NGINX_FLAGS = {
    "servers": "BACKEND",
    "upstream": "--upstream",
    "balancing": "--balance",
    "cookie_name": "--cookie-name",
    "keepalive": "--keepalive",
    "websocket_paths": "--websocket-path",
    "websocket_timeout": "--websocket-timeout",
    "listen_address": "--listen",
    "listen_port": "--listen",
    "server_names": "--server-name",
    "certificate": "--tls-certificate",
    "certificate_key": "--tls-key",
    "http_port": "--http-port",
    "directory": "--standalone",
    "worker_processes": "--worker-processes",
    "user": "--user",
}
_SERVE_FLAGS = {
    "app": "APP",
    "ports": "--ports",
    "host": "--host",
    "server": "--server",
    "workers_per_port": "--workers-per-port",
    "app_dir": "--app-dir",
    "stop_timeout": "--stop-timeout",
}


class _UsageError(Exception):
    """Bad command-line input, already phrased for the user: ``flag: message``."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="persession",
        description="Server-side sessions for WSGI and ASGI apps.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"persession {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    purge = commands.add_parser(
        "purge",
        help="delete expired sessions from a SQLite store now",
        description="Delete expired sessions from a SQLite store (they are never served; this reclaims space).",
    )
    purge.add_argument("url", help="the store URL, e.g. sqlite:///var/lib/app/sessions.db")
    _add_nginx(commands)
    _add_serve(commands)
    return parser


def _add_nginx(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .nginx import BALANCING_METHODS

    nginx = commands.add_parser(
        "nginx",
        help="print an nginx configuration for several app processes",
        description="Print an nginx configuration that balances between several app processes sharing one "
        "session store: upstream, websocket upgrade, forwarded headers, optional TLS.",
        epilog=_NGINX_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    nginx.add_argument(
        "backends",
        nargs="+",
        metavar="BACKEND",
        help="an app process as HOST:PORT, or HOST:FIRST-LAST for a range of ports ([::1]:8001 for IPv6)",
    )
    nginx.add_argument("--upstream", default="persession", metavar="NAME", help="upstream name (default: %(default)s)")
    nginx.add_argument(
        "--balance",
        choices=BALANCING_METHODS,
        default="ip_hash",
        help="ip_hash (default; the same client address, the same process), cookie (hash on the session "
        "cookie, consistent), least_conn, or round_robin",
    )
    nginx.add_argument(
        "--cookie-name",
        default="session",
        metavar="NAME",
        help="the session cookie --balance cookie hashes on (default: %(default)s; express-session: connect.sid)",
    )
    keepalive = nginx.add_mutually_exclusive_group()
    keepalive.add_argument(
        "--keepalive",
        type=int,
        default=32,
        metavar="N",
        help="idle upstream connections kept per worker (default: %(default)s)",
    )
    keepalive.add_argument(
        "--no-keepalive", dest="keepalive", action="store_const", const=None, help="no upstream keepalive"
    )
    nginx.add_argument("--no-websocket", dest="websocket", action="store_false", help="do not proxy websocket upgrades")
    nginx.add_argument(
        "--websocket-path",
        action="append",
        default=[],
        metavar="PATH",
        help="a location of its own for websockets (repeatable); default: / carries both",
    )
    nginx.add_argument(
        "--websocket-timeout",
        type=int,
        default=3600,
        metavar="SECONDS",
        help="how long an idle websocket stays open (default: %(default)s)",
    )
    nginx.add_argument(
        "--listen", metavar="[ADDRESS:]PORT", help="where nginx listens (default: port 80, or 443 with TLS)"
    )
    nginx.add_argument("--server-name", action="append", default=[], metavar="NAME", help="a server_name (repeatable)")
    nginx.add_argument("--tls-certificate", metavar="FILE", help="terminate TLS with this certificate chain (PEM)")
    nginx.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    nginx.add_argument(
        "--redirect-http", action="store_true", help="also redirect plain HTTP to HTTPS (needs --tls-certificate)"
    )
    nginx.add_argument("--http-port", type=int, metavar="PORT", help="port of that redirect (default: 80)")
    nginx.add_argument(
        "--debug-header",
        action="store_true",
        help="add X-Upstream-Addr (the process that answered) to responses; for debugging",
    )
    nginx.add_argument(
        "--standalone",
        metavar="DIR",
        help="print a complete nginx.conf keeping pid, logs and temp files in DIR (created if missing)",
    )
    nginx.add_argument(
        "--foreground", action="store_true", help="with --standalone: 'daemon off;' (for a supervisor or a test)"
    )
    nginx.add_argument(
        "--worker-processes", default="1", metavar="N", help="with --standalone: N or auto (default: %(default)s)"
    )
    nginx.add_argument(
        "--user", metavar="USER", help="with --standalone: the user workers run as when nginx starts as root"
    )
    nginx.add_argument(
        "-o", "--output", metavar="FILE", help="write to FILE instead of standard output (creating its directory)"
    )


def _add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser(
        "serve",
        help="run one server process per port, for nginx to balance between",
        description="Run one independent server process per port (uvicorn for an ASGI app, gunicorn for a "
        "WSGI app), forward SIGTERM/SIGINT to all of them, and exit when they have.",
        epilog=_SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("app", metavar="APP", help="the app as MODULE:ATTRIBUTE")
    serve.add_argument(
        "--ports", required=True, metavar="PORTS", help="ports, e.g. 8001-8004 or 8001,8002 (one process each)"
    )
    serve.add_argument("--host", default="127.0.0.1", help="the address they bind (default: %(default)s)")
    serve.add_argument(
        "--server",
        choices=("auto", "uvicorn", "gunicorn"),
        default="auto",
        help="auto (default: detect ASGI or WSGI by importing the app), uvicorn or gunicorn",
    )
    serve.add_argument(
        "--workers-per-port", type=int, default=1, metavar="N", help="workers behind each port (default: %(default)s)"
    )
    serve.add_argument("--app-dir", metavar="DIR", help="import the app from DIR (default: the current directory)")
    serve.add_argument(
        "--stop-timeout",
        type=int,
        default=30,
        metavar="SECONDS",
        help="after a stop signal, SIGKILL what is still running after this long (default: %(default)s)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (2 for bad input)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    passthrough: list[str] = []
    if "--" in args_list and "serve" in args_list[: args_list.index("--")]:
        split = args_list.index("--")
        args_list, passthrough = args_list[:split], args_list[split + 1 :]
    parser = _parser()
    args = parser.parse_args(args_list)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        if args.command == "nginx":
            return _nginx(args)
        if args.command == "serve":
            return _serve(args, passthrough)
    except _UsageError as error:
        return _fail(str(error), args.command)
    return _purge(args.url)


def _flag(error: ConfigError, flags: dict[str, str]) -> str:
    flag = flags.get(error.option, error.option)
    message = str(error)
    prefix = f"{error.option}: "
    return f"{flag}: {message[len(prefix) :] if message.startswith(prefix) else message}"


def _listen(text: str | None) -> tuple[str | None, int | None]:
    if text is None:
        return None, None
    match = re.fullmatch(r"(?:(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+):)?(\d+)", text)
    if match is None:
        raise _UsageError(f"--listen: {text!r} is not PORT, ADDRESS:PORT or [IPv6]:PORT")
    return match.group(1), int(match.group(2))


def _nginx(args: argparse.Namespace) -> int:
    from .nginx import TLS, NginxSpec, backends, render_snippet, render_standalone

    if args.tls_key and not args.tls_certificate:
        raise _UsageError("--tls-key: needs --tls-certificate")
    if args.tls_certificate and not args.tls_key:
        raise _UsageError("--tls-certificate: needs --tls-key")
    if args.redirect_http and not args.tls_certificate:
        raise _UsageError("--redirect-http: needs --tls-certificate and --tls-key")
    if args.http_port is not None and not args.redirect_http:
        raise _UsageError("--http-port: only applies with --redirect-http")
    if args.standalone is None:
        for flag, given in (("--foreground", args.foreground), ("--user", args.user)):
            if given:
                raise _UsageError(f"{flag}: only applies with --standalone")
    if args.keepalive is not None and args.keepalive < 1:
        raise _UsageError(f"--keepalive: must be at least 1, not {args.keepalive} (--no-keepalive turns it off)")
    if args.websocket_path and not args.websocket:
        raise _UsageError("--websocket-path: cannot be combined with --no-websocket")
    workers: int | Literal["auto"] = "auto"
    if args.worker_processes != "auto":
        if not args.worker_processes.isdigit():
            raise _UsageError(f"--worker-processes: {args.worker_processes!r} is not a number or auto")
        workers = int(args.worker_processes)
    address, port = _listen(args.listen)
    # A user means a relative path from where they type the command; left relative, nginx would resolve it
    # against its own prefix or configuration directory instead.
    directory = os.path.abspath(args.standalone) if args.standalone else args.standalone  # "" stays "", refused
    try:
        tls = None
        if args.tls_certificate:
            tls = TLS(
                certificate=os.path.abspath(args.tls_certificate),
                certificate_key=os.path.abspath(args.tls_key),
                redirect_http=args.redirect_http,
                http_port=80 if args.http_port is None else args.http_port,
            )
        spec = NginxSpec(
            servers=backends(*args.backends),
            upstream=args.upstream,
            balancing=args.balance,
            cookie_name=args.cookie_name,
            keepalive=args.keepalive,
            websocket=args.websocket,
            websocket_paths=tuple(args.websocket_path),
            websocket_timeout=args.websocket_timeout,
            listen_address=address,
            listen_port=port,
            server_names=tuple(args.server_name),
            tls=tls,
            debug_header=args.debug_header,
        )
        if directory is None:
            text = render_snippet(spec)
        else:
            text = render_standalone(
                spec,
                directory=directory,
                daemon=not args.foreground,
                worker_processes=workers,
                user=args.user,
            )
    except ConfigError as error:
        raise _UsageError(_flag(error, _NGINX_FLAGS)) from None
    if directory is not None:
        # nginx -p DIR fails on a missing DIR; it creates the temp directories and log files inside itself.
        _make_directory(directory, "--standalone")
    return _write(text, args.output)


def _make_directory(path: str, flag: str) -> None:
    if os.path.isdir(path):
        return
    if os.path.lexists(path):
        raise _UsageError(f"{flag}: {path} exists and is not a directory")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise _UsageError(f"{flag}: cannot create the directory {path}: {error.strerror or error}") from None


def _write(text: str, output: str | None) -> int:
    if output is None:
        sys.stdout.write(text)
        return 0
    parent = os.path.dirname(output)
    if parent:
        _make_directory(parent, "--output")
    partial = f"{output}.tmp-{os.getpid()}"
    try:
        with open(partial, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(partial, output)  # readers (nginx -s reload) never see half a file
    except OSError as error:
        if os.path.exists(partial):
            os.unlink(partial)
        raise _UsageError(f"--output: cannot write {output}: {error.strerror or error}") from None
    return 0


def _serve(args: argparse.Namespace, passthrough: Sequence[str]) -> int:
    from .nginx import parse_ports
    from .serve import Launcher, ServeSpec

    try:
        spec = ServeSpec(
            app=args.app,
            ports=parse_ports(args.ports, "ports"),
            host=args.host,
            server=args.server,
            workers_per_port=args.workers_per_port,
            app_dir=args.app_dir,
            server_args=tuple(passthrough),
            stop_timeout=args.stop_timeout,
        )
        launcher = Launcher(spec)
    except ConfigError as error:
        raise _UsageError(_flag(error, _SERVE_FLAGS)) from None
    return launcher.run()


def _purge(url: str) -> int:
    from .stores import SqliteStore, store_from_url

    if not url.lower().startswith("sqlite:"):
        return _fail("purge works on sqlite: URLs; Redis and MongoDB expire sessions themselves")
    try:
        store = store_from_url(url)
    except PersessionError as error:
        return _fail(str(error))
    if not isinstance(store, SqliteStore) or not store.path.is_file():
        return _fail(f"no SQLite session database at {getattr(store, 'path', url)}")
    try:
        removed = store.purge()
    except PersessionError as error:
        return _fail(str(error))
    finally:
        store.close()
    print(f"removed {removed} expired session(s) from {store.path}")
    return 0


def _fail(message: str, command: str | None = None) -> int:
    where = f"persession {command}" if command else "persession"
    print(f"{where}: error: {message}", file=sys.stderr)
    return 2

"""nginx in front of several app processes: the configuration as data, rendered to text.

The deployment this serves (the express-session + nginx recipe, in Python)::

    nginx :80/:443 ── upstream persession ─┬─ app process :8001 ┐
                                           ├─ app process :8002 ├─ one shared session store
                                           ├─ app process :8003 │  (Redis, MongoDB, SQLite)
                                           └─ app process :8004 ┘

Every process reads and writes the same store, so any of them can serve any
request; the balancing method only decides *which* one does. Describe the
deployment once, as an :class:`NginxSpec`, and render it::

    from persession.nginx import NginxSpec, backends, render_snippet

    spec = NginxSpec(servers=backends("127.0.0.1:8001-8004"), balancing="cookie", server_names=("example.com",))
    print(render_snippet(spec))  # upstream + maps + server blocks, for /etc/nginx/conf.d/

The spec is validated when it is built (a bad option raises
:class:`~persession.ConfigError` naming it); the renderers are pure functions
(no file is read or written) and their output is stable, so it can be
compared with a checked-in file. ``persession nginx`` is the same thing on the
command line.

Why each generated directive is there:

``upstream NAME { ... }``
    the app processes, one ``server host:port;`` line each.
``ip_hash;``
    the seed recipe's balancing: a client address (its first three octets, for
    IPv4) always reaches the same process while that process is up.
``hash $<key> consistent;``
    sticky by session: the key is the session cookie, so one session stays on
    one process (good for in-process caches and for long-polling transports
    that are not real websockets), and ``consistent`` (ketama) moves only the
    sessions of a process that goes away. A request without the cookie is keyed
    by its client address instead, so anonymous traffic still spreads out.
``least_conn;``
    the process with the fewest active connections; fine with a shared store,
    and the best choice when websockets hold connections open for long.
(nothing)
    round robin, nginx's default.
``keepalive N;``
    keeps up to N idle connections to the app processes open per nginx worker,
    saving a TCP handshake per request. It only works together with the next
    two directives.
``proxy_http_version 1.1;``
    nginx speaks HTTP/1.0 to upstreams by default, which has neither persistent
    connections nor the ``Upgrade`` mechanism websockets need.
``proxy_set_header Connection "";``
    by default nginx sends ``Connection: close`` upstream, which makes the app
    server close the connection after each response and defeats ``keepalive``.
    An empty value means the header is not sent at all.
``map $http_upgrade $<upstream>_connection_upgrade { default upgrade; '' ...; }``
    the ``Connection`` header for locations that carry websockets: ``upgrade``
    when the client asked for one, else ``''`` (no header, keepalive works) when
    keepalive is on, or ``close`` when it is off. ``Connection`` is hop-by-hop,
    so nginx never forwards the client's own; it must be set explicitly. The
    variable is named after the upstream, so it cannot clash with the
    ``$connection_upgrade`` map of the nginx documentation (which maps ``''``
    to ``close``) or with another persession snippet.
``proxy_set_header Upgrade $http_upgrade;``
    forwards the client's ``Upgrade: websocket`` (also hop-by-hop).
``proxy_read_timeout`` / ``proxy_send_timeout``
    an idle websocket would otherwise be closed after nginx's default 60 s.
``proxy_set_header Host $http_host;`` and ``X-Forwarded-For`` / ``-Proto`` / ``-Host`` / ``-Port``
    what the client asked for and from where. ``$http_host`` is the client's
    ``Host`` header as sent, port included (``$host``, the seed's choice, drops
    the port): the websocket guard's same-origin check compares ``Origin`` with
    it, so on a port other than 80/443 ``$host`` would refuse every browser's
    websocket (uvicorn's and gunicorn's deployment guides use ``$http_host``
    too). With ``SessionConfig(proxy=True)`` persession trusts
    ``X-Forwarded-Proto`` to decide whether the cookie gets ``Secure``.
    ``proxy_set_header`` is repeated in every location because a location
    that sets any header inherits none from its server.
``listen 443 ssl;``, ``ssl_certificate``, ``ssl_certificate_key``, ``ssl_protocols``
    TLS termination; the optional second server answers plain HTTP with a
    ``301`` to the same URL over HTTPS.
``add_header X-Upstream-Addr $upstream_addr always;``
    off by default: names the process that answered (``host:port``; a retried
    request lists every process tried, comma-separated). For tests and for
    operators debugging the balancing; do not leak it in production.

nginx retries a request on the next process when the chosen one refuses the
connection or times out (``proxy_next_upstream error timeout``, the default),
so a crashed process costs nothing but a log line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ._nginx_spec import (
    _INDENT,
    _VARIABLE_SAFE,
    BALANCING_METHODS,
    TLS,
    Backend,
    Balancing,
    NginxSpec,
    _check_path,
    _format_host,
    _is_int,
    backends,
    parse_ports,
)
from .exceptions import ConfigError

__all__ = [
    "Balancing",
    "BALANCING_METHODS",
    "Backend",
    "TLS",
    "NginxSpec",
    "backends",
    "parse_ports",
    "render_maps",
    "render_upstream",
    "render_servers",
    "render_snippet",
    "render_standalone",
]

# The public names defined in ._nginx_spec are this module's, for reprs, pickles and the docs.
for _public in (TLS, Backend, NginxSpec, backends, parse_ports):
    _public.__module__ = __name__
del _public


# --- rendering ------------------------------------------------------------------------------------------------


def _block(header: str, body: Sequence[str]) -> list[str]:
    return [f"{header} {{", *(f"{_INDENT}{line}" if line else "" for line in body), "}"]


def _connection_variable(spec: NginxSpec) -> str:
    return f"${spec.variable_prefix}_connection_upgrade"


def _balance_variable(spec: NginxSpec) -> str:
    return f"${spec.variable_prefix}_balance_key"


def _nginx_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_maps(spec: NginxSpec) -> str:
    """The ``map`` blocks the upstream and the locations need (http context); may be empty.

    - with ``websocket``: ``$<upstream>_connection_upgrade`` from ``$http_upgrade``
      (``''`` maps to ``''`` with keepalive, to ``close`` without);
    - with ``balancing="cookie"``: ``$<upstream>_balance_key``, the session
      cookie's value, or the client address when the request has no cookie.
    """
    blocks: list[list[str]] = []
    if spec.websocket:
        plain = "''" if spec.keepalive is not None else "close"
        why = (
            "# a plain request sends no Connection header, so the upstream connection stays open"
            if spec.keepalive is not None
            else "# a plain request asks the upstream to close (no keepalive)"
        )
        blocks.append(
            [
                "# Connection header for websocket-capable locations: upgrade when the client asks for it.",
                *_block(
                    f"map $http_upgrade {_connection_variable(spec)}", ["default upgrade;", why, f"''      {plain};"]
                ),
            ]
        )
    if spec.balancing == "cookie":
        name = spec.cookie_name
        if _VARIABLE_SAFE.match(name):
            body = ["''      $remote_addr;", f"default $cookie_{name};"]
            blocks.append(
                [
                    f"# Balancing key: the {name} cookie; the client address when there is none.",
                    *_block(f"map $cookie_{name} {_balance_variable(spec)}", body),
                ]
            )
        else:
            capture = f"{spec.variable_prefix}_session_cookie"
            pattern = f"~(?:^|;\\s*){re.escape(name)}=(?<{capture}>[^;]+)"
            body = [f"{_nginx_string(pattern)} ${capture};", "default $remote_addr;"]
            blocks.append(
                [
                    f"# Balancing key: the {name} cookie, read from the Cookie header (${{cookie_...}} cannot",
                    "# name it); the client address when there is none.",
                    *_block(f"map $http_cookie {_balance_variable(spec)}", body),
                ]
            )
    return "\n\n".join("\n".join(block) for block in blocks) + ("\n" if blocks else "")


def render_upstream(spec: NginxSpec) -> str:
    """The ``upstream`` block: the balancing method, one ``server`` per backend, ``keepalive``."""
    body: list[str] = []
    if spec.balancing == "ip_hash":
        body.append("# the same client address reaches the same process while it is up")
        body.append("ip_hash;")
    elif spec.balancing == "cookie":
        body.append("# the same session reaches the same process; consistent: few sessions move when one goes away")
        body.append(f"hash {_balance_variable(spec)} consistent;")
    elif spec.balancing == "least_conn":
        body.append("# the process with the fewest active connections")
        body.append("least_conn;")
    else:
        body.append("# round robin (nginx's default)")
    body.extend(f"server {backend};" for backend in spec.servers)
    if spec.keepalive is not None:
        body.append("# idle connections kept open to the processes, per worker")
        body.append(f"keepalive {spec.keepalive};")
    return "\n".join(_block(f"upstream {spec.upstream}", body)) + "\n"


def _proxy_headers(spec: NginxSpec) -> list[str]:
    return [
        f"proxy_pass http://{spec.upstream};",
        "proxy_set_header Host $http_host;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_set_header X-Forwarded-Host $http_host;",
        "proxy_set_header X-Forwarded-Port $server_port;",
    ]


def _plain_location(spec: NginxSpec) -> list[str]:
    body = _proxy_headers(spec)
    if spec.keepalive is not None:
        body += [
            "# HTTP/1.1 and no Connection header: what upstream keepalive needs",
            "proxy_http_version 1.1;",
            'proxy_set_header Connection "";',
        ]
    return body


def _websocket_location(spec: NginxSpec) -> list[str]:
    timeout = f"{spec.websocket_timeout}s"
    return [
        *_proxy_headers(spec),
        "# websockets: HTTP/1.1, and the hop-by-hop Upgrade/Connection headers set explicitly",
        "proxy_http_version 1.1;",
        "proxy_set_header Upgrade $http_upgrade;",
        f"proxy_set_header Connection {_connection_variable(spec)};",
        "# an idle websocket stays open this long (nginx's default is 60s)",
        f"proxy_read_timeout {timeout};",
        f"proxy_send_timeout {timeout};",
    ]


def _debug(spec: NginxSpec) -> list[str]:
    if not spec.debug_header:
        return []
    return ["# which process answered (debugging only)", "add_header X-Upstream-Addr $upstream_addr always;"]


def _listen(spec: NginxSpec, port: int, ssl: bool) -> str:
    address = f"{_format_host(spec.listen_address)}:" if spec.listen_address else ""
    return f"listen {address}{port}{' ssl' if ssl else ''};"


def _server_name(spec: NginxSpec) -> list[str]:
    return [f"server_name {' '.join(spec.server_names)};"] if spec.server_names else []


def render_servers(spec: NginxSpec) -> str:
    """The ``server`` blocks: the proxy (HTTP or HTTPS), and the HTTP → HTTPS redirect when asked."""
    blocks: list[list[str]] = []
    tls = spec.tls
    if tls is not None and tls.redirect_http:
        port = "" if spec.port == 443 else f":{spec.port}"
        redirect = [_listen(spec, tls.http_port, ssl=False), *_server_name(spec)]
        redirect.append(f"return 301 https://$host{port}$request_uri;")
        blocks.append(["# plain HTTP: redirect to HTTPS", *_block("server", redirect)])
    body = [_listen(spec, spec.port, ssl=tls is not None), *_server_name(spec)]
    if tls is not None:
        body += [
            f"ssl_certificate {tls.certificate};",
            f"ssl_certificate_key {tls.certificate_key};",
            f"ssl_protocols {' '.join(tls.protocols)};",
        ]
    if spec.websocket and not spec.websocket_paths:
        body += ["", *_block("location /", [*_websocket_location(spec), *_debug(spec)])]
    else:
        body += ["", *_block("location /", [*_plain_location(spec), *_debug(spec)])]
        for path in spec.websocket_paths:
            body += ["", *_block(f"location {path}", [*_websocket_location(spec), *_debug(spec)])]
    blocks.append(_block("server", body))
    return "\n\n".join("\n".join(block) for block in blocks) + "\n"


def _header(spec: NginxSpec, what: str) -> str:
    count = len(spec.servers)
    return (
        f"# persession: {count} app process{'es' if count != 1 else ''} behind nginx, {spec.balancing} balancing.\n"
        f"# {what}\n"
        "# Generated by persession.nginx: regenerate it rather than edit it.\n"
    )


def render_snippet(spec: NginxSpec) -> str:
    """The maps, the upstream and the server blocks: a file for nginx's ``conf.d/`` (http context)."""
    parts = [render_maps(spec), render_upstream(spec), render_servers(spec)]
    body = "\n".join(part for part in parts if part)
    return _header(spec, "Include it in nginx's http block, e.g. as /etc/nginx/conf.d/persession.conf.") + "\n" + body


@dataclass(frozen=True)
class _Runtime:
    directory: str
    pid: str
    error_log: str
    access_log: str
    daemon: bool
    worker_processes: int | Literal["auto"]
    worker_connections: int
    user: str | None

    def __post_init__(self) -> None:
        _check_path("directory", self.directory)
        for name in ("pid", "error_log", "access_log"):
            value = getattr(self, name)
            if not (name != "pid" and value in ("stderr", "off")):
                _check_path(name, value)
        if not isinstance(self.daemon, bool):
            raise ConfigError("daemon", f"must be True or False, not {self.daemon!r}")
        if self.worker_processes != "auto" and (not _is_int(self.worker_processes) or self.worker_processes < 1):
            raise ConfigError("worker_processes", f"must be 'auto' or an integer >= 1, not {self.worker_processes!r}")
        if not _is_int(self.worker_connections) or self.worker_connections < 16:
            raise ConfigError("worker_connections", f"must be an integer >= 16, not {self.worker_connections!r}")
        if self.user is not None and not re.fullmatch(r"[a-z_][a-z0-9_-]*\$?( [a-z_][a-z0-9_-]*)?", self.user):
            raise ConfigError("user", f"{self.user!r} is not a user name (optionally followed by a group)")


def render_standalone(
    spec: NginxSpec,
    *,
    directory: str,
    pid: str | None = None,
    error_log: str | None = None,
    access_log: str | None = None,
    daemon: bool = True,
    worker_processes: int | Literal["auto"] = 1,
    worker_connections: int = 1024,
    user: str | None = None,
) -> str:
    """A complete ``nginx.conf`` whose runtime files all live in ``directory``: for a non-root nginx.

    Run it with ``nginx -p DIRECTORY -c DIRECTORY/nginx.conf -e stderr``
    (``-e`` since nginx 1.19.5, so that nothing is written to the
    system's log before the configuration is read).

    :param directory: absolute path of the runtime directory; nginx creates the
        temp directories inside it (it must exist).
    :param pid: the pid file; default ``DIRECTORY/nginx.pid``.
    :param error_log: default ``DIRECTORY/error.log``; ``"stderr"`` is allowed.
    :param access_log: default ``DIRECTORY/access.log``; ``"off"`` is allowed.
    :param daemon: ``False`` renders ``daemon off;`` (nginx stays in the
        foreground, for a supervisor or a test; do not also pass ``-g 'daemon off;'``).
    :param worker_processes: default 1; ``"auto"`` for one per CPU.
    :param worker_connections: per worker, default 1024. Each websocket holds two.
    :param user: the user (and group) workers run as when nginx starts as
        root; default none (nginx's compiled-in ``nobody``). Ignored, with a
        warning from nginx, when nginx does not start as root.
    """
    _check_path("directory", directory)
    root = directory.rstrip("/")  # "" for "/", so that f"{root}/x" is "/x"
    runtime = _Runtime(
        directory=directory,
        pid=pid if pid is not None else f"{root}/nginx.pid",
        error_log=error_log if error_log is not None else f"{root}/error.log",
        access_log=access_log if access_log is not None else f"{root}/access.log",
        daemon=daemon,
        worker_processes=worker_processes,
        worker_connections=worker_connections,
        user=user,
    )
    main: list[str] = []
    if runtime.user is not None:
        main.append(f"user {runtime.user};")
    main.append(f"worker_processes {runtime.worker_processes};")
    if not runtime.daemon:
        main.append("daemon off;")
    main += [f"pid {runtime.pid};", f"error_log {runtime.error_log};", ""]
    main += _block("events", [f"worker_connections {runtime.worker_connections};"])
    http = [
        f"access_log {runtime.access_log};",
        "# temp files in the runtime directory, not in /var/lib/nginx (which needs root)",
        *(f"{kind}_temp_path {root}/{kind}_temp;" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")),
    ]
    for part in (render_maps(spec), render_upstream(spec), render_servers(spec)):
        if part:
            http += ["", *part.rstrip("\n").split("\n")]
    main += ["", *_block("http", http)]
    header = _header(spec, f"A complete nginx.conf: nginx -p {directory} -c {root}/nginx.conf -e stderr")
    return header + "\n" + "\n".join(main) + "\n"

"""persession.nginx and ``persession nginx``: validation, golden files, ``nginx -t``, and a real nginx.

Every combination of options is rendered and handed to ``nginx -t`` (as a
conf.d snippet inside a minimal nginx.conf, and as the standalone nginx.conf).
The running-nginx tests start nginx from the standalone configuration, with its
own prefix directory and free 127.0.0.1 ports, in front of small backends.
Set ``PERSESSION_UPDATE_GOLDEN=1`` to rewrite tests/golden/*.conf from the
current renderer.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import ssl
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from _servers import (
    Certificate,
    NginxServer,
    ServerProcess,
    check_snippet,
    check_standalone,
    free_port,
    make_certificate,
    nginx_binary,
    upstream_addresses,
    uvicorn_server,
    worker_user,
)
from persession import ConfigError
from persession.cli import main
from persession.nginx import (
    TLS,
    Backend,
    NginxSpec,
    backends,
    parse_ports,
    render_maps,
    render_snippet,
    render_standalone,
    render_upstream,
)

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden"
UPDATE_GOLDEN = os.environ.get("PERSESSION_UPDATE_GOLDEN", "") == "1"
TIMEOUT = 20.0


# --- the spec: validation -----------------------------------------------------------------------------------------

SERVERS = backends("127.0.0.1:8001-8004")
FAKE_TLS = TLS("/etc/ssl/certs/example.com.pem", "/etc/ssl/private/example.com.key")


def test_backends_from_ranges_and_lists() -> None:
    """A port range expands in order, IPv6 hosts are bracketed, and host+ports works like host:range."""
    assert [str(b) for b in backends("127.0.0.1:8001-8003")] == ["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"]
    assert [str(b) for b in backends("[::1]:9000", "app.internal:81")] == ["[::1]:9000", "app.internal:81"]
    assert backends(host="10.0.0.5", ports="8001,8003") == (Backend("10.0.0.5", 8001), Backend("10.0.0.5", 8003))
    assert parse_ports("8001, 8003-8004") == (8001, 8003, 8004)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("8001-7999", "ends before it starts", id="inverted range"),
        pytest.param("0", "out of range", id="port 0"),
        pytest.param("65536", "out of range", id="port too big"),
        pytest.param("80,80", "listed twice", id="duplicate"),
        pytest.param("http", "not a port", id="not a number"),
        pytest.param("", "not a port", id="empty"),
    ],
)
def test_parse_ports_rejects(text: str, message: str) -> None:
    """Bad port lists raise ConfigError naming the option and saying why."""
    with pytest.raises(ConfigError, match=message) as raised:
        parse_ports(text, "ports")
    assert raised.value.option == "ports"


def _spec(**options: object) -> NginxSpec:
    return NginxSpec(**{"servers": SERVERS, **options})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("build", "option", "message"),
    [
        pytest.param(lambda: NginxSpec(servers=()), "servers", "at least one", id="no servers"),
        pytest.param(lambda: backends("127.0.0.1:70000"), "servers", "out of range", id="port out of range"),
        pytest.param(lambda: backends("127.0.0.1"), "servers", "not 'host:port'", id="no port"),
        pytest.param(lambda: backends("::1:8001"), "servers", "IPv6", id="unbracketed IPv6"),
        pytest.param(lambda: backends("bad_host!:80"), "servers", "not a host name", id="bad host"),
        pytest.param(lambda: _spec(servers=("a:1", "a:1")), "servers", "listed twice", id="duplicate backend"),
        pytest.param(lambda: _spec(upstream="my app"), "upstream", "not a valid upstream name", id="upstream space"),
        pytest.param(lambda: _spec(upstream="{x}"), "upstream", "not a valid upstream name", id="upstream brace"),
        pytest.param(lambda: _spec(upstream=""), "upstream", "not a valid upstream name", id="upstream empty"),
        pytest.param(lambda: _spec(balancing="random"), "balancing", "must be one of", id="balancing"),
        pytest.param(lambda: _spec(cookie_name="a b"), "cookie_name", "not a valid cookie name", id="cookie name"),
        pytest.param(lambda: _spec(keepalive=0), "keepalive", "at least 1", id="keepalive 0"),
        pytest.param(lambda: _spec(keepalive=True), "keepalive", "at least 1", id="keepalive bool"),
        pytest.param(lambda: _spec(websocket="yes"), "websocket", "True or False", id="websocket str"),
        pytest.param(lambda: _spec(websocket_paths=("ws",)), "websocket_paths", "absolute", id="relative path"),
        pytest.param(lambda: _spec(websocket_paths=("/w s",)), "websocket_paths", "whitespace", id="path space"),
        pytest.param(lambda: _spec(websocket_paths=("/ws;",)), "websocket_paths", "whitespace", id="path semicolon"),
        pytest.param(lambda: _spec(websocket_paths=("/",)), "websocket_paths", "main location", id="path root"),
        pytest.param(lambda: _spec(websocket_paths=("/a", "/a")), "websocket_paths", "twice", id="path twice"),
        pytest.param(
            lambda: _spec(websocket=False, websocket_paths=("/ws",)), "websocket_paths", "websocket=True", id="no ws"
        ),
        pytest.param(lambda: _spec(websocket_timeout=0), "websocket_timeout", ">= 1", id="timeout 0"),
        pytest.param(lambda: _spec(listen_port=0), "listen_port", "out of range", id="listen port 0"),
        pytest.param(lambda: _spec(listen_port=65536), "listen_port", "out of range", id="listen port big"),
        pytest.param(lambda: _spec(listen_address="not an address"), "listen_address", "not a host", id="address"),
        pytest.param(lambda: _spec(server_names=("~^re$",)), "server_names", "not a host name", id="regex name"),
        pytest.param(lambda: _spec(server_names=("",)), "server_names", "not a host name", id="empty name"),
        pytest.param(lambda: TLS("", "/k.pem"), "certificate", "non-empty", id="certificate missing"),
        pytest.param(lambda: TLS("/c.pem", ""), "certificate_key", "non-empty", id="key missing"),
        pytest.param(lambda: TLS("c.pem", "/k.pem"), "certificate", "absolute", id="certificate relative"),
        pytest.param(lambda: TLS("/c $x.pem", "/k.pem"), "certificate", "whitespace", id="certificate unsafe"),
        pytest.param(lambda: TLS("/c.pem", "/k.pem", http_port=0), "http_port", "out of range", id="http port"),
        pytest.param(lambda: TLS("/c.pem", "/k.pem", protocols=("SSLv3",)), "protocols", "some of", id="protocols"),
        pytest.param(
            lambda: _spec(tls=TLS("/c.pem", "/k.pem", redirect_http=True, http_port=443)),
            "http_port",
            "cannot share",
            id="redirect on the TLS port",
        ),
        pytest.param(lambda: _spec(tls="on"), "tls", "persession.nginx.TLS", id="tls not TLS"),
        pytest.param(lambda: render_standalone(_spec(), directory="relative"), "directory", "absolute", id="dir"),
        pytest.param(
            lambda: render_standalone(_spec(), directory="/d", worker_processes=0), "worker_processes", ">= 1", id="wp"
        ),
        pytest.param(lambda: render_standalone(_spec(), directory="/d", pid="x.pid"), "pid", "absolute", id="pid"),
        pytest.param(lambda: render_standalone(_spec(), directory="/d", user="r;oot"), "user", "user name", id="user"),
    ],
)
def test_invalid_options_raise_config_error_naming_the_option(build: object, option: str, message: str | None) -> None:
    """Every bad option is refused at construction with a ConfigError whose option names it."""
    assert callable(build)
    with pytest.raises(ConfigError) as raised:
        build()
    assert raised.value.option == option
    if message is not None:
        assert message in str(raised.value)


def test_spec_defaults_and_port() -> None:
    """The defaults are the seed's: ip_hash, keepalive 32, websockets on /, port 80 (443 with TLS)."""
    spec = NginxSpec(servers=SERVERS)
    assert (spec.balancing, spec.keepalive, spec.websocket, spec.websocket_paths) == ("ip_hash", 32, True, ())
    assert spec.port == 80
    assert _spec(tls=FAKE_TLS).port == 443
    assert _spec(tls=FAKE_TLS, listen_port=8443).port == 8443
    assert _spec(servers=["127.0.0.1:9001-9002"]).servers == backends("127.0.0.1:9001-9002")


# --- the renderers: text properties -------------------------------------------------------------------------------


def test_keepalive_plain_requests_send_no_connection_header() -> None:
    """With keepalive, the upgrade map sends no Connection for plain requests; without, it sends close."""
    with_keepalive = render_maps(_spec(keepalive=16))
    assert re.search(r"^\s*''\s+'';$", with_keepalive, re.M)
    without = render_maps(_spec(keepalive=None))
    assert re.search(r"^\s*''\s+close;$", without, re.M)
    plain = render_snippet(_spec(keepalive=16, websocket_paths=("/ws",)))
    location_root = plain.split("location / {")[1].split("}")[0]
    assert 'proxy_set_header Connection "";' in location_root
    assert "proxy_http_version 1.1;" in location_root
    assert "keepalive 16;" in render_upstream(_spec(keepalive=16))
    assert "keepalive" not in render_upstream(_spec(keepalive=None))
    assert 'Connection "upgrade"' not in render_snippet(_spec())


def test_balancing_directives() -> None:
    """Each method renders its directive; cookie names that are not variable names go through a map regex."""
    assert "    ip_hash;" in render_upstream(_spec())
    assert "    least_conn;" in render_upstream(_spec(balancing="least_conn"))
    round_robin = render_upstream(_spec(balancing="round_robin"))
    assert not re.search(r"^\s*(ip_hash|least_conn|hash)\b", round_robin, re.M)
    simple = render_snippet(_spec(balancing="cookie", cookie_name="session"))
    assert "map $cookie_session $persession_balance_key {" in simple
    assert "hash $persession_balance_key consistent;" in simple
    colon = render_snippet(_spec(balancing="cookie", cookie_name="XXX:sess", upstream="my-app.v2"))
    assert "$cookie_XXX" not in colon
    assert "map $http_cookie $my_app_v2_balance_key {" in colon
    assert "(?<my_app_v2_session_cookie>[^;]+)" in colon
    assert "upstream my-app.v2 {" in colon


def test_separate_websocket_locations_and_debug_header() -> None:
    """Websocket paths get their own locations with the long timeout; the debug header is opt-in."""
    text = render_snippet(_spec(websocket_paths=("/ws", "/socket.io/"), websocket_timeout=600, debug_header=True))
    assert "location /ws {" in text
    assert "location /socket.io/ {" in text
    assert text.count("proxy_read_timeout 600s;") == 2
    assert text.count("add_header X-Upstream-Addr $upstream_addr always;") == 3
    assert "X-Upstream-Addr" not in render_snippet(_spec())


def test_tls_and_redirect_servers() -> None:
    """TLS listens with ssl and the certificate; the redirect keeps a non-default HTTPS port."""
    text = render_snippet(
        _spec(
            tls=TLS("/c.pem", "/k.pem", redirect_http=True, http_port=8080),
            listen_port=8443,
            listen_address="127.0.0.1",
            server_names=("example.com", "www.example.com"),
        )
    )
    assert "listen 127.0.0.1:8443 ssl;" in text
    assert "ssl_certificate /c.pem;" in text
    assert "listen 127.0.0.1:8080;" in text
    assert "return 301 https://$host:8443$request_uri;" in text
    assert text.count("server_name example.com www.example.com;") == 2
    default_port = render_snippet(_spec(tls=TLS("/c.pem", "/k.pem", redirect_http=True), listen_address="::1"))
    assert "return 301 https://$host$request_uri;" in default_port
    assert "listen [::1]:443 ssl;" in default_port


def test_standalone_keeps_runtime_files_in_its_directory() -> None:
    """pid, logs and every temp path live under the given directory; daemon off only when asked."""
    text = render_standalone(_spec(), directory="/srv/nginx/", daemon=False, worker_processes="auto")
    assert "pid /srv/nginx/nginx.pid;" in text
    assert "error_log /srv/nginx/error.log;" in text
    assert "access_log /srv/nginx/access.log;" in text
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        assert f"{kind}_temp_path /srv/nginx/{kind}_temp;" in text
    assert "daemon off;" in text
    assert "worker_processes auto;" in text
    assert "daemon" not in render_standalone(_spec(), directory="/srv/nginx")
    custom = render_standalone(_spec(), directory="/d", error_log="stderr", access_log="off", pid="/run/x.pid")
    assert "error_log stderr;" in custom
    assert "access_log off;" in custom
    assert "pid /run/x.pid;" in custom
    assert "pid /nginx.pid;" in render_standalone(_spec(), directory="/")


def test_renderers_are_deterministic() -> None:
    """Rendering the same spec twice gives the same text, and equal specs are equal."""
    assert render_snippet(_spec(balancing="cookie")) == render_snippet(_spec(balancing="cookie"))
    assert _spec(server_names=["a.example"]) == _spec(server_names=("a.example",))


# --- golden files ---------------------------------------------------------------------------------------------------

GOLDEN_SPECS: dict[str, tuple[NginxSpec, dict[str, object] | None]] = {
    # The seed recipe: ip_hash over four processes, keepalive 512, TLS on 443, websockets on /.
    "seed-ip-hash-tls": (
        _spec(keepalive=512, server_names=("example.com",), tls=FAKE_TLS),
        None,
    ),
    "cookie-connect-sid-ws-path": (
        _spec(balancing="cookie", cookie_name="connect.sid", websocket_paths=("/ws",), server_names=("example.com",)),
        None,
    ),
    "cookie-session-tls-redirect": (
        _spec(balancing="cookie", tls=TLS(FAKE_TLS.certificate, FAKE_TLS.certificate_key, redirect_http=True)),
        None,
    ),
    "least-conn-no-keepalive": (_spec(balancing="least_conn", keepalive=None), None),
    "round-robin-no-websocket-debug": (
        _spec(
            balancing="round_robin", websocket=False, debug_header=True, listen_address="127.0.0.1", listen_port=8080
        ),
        None,
    ),
    "standalone": (
        _spec(balancing="cookie", listen_address="127.0.0.1", listen_port=8080, debug_header=True),
        {"directory": "/var/lib/persession-nginx", "daemon": False},
    ),
}


@pytest.mark.parametrize("name", sorted(GOLDEN_SPECS))
def test_golden_file(name: str) -> None:
    """The rendered configuration equals tests/golden/<name>.conf exactly (PERSESSION_UPDATE_GOLDEN=1 rewrites it)."""
    spec, standalone = GOLDEN_SPECS[name]
    text = render_snippet(spec) if standalone is None else render_standalone(spec, **standalone)  # type: ignore[arg-type]
    path = GOLDEN / f"{name}.conf"
    if UPDATE_GOLDEN:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.is_file(), f"{path} is missing: run with PERSESSION_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{path.name} differs: run with PERSESSION_UPDATE_GOLDEN=1 and review the diff"


def test_no_stray_golden_files() -> None:
    """Every file in tests/golden/ belongs to a golden test (so a renamed case leaves nothing stale)."""
    assert {p.stem for p in GOLDEN.glob("*.conf")} == set(GOLDEN_SPECS)


# --- nginx -t on every combination -----------------------------------------------------------------------------------

BALANCING_CASES = {
    "ip_hash": {"balancing": "ip_hash"},
    "cookie": {"balancing": "cookie"},
    "cookie-colon-name": {"balancing": "cookie", "cookie_name": "XXX:sess"},
    "least_conn": {"balancing": "least_conn"},
    "round_robin": {"balancing": "round_robin"},
}
KEEPALIVE_CASES = {"keepalive": {"keepalive": 64}, "no-keepalive": {"keepalive": None}}
WEBSOCKET_CASES = {
    "no-ws": {"websocket": False},
    "ws-on-root": {"websocket": True},
    "ws-location": {"websocket": True, "websocket_paths": ("/ws", "/socket.io/")},
}
TLS_CASES = {"http": None, "tls": False, "tls-redirect": True}
COMBINATIONS = list(itertools.product(BALANCING_CASES, KEEPALIVE_CASES, WEBSOCKET_CASES, TLS_CASES))


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate shared by the module's TLS cases."""
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.mark.server
@pytest.mark.parametrize(("balancing", "keepalive", "websocket", "tls"), COMBINATIONS, ids="-".join)
def test_every_combination_passes_nginx_t(
    balancing: str, keepalive: str, websocket: str, tls: str, certificate: Certificate, tmp_path: Path
) -> None:
    """nginx -t accepts the snippet (in a minimal nginx.conf) and the standalone file for this combination."""
    nginx_binary()
    redirect = TLS_CASES[tls]
    tls_spec = None
    if redirect is not None:
        tls_spec = TLS(str(certificate.cert), str(certificate.key), redirect_http=redirect, http_port=free_port())
    spec = NginxSpec(
        servers=SERVERS,
        listen_address="127.0.0.1",
        listen_port=free_port(),
        server_names=("example.com",),
        tls=tls_spec,
        **BALANCING_CASES[balancing],  # type: ignore[arg-type]
        **KEEPALIVE_CASES[keepalive],  # type: ignore[arg-type]
        **WEBSOCKET_CASES[websocket],  # type: ignore[arg-type]
    )
    snippet = render_snippet(spec)
    assert ("Upgrade $http_upgrade" in snippet) == spec.websocket
    assert ("keepalive 64;" in snippet) == (spec.keepalive is not None)
    assert ("return 301 https://" in snippet) == bool(redirect)
    assert ("ssl_certificate " in snippet) == (tls_spec is not None)
    check_snippet(snippet, tmp_path / "snippet")
    standalone = tmp_path / "standalone"
    check_standalone(render_standalone(spec, directory=str(standalone), daemon=False, user=worker_user()), standalone)


def test_combination_count() -> None:
    """The matrix covers 5 balancing cases x 2 keepalive x 3 websocket x 3 TLS = 90 combinations."""
    assert len(COMBINATIONS) == 90


# --- the command line ---------------------------------------------------------------------------------------------


def run_cli(argv: list[str]) -> int:
    """The exit status of ``persession argv``, whether main returns it or argparse exits."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1


def test_cli_matches_the_library(capsys: pytest.CaptureFixture[str]) -> None:
    """The command's output is render_snippet of the equivalent spec."""
    argv = ["nginx", "127.0.0.1:8001-8004", "--balance", "cookie", "--cookie-name", "connect.sid"]
    argv += [
        "--websocket-path",
        "/ws",
        "--server-name",
        "example.com",
        "--listen",
        "127.0.0.1:8080",
        "--keepalive",
        "8",
    ]
    assert run_cli(argv) == 0
    expected = render_snippet(
        _spec(
            balancing="cookie",
            cookie_name="connect.sid",
            websocket_paths=("/ws",),
            server_names=("example.com",),
            listen_address="127.0.0.1",
            listen_port=8080,
            keepalive=8,
        )
    )
    assert capsys.readouterr().out == expected
    assert run_cli(["nginx", "[::1]:9000", "--no-keepalive", "--no-websocket", "--listen", "[::1]:81"]) == 0
    text = capsys.readouterr().out
    assert "server [::1]:9000;" in text
    assert "listen [::1]:81;" in text
    assert "keepalive" not in text
    assert "Upgrade" not in text


@pytest.mark.parametrize(
    ("argv", "flag", "message"),
    [
        pytest.param(["127.0.0.1:99999"], "BACKEND", "out of range", id="port out of range"),
        pytest.param(["127.0.0.1"], "BACKEND", "host:port", id="no port"),
        pytest.param(["a:1", "--upstream", "a b"], "--upstream", "upstream name", id="upstream"),
        pytest.param(["a:1", "--balance", "random"], "--balance", "invalid choice", id="balance"),
        pytest.param(["a:1", "--keepalive", "0"], "--keepalive", "at least 1", id="keepalive 0"),
        pytest.param(["a:1", "--keepalive", "x"], "--keepalive", "invalid int", id="keepalive text"),
        pytest.param(["a:1", "--keepalive", "3", "--no-keepalive"], "--no-keepalive", "not allowed", id="both"),
        pytest.param(["a:1", "--cookie-name", "a;b", "--balance", "cookie"], "--cookie-name", "cookie name", id="ck"),
        pytest.param(["a:1", "--websocket-path", "ws"], "--websocket-path", "absolute", id="ws path"),
        pytest.param(["a:1", "--websocket-path", "/ws", "--no-websocket"], "--websocket-path", "combined", id="ws+no"),
        pytest.param(["a:1", "--websocket-timeout", "0"], "--websocket-timeout", ">= 1", id="ws timeout"),
        pytest.param(["a:1", "--listen", "nope"], "--listen", "PORT", id="listen text"),
        pytest.param(["a:1", "--listen", "70000"], "--listen", "out of range", id="listen range"),
        pytest.param(["a:1", "--server-name", "a b"], "--server-name", "host name", id="server name"),
        pytest.param(["a:1", "--tls-certificate", "/c.pem"], "--tls-certificate", "needs --tls-key", id="no key"),
        pytest.param(["a:1", "--tls-key", "/k.pem"], "--tls-key", "needs --tls-certificate", id="no cert"),
        pytest.param(
            ["a:1", "--tls-certificate", "c;x.pem", "--tls-key", "/k.pem"], "--tls-certificate", "one of ;", id="unsafe"
        ),
        pytest.param(["a:1", "--redirect-http"], "--redirect-http", "needs --tls-certificate", id="redirect"),
        pytest.param(["a:1", "--http-port", "8080"], "--http-port", "--redirect-http", id="http port alone"),
        pytest.param(["a:1", "--foreground"], "--foreground", "--standalone", id="foreground"),
        pytest.param(["a:1", "--user", "www"], "--user", "--standalone", id="user"),
        pytest.param(["a:1", "--standalone", ""], "--standalone", "non-empty", id="standalone empty"),
        pytest.param(["a:1", "--standalone", "/d x"], "--standalone", "whitespace", id="standalone space"),
        pytest.param(["a:1", "--standalone", "/d", "--worker-processes", "x"], "--worker-processes", "auto", id="wp"),
        pytest.param(["a:1", "--output", "/dev/null/x.conf"], "--output", "is not a directory", id="output"),
        pytest.param([], "BACKEND", "required", id="no backend"),
    ],
)
def test_cli_bad_input_exits_2_naming_the_option(
    argv: list[str], flag: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad input exits with status 2 and one error line naming the option; nothing on stdout, no traceback."""
    assert run_cli(["nginx", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert flag in captured.err
    assert message in captured.err
    assert "Traceback" not in captured.err


def test_cli_output_file_is_written_whole(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--output writes the file (replacing an old one) and prints nothing; no temporary file is left."""
    target = tmp_path / "persession.conf"
    target.write_text("old")
    assert run_cli(["nginx", "127.0.0.1:8001", "--output", str(target)]) == 0
    assert capsys.readouterr().out == ""
    assert target.read_text() == render_snippet(NginxSpec(servers=backends("127.0.0.1:8001")))
    assert [p.name for p in tmp_path.iterdir()] == ["persession.conf"]


def test_cli_relative_paths_are_taken_from_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Relative --tls-certificate, --tls-key and --standalone are rendered absolute, against the current directory."""
    monkeypatch.chdir(tmp_path)
    argv = ["nginx", "127.0.0.1:8001", "--tls-certificate", "example.com.pem", "--tls-key", "keys/../example.com.key"]
    assert run_cli([*argv, "--standalone", "run"]) == 0
    text = capsys.readouterr().out
    assert f"ssl_certificate {tmp_path}/example.com.pem;" in text
    assert f"ssl_certificate_key {tmp_path}/example.com.key;" in text
    assert f"pid {tmp_path}/run/nginx.pid;" in text
    assert f"nginx -p {tmp_path}/run -c {tmp_path}/run/nginx.conf -e stderr" in text


def test_cli_creates_the_directories_it_writes_into(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--output creates its missing parent directories, --standalone its DIR (printing or writing), both nested."""
    monkeypatch.chdir(tmp_path)
    assert run_cli(["nginx", "127.0.0.1:8001", "--output", "conf/d/app.conf"]) == 0
    assert (tmp_path / "conf" / "d" / "app.conf").read_text().startswith("# persession:")
    assert run_cli(["nginx", "127.0.0.1:8001", "--standalone", str(tmp_path / "printed" / "run")]) == 0
    assert capsys.readouterr().out.startswith("# persession:")
    assert (tmp_path / "printed" / "run").is_dir()
    argv = ["nginx", "127.0.0.1:8001", "--standalone", "nginx-run", "--output", "nginx-run/nginx.conf"]
    assert run_cli(argv) == 0
    assert capsys.readouterr().out == ""
    assert sorted(p.name for p in (tmp_path / "nginx-run").iterdir()) == ["nginx.conf"]
    assert run_cli([*argv[:2], "--standalone", "nginx-run"]) == 0  # an existing DIR is fine
    assert (tmp_path / "nginx-run" / "nginx.conf").is_file()


@pytest.mark.parametrize(
    ("flag", "target", "message"),
    [
        pytest.param("--output", "file/x.conf", "--output: file exists and is not a directory", id="output parent"),
        pytest.param(
            "--output", "file/sub/x.conf", "--output: cannot create the directory file/sub: ", id="output nested"
        ),
        pytest.param("--standalone", "file", "exists and is not a directory", id="standalone"),
        pytest.param("--standalone", "file/sub", "--standalone: cannot create the directory ", id="standalone nested"),
    ],
)
def test_cli_directory_that_cannot_be_created_exits_2(
    flag: str,
    target: str,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A directory in the way of a regular file: one error line saying which and why, nothing written."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("")
    assert run_cli(["nginx", "127.0.0.1:8001", flag, target]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert message in captured.err
    assert "Traceback" not in captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_console_script_bad_input_has_no_traceback() -> None:
    """The installed command, given a bad port, exits 2 with one error line and no traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "persession", "nginx", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "persession nginx: error: BACKEND: port 0 is out of range (1-65535)"


def test_help_lists_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    """``persession nginx --help`` exits 0 and documents every option and the examples."""
    assert run_cli(["nginx", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--balance", "--keepalive", "--no-keepalive", "--websocket-path", "--tls-certificate"):
        assert option in out
    assert "--redirect-http" in out
    assert "--standalone" in out
    assert "examples" in out


# --- a running nginx in front of small backends ---------------------------------------------------------------------


class EchoHandler(BaseHTTPRequestHandler):
    """Answers every GET with JSON: which backend, the request headers, and the client (nginx) port."""

    protocol_version = "HTTP/1.1"  # so that nginx can keep connections open

    def do_GET(self) -> None:
        body = json.dumps(
            {
                "backend": self.server.server_address[1],
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "client_port": self.client_address[1],
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def echo_backends(count: int) -> Iterator[list[ThreadingHTTPServer]]:
    """``count`` threaded HTTP/1.1 echo servers on free 127.0.0.1 ports, shut down on exit."""
    servers = [ThreadingHTTPServer(("127.0.0.1", free_port()), EchoHandler) for _ in range(count)]
    threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    try:
        yield servers
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
        for thread in threads:
            thread.join(TIMEOUT)


def _echo_spec(servers: list[ThreadingHTTPServer], **options: object) -> NginxSpec:
    found = tuple(Backend("127.0.0.1", s.server_address[1]) for s in servers)
    defaults: dict[str, object] = {"listen_address": "127.0.0.1", "listen_port": free_port(), "debug_header": True}
    return NginxSpec(servers=found, **{**defaults, **options})  # type: ignore[arg-type]


@pytest.mark.server
def test_nginx_forwards_headers_and_keeps_upstream_connections(tmp_path: Path) -> None:
    """Through nginx the backend sees Host with its port, X-Forwarded-*, no Connection, and one reused connection."""
    with echo_backends(1) as servers, NginxServer(_echo_spec(servers, keepalive=4), tmp_path) as nginx:
        host = f"127.0.0.1:{nginx.spec.port}"
        seen = []
        for _ in range(10):
            with httpx.Client(timeout=TIMEOUT) as client:  # a new client connection every time
                response = client.get(f"{nginx.url}/path?q=1")
            assert response.status_code == 200
            assert upstream_addresses(response) == [f"127.0.0.1:{servers[0].server_address[1]}"]
            seen.append(response.json())
        headers = seen[0]["headers"]
        assert headers["host"] == host
        assert headers["x-forwarded-host"] == host
        assert headers["x-forwarded-for"] == "127.0.0.1"
        assert headers["x-forwarded-proto"] == "http"
        assert headers["x-forwarded-port"] == str(nginx.spec.port)
        assert "connection" not in headers
        assert "upgrade" not in headers
        ports = {answer["client_port"] for answer in seen}
        print(f"keepalive: 10 requests reached the backend over {len(ports)} upstream connection(s)")
        assert len(ports) == 1


@pytest.mark.server
def test_nginx_without_keepalive_closes_upstream_connections(tmp_path: Path) -> None:
    """Without keepalive nginx asks the backend to close, and each request opens a new upstream connection."""
    with echo_backends(1) as servers, NginxServer(_echo_spec(servers, keepalive=None), tmp_path) as nginx:
        seen = [httpx.get(f"{nginx.url}/", timeout=TIMEOUT).json() for _ in range(5)]
    assert all(answer["headers"]["connection"] == "close" for answer in seen)
    assert len({answer["client_port"] for answer in seen}) == 5


@pytest.mark.server
def test_debug_header_is_off_by_default(tmp_path: Path) -> None:
    """Without debug_header the response names no upstream."""
    with echo_backends(1) as servers, NginxServer(_echo_spec(servers, debug_header=False), tmp_path) as nginx:
        response = httpx.get(f"{nginx.url}/", timeout=TIMEOUT)
    assert response.status_code == 200
    assert "x-upstream-addr" not in response.headers


@pytest.mark.server
def test_cookie_balancing_with_a_colon_cookie_name(tmp_path: Path) -> None:
    """Hashing on XXX:sess (read by the map regex) keeps a session on one backend and spreads sessions out."""
    spec_options = {"balancing": "cookie", "cookie_name": "XXX:sess"}
    with (
        echo_backends(4) as servers,
        NginxServer(_echo_spec(servers, **spec_options), tmp_path) as nginx,
        httpx.Client(timeout=TIMEOUT) as client,
    ):

        def backend(cookie: str | None) -> str:
            headers = {"Cookie": f"other=1; XXX:sess={cookie}; last=2"} if cookie else {}
            return upstream_addresses(client.get(f"{nginx.url}/", headers=headers))[-1]

        same = Counter(backend("s%3Aabc.def") for _ in range(20))
        spread = Counter(backend(f"session-{i}") for i in range(40))
        anonymous = Counter(backend(None) for _ in range(10))
    print(f"cookie XXX:sess: one session -> {dict(same)}; 40 sessions -> {dict(spread)}")
    assert len(same) == 1
    assert len(spread) > 1
    assert len(anonymous) == 1  # no cookie: keyed by the client address, 127.0.0.1 here


@pytest.mark.server
def test_tls_and_http_redirect(tmp_path: Path) -> None:
    """nginx terminates TLS with the generated certificate, redirects plain HTTP, and forwards proto https."""
    certificate = make_certificate(tmp_path)
    http_port = free_port()
    tls = TLS(str(certificate.cert), str(certificate.key), redirect_http=True, http_port=http_port)
    with echo_backends(2) as servers, NginxServer(_echo_spec(servers, tls=tls), tmp_path / "nginx") as nginx:
        redirect = httpx.get(f"http://127.0.0.1:{http_port}/a/b?c=d", timeout=TIMEOUT)
        assert redirect.status_code == 301
        assert redirect.headers["location"] == f"https://127.0.0.1:{nginx.spec.port}/a/b?c=d"
        context = ssl.create_default_context(cafile=str(certificate.cert))
        with httpx.Client(verify=context, timeout=TIMEOUT) as client:
            response = client.get(f"{nginx.url}/a/b?c=d")
    assert response.status_code == 200
    assert response.json()["headers"]["x-forwarded-proto"] == "https"


@pytest.fixture
def starlette_backends(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    """Two uvicorn processes of tests/apps/starlette_app.py sharing one SQLite store."""
    env = {"PERSESSION_TEST_STORE": f"sqlite:///{tmp_path / 'sessions.db'}", "PERSESSION_TEST_SECRET": "nginx-test"}
    processes = [uvicorn_server("starlette_app:app", env=env) for _ in range(2)]
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(process) for process in processes]


def _websocket_status(url: str) -> int:
    """101 when the websocket opens, else the HTTP status of the refusal."""
    try:
        with connect(url, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as websocket:
            assert json.loads(websocket.recv(timeout=TIMEOUT)) == {"session": {}}
            return 101
    except InvalidStatus as refused:
        return refused.response.status_code


@pytest.mark.server
@pytest.mark.parametrize("keepalive", [8, None], ids=["keepalive", "no-keepalive"])
def test_websocket_locations(starlette_backends: list[ServerProcess], keepalive: int | None, tmp_path: Path) -> None:
    """Websockets upgrade on / when it carries them, and only on the websocket path when that is separate."""
    found = tuple(Backend("127.0.0.1", p.port) for p in starlette_backends)
    base = {"servers": found, "listen_address": "127.0.0.1", "keepalive": keepalive}
    combined = NginxSpec(listen_port=free_port(), **base)  # type: ignore[arg-type]
    separate = NginxSpec(listen_port=free_port(), websocket_paths=("/ws-write",), **base)  # type: ignore[arg-type]
    with NginxServer(combined, tmp_path / "combined") as nginx:
        assert _websocket_status(f"ws://127.0.0.1:{nginx.spec.port}/ws") == 101
        assert httpx.get(f"{nginx.url}/static", timeout=TIMEOUT).text == "no session here"
    with NginxServer(separate, tmp_path / "separate") as nginx:
        with connect(f"ws://127.0.0.1:{nginx.spec.port}/ws-write", open_timeout=TIMEOUT) as websocket:
            assert json.loads(websocket.recv(timeout=TIMEOUT)) == {"refused": "SessionReadOnly"}
        # /ws is in the plain location: nginx drops the hop-by-hop Upgrade, so the app sees a plain GET.
        assert _websocket_status(f"ws://127.0.0.1:{nginx.spec.port}/ws") == 404
        assert httpx.get(f"{nginx.url}/static", timeout=TIMEOUT).text == "no session here"

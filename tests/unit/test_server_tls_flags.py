"""TLS by default (issue 16), the pure parts: which listen addresses may serve plain HTTP,
the `shoal server` / `shoal up` / `shoal agent` flags, and the CLI's message for a server it
cannot use (down, untrusted certificate, certificate not valid for the address, http/https
mismatch)."""
from __future__ import annotations

import argparse
import ssl
from pathlib import Path

import pytest

from shoal.apiserver.settings import PlainHttpRefused, Settings, is_loopback_host, plain_http_refusal
from shoal.cli.cmd_agent import server_url
from shoal.cli.cmd_server import tls_settings
from shoal.cli.context import unreachable_message
from shoal.cli.main import build_parser
from shoal.machinery.client.httpconn import Disconnected

pytestmark = pytest.mark.unit


# ------------------------------------------------------------------------------ loopback
@pytest.mark.parametrize("host,loopback", [
    ("127.0.0.1", True), ("127.0.0.53", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("LocalHost", True), ("::ffff:127.0.0.1", True),
    ("0.0.0.0", False), ("::", False), ("", False), ("10.0.0.1", False), ("192.168.1.10", False),
    ("fd00::1", False), ("myhost", False), ("localhost.example.com", False), ("127.0.0.1.nip.io", False),
])
def test_is_loopback_host(host, loopback):
    assert is_loopback_host(host) is loopback
    assert (plain_http_refusal(host) is None) is loopback


def test_plain_http_refusal_names_the_address_and_the_way_out():
    why = plain_http_refusal("0.0.0.0")
    assert "not on 0.0.0.0" in why and "drop --insecure-http" in why and "loopback" in why
    assert "not on 0.0.0.0" in plain_http_refusal("")          # a bare :6443 listens everywhere


def test_settings_are_tls_by_default_and_refuse_plain_http_off_loopback(tmp_path):
    assert Settings(data_dir=tmp_path).tls is True
    assert Settings(data_dir=tmp_path, tls=False).tls is False                       # 127.0.0.1
    assert Settings(data_dir=tmp_path, tls=False, listen_host="::1").tls is False
    for host in ("0.0.0.0", "::", "10.1.2.3", "example.com"):
        with pytest.raises(PlainHttpRefused, match="only served on a loopback address"):
            Settings(data_dir=tmp_path, tls=False, listen_host=host)
        assert Settings(data_dir=tmp_path, listen_host=host).tls is True


# ------------------------------------------------------------------------------ flags
def _server(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["server", *argv])


def _up(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["up", *argv])


@pytest.mark.parametrize("argv,host,want", [
    ([], "127.0.0.1", (True, None)),                               # no flags: HTTPS
    (["--tls"], "0.0.0.0", (True, None)),                          # the old flag: still HTTPS
    (["--tls-san", "10.0.0.1"], "0.0.0.0", (True, None)),
    (["--insecure-http"], "127.0.0.1", (False, None)),
    (["--insecure-http"], "::1", (False, None)),
    (["--insecure-http"], "localhost", (False, None)),
])
def test_tls_settings(argv, host, want):
    for parse in (_server, _up):
        assert tls_settings(parse(*argv), host) == want


@pytest.mark.parametrize("argv,host,message", [
    (["--insecure-http"], "0.0.0.0", "--insecure-http: plain HTTP is only served on a loopback address"),
    (["--insecure-http"], "192.168.1.10", "not on 192.168.1.10"),
    (["--insecure-http", "--tls"], "127.0.0.1", "--tls and --insecure-http contradict each other"),
])
def test_tls_settings_refusals(argv, host, message):
    for parse in (_server, _up):
        tls, why = tls_settings(parse(*argv), host)
        assert tls is False and message in why


def test_no_tls_is_refused_with_the_new_flag_named(capsys):
    for cmd in ("server", "up"):
        with pytest.raises(SystemExit) as e:
            build_parser().parse_args([cmd, "--no-tls"])
        assert e.value.code == 2
        assert "--no-tls was replaced by --insecure-http" in capsys.readouterr().err


def test_server_and_up_defaults_are_https_on_loopback():
    s = _server()
    assert s.listen == ("127.0.0.1", 6443) and s.insecure_http is False and s.tls_san == []
    u = _up()
    assert u.listen == "127.0.0.1:6443" and u.insecure_http is False and u.tls_san == []
    assert _server("--tls-san", "a.example", "--tls-san", "10.0.0.9").tls_san == ["a.example", "10.0.0.9"]


def test_shoal_server_refuses_plain_http_off_loopback_before_touching_anything(tmp_path, capsys):
    from shoal.cli.cmd_server import run_server
    data = tmp_path / "server"
    rc = run_server(_server("--insecure-http", "--listen", "0.0.0.0:0", "--data-dir", str(data)))
    assert rc == 2 and not data.exists()
    assert "--insecure-http: plain HTTP is only served on a loopback address" in capsys.readouterr().err


def test_shoal_up_refuses_plain_http_off_loopback_before_touching_anything(tmp_path, capsys):
    from shoal.cli.cmd_up import run_up
    data = tmp_path / "up"
    rc = run_up(_up("--insecure-http", "--listen", "0.0.0.0:6443", "--data-dir", str(data), "--skip-checks"))
    assert rc == 2 and not data.exists()
    assert "not on 0.0.0.0" in capsys.readouterr().err
    rc = run_up(_up("--listen", "nonsense", "--data-dir", str(data), "--skip-checks"))
    assert rc == 2 and not data.exists()
    assert "expected HOST:PORT" in capsys.readouterr().err


# ------------------------------------------------------------------------------ agent --server
@pytest.mark.parametrize("value,want", [
    ("https://10.0.0.1:6443", "https://10.0.0.1:6443"),
    ("https://10.0.0.1:6443/", "https://10.0.0.1:6443"),
    ("10.0.0.1:6443", "https://10.0.0.1:6443"),                  # no scheme: every server serves HTTPS
    ("shoal.example:6443", "https://shoal.example:6443"),
    ("http://127.0.0.1:6443", "http://127.0.0.1:6443"),          # a loopback --insecure-http server
    ("http://[::1]:6443", "http://[::1]:6443"),
    ("http://localhost:6443", "http://localhost:6443"),
])
def test_agent_server_url(value, want):
    assert server_url(value) == want


@pytest.mark.parametrize("value,message", [
    ("http://10.0.0.1:6443", "plain HTTP would send the join token and the node credential in the clear"),
    ("http://shoal.example:6443", "use https://shoal.example:6443"),
    ("ftp://10.0.0.1", "expected https://HOST:PORT"),
    ("https://:6443", "expected https://HOST:PORT"),
    ("https://h:port", "the port is not a number"),
])
def test_agent_server_url_refusals(value, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        server_url(value)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["agent", "--server", value])


# ------------------------------------------------------------------------------ CLI messages
def _verify_error(message: str) -> ssl.SSLCertVerificationError:
    e = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {message}")
    e.verify_message = message
    return e


@pytest.mark.parametrize("server,cause,want", [
    ("https://127.0.0.1:6443", ConnectionRefusedError(111, "Connection refused"),
     "cannot reach the API server at https://127.0.0.1:6443: is it running? (shoal up / shoal server)"),
    ("https://127.0.0.1:6443", None,
     "cannot reach the API server at https://127.0.0.1:6443: is it running? (shoal up / shoal server)"),
    ("https://127.0.0.1:6443", _verify_error("unable to get local issuer certificate"),
     "cannot reach the API server at https://127.0.0.1:6443: its certificate is not signed by the CA in /k/config "
     "(unable to get local issuer certificate): use the kubeconfig the server wrote (shoal server and shoal up "
     "rewrite it at every start; the CA is <data-dir>/tls/ca.crt)"),
    ("https://10.0.0.5:6443", _verify_error("IP address mismatch, certificate is not valid for '10.0.0.5'."),
     "cannot reach the API server at https://10.0.0.5:6443: its certificate is not valid for 10.0.0.5 (IP address "
     "mismatch, certificate is not valid for '10.0.0.5'.): restart the server with --tls-san 10.0.0.5 (it issues "
     "a new certificate with the same CA), or use an address the certificate names"),
    ("https://127.0.0.1:6443", ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"),
     "cannot reach the API server at https://127.0.0.1:6443: the TLS handshake failed ([SSL: WRONG_VERSION_NUMBER] "
     "wrong version number); a server started with --insecure-http speaks plain HTTP: use the kubeconfig it wrote"),
    ("http://127.0.0.1:6443", Disconnected("the server closed the connection without answering"),
     "cannot reach the API server at http://127.0.0.1:6443: the server closed the connection without answering; "
     "shoal servers serve HTTPS unless started with --insecure-http: use the kubeconfig the server wrote (https:// "
     "and the cluster CA) instead of /k/config"),
    # an https server that hung up is not a scheme mismatch
    ("https://127.0.0.1:6443", Disconnected("the server closed the connection without answering"),
     "cannot reach the API server at https://127.0.0.1:6443: is it running? (shoal up / shoal server)"),
])
def test_unreachable_message(server, cause, want):
    assert unreachable_message(server, cause, "/k/config") == want


def test_unreachable_message_without_a_kubeconfig_path():
    got = unreachable_message("https://h:1", _verify_error("self-signed certificate"), None)
    assert "not signed by the CA in the kubeconfig (self-signed certificate)" in got


def test_detached_up_passes_the_tls_flags_to_its_child(tmp_path, monkeypatch):
    """`shoal up --detach` run from code (not argv) rebuilds the child's flags: the TLS ones too."""
    import shoal.cli.cmd_up as up
    seen = {}

    class Proc:
        pid = 424242

        def poll(self):
            return 1

        returncode = 1

    def popen(argv, **kw):
        seen["argv"] = argv
        return Proc()

    monkeypatch.setattr(up.subprocess, "Popen", popen)
    monkeypatch.setattr(up.sys, "argv", ["pytest"])
    args = _up("--detach", "--data-dir", str(tmp_path), "--listen", "0.0.0.0:7443", "--tls-san", "10.9.9.9",
               "--tls-san", "api.example", "--skip-checks")
    assert up._detach(args, Path(tmp_path)) == 1          # the fake child "exited"
    argv = seen["argv"]
    assert "--tls-san=10.9.9.9" in argv and "--tls-san=api.example" in argv and "--insecure-http" not in argv
    args = _up("--detach", "--data-dir", str(tmp_path), "--insecure-http", "--skip-checks")
    up._detach(args, Path(tmp_path))
    assert "--insecure-http" in seen["argv"]
    reparsed = build_parser().parse_args(seen["argv"][3:])
    assert reparsed.insecure_http is True

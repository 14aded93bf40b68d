"""The agent's DNS flags (cli.cmd_agent): --cluster-dns, --cluster-domain, --resolv-conf and the
DNSOptions they make; and the small pure helpers of agent.dns."""
from __future__ import annotations

import argparse

import pytest

from shoal.agent.dns import DNSOptions, bridge_address, formerr_for, parse_cluster_dns, resolv_conf_nameservers
from shoal.cli import cmd_agent

pytestmark = pytest.mark.unit


def parse(*argv):
    p = argparse.ArgumentParser()
    cmd_agent.add_dns_flags(p)
    return p.parse_args(list(argv))


@pytest.mark.parametrize("value, expected", [
    ("node", (True, ())), ("NODE", (True, ())), ("none", (False, ())),
    ("10.43.0.10", (True, ("10.43.0.10",))), ("10.0.0.2, fd00::a", (True, ("10.0.0.2", "fd00::a"))),
])
def test_parse_cluster_dns(value, expected):
    assert parse_cluster_dns(value) == expected


@pytest.mark.parametrize("value, message", [
    ("dns.example", "'dns.example' is not an IP address"),
    ("10.0.0.1,", "'' is not an IP address"),
    ("1.1.1.1,1.1.1.2,1.1.1.3,1.1.1.4", "at most 3 nameservers"),
])
def test_parse_cluster_dns_refuses(value, message):
    with pytest.raises(ValueError, match=message):
        parse_cluster_dns(value)


def test_flags_make_dns_options(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 10.0.0.2\n")
    args = parse("--cluster-domain", "Shoal.Test.", "--resolv-conf", str(conf))
    assert cmd_agent.dns_options(args, serve=True) == DNSOptions(domain="shoal.test", serve=True,
                                                                  resolv_conf=str(conf))
    assert cmd_agent.dns_options(args, serve=False).serve is False          # a hollow node
    args = parse("--cluster-dns", "10.43.0.10", "--resolv-conf", str(conf))
    assert cmd_agent.dns_options(args, serve=True) == DNSOptions(nameservers=("10.43.0.10",), serve=False,
                                                                  resolv_conf=str(conf))
    args = parse("--cluster-dns", "none", "--resolv-conf", str(conf))
    assert cmd_agent.dns_options(args, serve=True) == DNSOptions(enabled=False, serve=False, resolv_conf=str(conf))


def test_bad_cluster_domain_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse("--cluster-domain", "bad_domain")
    assert "--cluster-domain 'bad_domain'" in capsys.readouterr().err


@pytest.mark.parametrize("etc, systemd, pick", [
    ("nameserver 10.0.0.2\n", "nameserver 10.0.0.3\n", "etc"),
    ("nameserver 127.0.0.53\noptions edns0\n", "nameserver 10.0.0.3\n", "systemd"),   # the stub resolver
    ("nameserver 127.0.0.53\n", None, "etc"),
    ("nameserver fe80::1\nnameserver 0.0.0.0\n", "nameserver 127.0.0.1\n", "etc"),       # neither: the first
])
def test_default_resolv_conf_as_k3s_picks_it(tmp_path, etc, systemd, pick):
    paths = {"etc": tmp_path / "etc-resolv.conf", "systemd": tmp_path / "systemd-resolv.conf"}
    paths["etc"].write_text(etc)
    if systemd is not None:
        paths["systemd"].write_text(systemd)
    assert cmd_agent.default_resolv_conf((paths["etc"], paths["systemd"])) == paths[pick]


def test_resolv_conf_nameservers():
    assert resolv_conf_nameservers("# x\nnameserver 10.0.0.2\nnameserver  fd00::1 \nnameserver bad\n"
                                   "nameserver fe80::1%eth0\nsearch lan\n") == ["10.0.0.2", "fd00::1"]


def test_bridge_address():
    assert bridge_address("10.244.3.0/24") == "10.244.3.1"


def test_formerr_for():
    assert formerr_for(b"\x00" * 11) is None
    assert formerr_for(b"\x12\x34\x80" + b"\x00" * 9) is None      # QR set: a response
    assert formerr_for(b"\x12\x34\x01\x00" + b"\x00" * 8)[:4] == b"\x12\x34\x81\x81"   # QR RD RA, FORMERR

"""Name, label and identifier syntax checks, with Kubernetes' wording.

Each `is_*` function returns a list of problems (empty when the value is
fine), like Kubernetes' `k8s.io/apimachinery/pkg/util/validation`, so that a
caller can attach every problem to the field path it is checking. The
messages are Kubernetes' own, because users paste them into search engines.
"""
from __future__ import annotations

import ipaddress
import re

DNS1123_LABEL_FMT = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_FMT = DNS1123_LABEL_FMT + r"(\." + DNS1123_LABEL_FMT + r")*"
DNS1123_SUBDOMAIN_MAX = 253
QUALIFIED_NAME_FMT = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
QUALIFIED_NAME_MAX = 63
LABEL_VALUE_FMT = r"(" + QUALIFIED_NAME_FMT + r")?"
LABEL_VALUE_MAX = 63
IANA_SVC_NAME_MAX = 15
PERCENT_FMT = r"[0-9]+%"

# Anchored with \Z, not $: Python's $ also matches before a final newline, so "web\n" would
# pass as a DNS-1123 name (and reach a header or a log line as two lines).
_label_re = re.compile(f"^{DNS1123_LABEL_FMT}\\Z")
_subdomain_re = re.compile(f"^{DNS1123_SUBDOMAIN_FMT}\\Z")
_qualified_re = re.compile(f"^{QUALIFIED_NAME_FMT}\\Z")
_label_value_re = re.compile(f"^{LABEL_VALUE_FMT}\\Z")
_percent_re = re.compile(f"^{PERCENT_FMT}\\Z")
_svc_re = re.compile(r"^[-a-z0-9]+\Z")
_has_letter_re = re.compile(r"[a-z]")
_env_re = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*\Z")
_control_re = re.compile(r"[\x00-\x1f\x7f]")


def _regex_error(msg: str, fmt: str, *examples: str) -> str:
    ex = ",  or ".join(f"'{e}'" for e in examples)
    return f"{msg} (e.g. {ex}, regex used for validation is '{fmt}')"


def max_len_error(n: int) -> str:
    return f"must be no more than {n} characters"


def is_dns1123_label(value: str) -> list[str]:
    errs = []
    if len(value) > DNS1123_LABEL_MAX:
        errs.append(max_len_error(DNS1123_LABEL_MAX))
    if not _label_re.match(value):
        errs.append(_regex_error("a lowercase RFC 1123 label must consist of lower case alphanumeric characters "
                                 "or '-', and must start and end with an alphanumeric character",
                                 DNS1123_LABEL_FMT, "my-name", "123-abc"))
    return errs


def is_dns1123_subdomain(value: str) -> list[str]:
    errs = []
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        errs.append(max_len_error(DNS1123_SUBDOMAIN_MAX))
    if not _subdomain_re.match(value):
        errs.append(_regex_error("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                                 "characters, '-' or '.', and must start and end with an alphanumeric character",
                                 DNS1123_SUBDOMAIN_FMT, "example.com"))
    return errs


def mask_trailing_dash(name: str) -> str:
    """`generateName` prefixes may end in '-': check them as if that dash were a letter."""
    if len(name) > 1 and name.endswith("-"):
        return name[:-2] + "a"
    return name


def is_qualified_name(value: str) -> list[str]:
    """`[prefix/]name` as used for label keys, annotation keys and finalizers."""
    errs = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs.extend("prefix part " + m for m in is_dns1123_subdomain(prefix))
    else:
        return ["a qualified name " + _regex_error(
            "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
            "alphanumeric character", QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > QUALIFIED_NAME_MAX:
        errs.append("name part " + max_len_error(QUALIFIED_NAME_MAX))
    if name and not _qualified_re.match(name):
        errs.append("name part " + _regex_error(
            "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
            "alphanumeric character", QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc"))
    return errs


def is_label_value(value: str) -> list[str]:
    errs = []
    if len(value) > LABEL_VALUE_MAX:
        errs.append(max_len_error(LABEL_VALUE_MAX))
    if not _label_value_re.match(value):
        errs.append(_regex_error("a valid label must be an empty string or consist of alphanumeric characters, "
                                 "'-', '_' or '.', and must start and end with an alphanumeric character",
                                 LABEL_VALUE_FMT, "MyValue", "my_value", "12345"))
    return errs


def is_valid_port_name(value: str) -> list[str]:
    """IANA_SVC_NAME: what Kubernetes allows as a container port name."""
    errs = []
    if len(value) > IANA_SVC_NAME_MAX:
        errs.append(max_len_error(IANA_SVC_NAME_MAX))
    if not _svc_re.match(value):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if "--" in value:
        errs.append("must not contain consecutive hyphens")
    if value and not _has_letter_re.search(value):
        errs.append("must contain at least one letter (a-z)")
    if value.startswith("-") or value.endswith("-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def is_env_var_name(value: str) -> list[str]:
    if _env_re.match(value):
        return []
    return [_regex_error("a valid environment variable name must consist of alphabetic characters, digits, "
                         "'_', '-', or '.', and must not start with a digit",
                         "[-._a-zA-Z][-._a-zA-Z0-9]*", "my.env-name", "MY_ENV.NAME", "MyEnvName1")]


def control_characters(value: str) -> list[str]:
    """Problems of a value that must be one line of printable text (a name in a URL path, an
    HTTP header value): control characters (CR, LF, NUL, DEL, ...) are refused."""
    m = _control_re.search(value)
    if m is None:
        return []
    return [f"must not contain control characters (found {m.group()!r} at offset {m.start()})"]


def is_percent(value: str) -> bool:
    return bool(_percent_re.match(value))


def percent_error() -> str:
    return _regex_error("a valid percent string must be a numeric string followed by an ending '%'",
                        PERCENT_FMT, "1%", "93%")


def is_ip(value: str) -> list[str]:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return ["must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"]
    return []


def is_cidr(value: str) -> list[str]:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return ["must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"]
    if "/" not in value:
        return ["must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"]
    return []

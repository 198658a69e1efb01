"""Values a field's type accepts but the kernel, ssh or the health agent cannot use: interface
names the kernel's sysctl tree already holds, an ssh port outside 1-65535, an HTTP path or Host
with spaces (the agent fails every such check), a DNS name no resolver takes, an exec command
that names no program; each returns Problems, none raises.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from lvscluster.model.cluster import Cluster
from lvscluster.model.problems import Problem
from lvscluster.model.topology import Health

# /proc/sys/net/ipv{4,6}/conf/ holds `all` and `default`: an interface of either name cannot
# register its own sysctl directory, so the kernel refuses to create it (measured on 6.18:
# `ip link add all type veth peer name x` answers "RTNETLINK answers: Invalid argument")
SYSCTL_CONF_NAMES = ("all", "default")
DNS_NAME_MAX = 253  # characters of a name in text form, without the final dot (RFC 1035: 255 octets on the wire)
DNS_LABEL_MAX = 63
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(:\d+)?$")


def field_problems(cluster: Cluster) -> list[Problem]:
    """Every problem of a single field's value that its type let through."""
    return _interfaces(cluster) + _access(cluster) + _health(cluster)


def _interfaces(cluster: Cluster) -> list[Problem]:
    problems = []
    for li, link in enumerate(cluster.topology.links):
        for ei, ep in enumerate(link.endpoints):
            if ep.interface in SYSCTL_CONF_NAMES:
                problems.append(Problem(("links", li, "endpoints", ei, "interface"), (
                    f"interface name {ep.interface!r} is the kernel's /proc/sys/net/ipv4/conf/{ep.interface}, a sysctl "
                    "directory that is no interface: an interface of that name cannot register its own sysctls, so it cannot be created")))
    return problems


def _access(cluster: Cluster) -> list[Problem]:
    """An ssh access is read as a URL when deploy runs ssh: it needs a host, and a port ssh can use."""
    problems = []
    for name, node in cluster.topology.nodes.items():
        if node.access is None or not node.access.startswith("ssh://"):
            continue
        why = _ssh_problem(node.access)
        if why:
            problems.append(Problem(("nodes", name, "access"), f"access {node.access}: {why}"))
    return problems


def _ssh_problem(access: str) -> str | None:
    """Why deploy could not use an `ssh://` access (read with urlsplit, as deploy does)."""
    try:
        url = urlsplit(access)
        host, port = url.hostname, url.port
    except ValueError as exc:
        if "out of range" in str(exc):
            return "the port is outside 1-65535, so deploy could not run ssh"
        return (f"deploy cannot read it as ssh://user@host[:port] ({exc}); an IPv6 address goes in brackets, "
                "ssh://[2001:db8::1]:22")
    if not host:
        return "it names no host"
    if port == 0:
        return "port 0 is no port: deploy would leave it out and ssh would use 22; write the port sshd listens on, or none"
    return None


def _health(cluster: Cluster) -> list[Problem]:
    problems = []
    for vi, vip in enumerate(cluster.topology.vips):
        placed = [(("vips", vi, "health"), vip.health)]
        placed += [(("vips", vi, "services", si, "health"), svc.health) for si, svc in enumerate(vip.services)]
        placed += [(("vips", vi, "real_servers", ri, "health"), ref.health) for ri, ref in enumerate(vip.real_servers)]
        for loc, health in placed:
            if health is not None:
                problems += _health_values(loc, health)
    return problems


def _health_values(loc: tuple, health: Health) -> list[Problem]:
    problems = []
    if health.type in ("http", "https"):
        if any(c.isspace() for c in health.path):
            problems.append(Problem((*loc, "path"), (
                f"path {health.path!r} holds a space or line break, which cannot be sent in an HTTP request line: "
                "every check would fail (write a space as %20)")))
        if health.host is not None and not _HOST.match(health.host):
            problems.append(Problem((*loc, "host"), (
                f"host {health.host!r} is not a host name or address with an optional :port (no scheme, path or "
                "spaces): it is sent as the Host header (servers answer such a one with 400) and as the TLS server name")))
    if health.type == "dns" and health.query:
        why = _dns_name_problem(health.query)
        if why:
            problems.append(Problem((*loc, "query"), f"query {health.query!r} is not a DNS name: {why}"))
    if health.type == "exec" and health.command:
        program = health.command[0]
        if not program.strip():
            problems.append(Problem((*loc, "command", 0), "command[0] is empty: it names the program to run"))
        elif any(c.isspace() for c in program):
            problems.append(Problem((*loc, "command", 0), (
                f"command[0] {program!r} holds a space: the command runs without a shell, so this names one program "
                f"of that whole name; write its arguments as list items, e.g. {as_list(program)}"), warning=True))
    return problems


def _dns_name_problem(name: str) -> str | None:
    """Why `name` is not a DNS name a query can carry (None when it is)."""
    if any(c.isspace() for c in name):
        return "it holds a space"
    text = name[:-1] if name.endswith(".") and name != "." else name
    if len(text) > DNS_NAME_MAX:
        return f"{len(text)} characters, and a name has at most {DNS_NAME_MAX}"
    if text == ".":
        return None
    for label in text.split("."):
        if not label:
            return "it has an empty label (two dots in a row, or a leading dot)"
        if len(label) > DNS_LABEL_MAX:
            return f"label {label[:20]}... is {len(label)} characters, and a label has at most {DNS_LABEL_MAX}"
    return None


def as_list(command: str) -> str:
    """A shell-style command string as the argument list a check's `command` is: `[a, --b]`."""
    return "[" + ", ".join(command.split()) + "]"

"""`import keepalived`, `import ipvsadm`, `export ipvsadm`: parser, golden files, round trips.

Golden files live in tests/migrate/: NAME.conf -> NAME.lvs.yml (the topology) and NAME.notes (the
lines printed on stderr). Set LVS_UPDATE_GOLDEN=1 to rewrite them, then review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lvscluster.migrate.confparse import ConfError, read_config
from lvscluster.migrate.ipvsadm import import_ipvsadm, save_rules
from lvscluster.migrate.keepalived import import_keepalived
from lvscluster.migrate.to_topology import write_topology
from lvscluster.model.cluster import Cluster
from lvscluster.model.loader import load_topology, parse_topology
from lvscluster.plan.desired import plan_cluster
from lvscluster.state import IpvsDest, IpvsService, IpvsState

REPO = Path(__file__).resolve().parents[2]
MIGRATE = REPO / "tests" / "migrate"
KEEPALIVED = sorted((MIGRATE / "keepalived").glob("*.conf")) + sorted((MIGRATE / "kernel").glob("*.conf"))
DUMPS = sorted((MIGRATE / "ipvsadm").glob("*.rules"))


def _golden(path: Path, text: str) -> None:
    if os.environ.get("LVS_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{path} differs (LVS_UPDATE_GOLDEN=1 rewrites it)"


@pytest.mark.parametrize("conf", KEEPALIVED, ids=[c.stem for c in KEEPALIVED])
def test_keepalived_import_matches_its_golden_files_and_validates(conf: Path, monkeypatch) -> None:
    monkeypatch.chdir(conf.parent)
    imported = import_keepalived(conf.name)
    text = write_topology(imported)
    _golden(conf.with_suffix(".lvs.yml"), text)
    _golden(conf.with_suffix(".notes"), "".join(n.line + "\n" for n in imported.notes))
    parse_topology(text, conf.with_suffix(".lvs.yml"))


def _write(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_comments_quotes_braces_and_multiline_definitions(tmp_path) -> None:
    conf = _write(tmp_path, "k.conf", 'a "x # y" b ! comment\nc\n  d { e f } # more\n\\#g h\n'
                  '$RS= \\\n  real_server 10.0.0.1 80 { \\\n    weight 2 \\\n  }\nv {\n  $RS\n}\n')
    statements = read_config(conf).statements
    assert [s.words for s in statements] == [["a", "x # y", "b"], ["c"], ["d"], ["#g", "h"], ["v"]]
    assert statements[2].block[0].words == ["e", "f"] and str(statements[2].where) == f"{conf}:3"
    real_server = statements[4].block[0]
    assert real_server.words == ["real_server", "10.0.0.1", "80"] and real_server.block[0].words == ["weight", "2"]


def test_a_trailing_backslash_continues_only_a_definition(tmp_path) -> None:
    """keepalived reads `lb_kind \\` and `DR` as two unknown keywords (and then forwards by NAT)."""
    conf = _write(tmp_path, "k.conf", "virtual_server 10.0.0.1 80 {\n  lb_kind \\\n    DR\n}\n")
    with pytest.raises(ConfError, match=r"k.conf:2: 'lb_kind \\\\': keepalived continues only a \$NAME= definition"):
        read_config(conf)


@pytest.mark.parametrize("line", ["real_server 10.0.1.1 80", "MISC_CHECK"])
def test_a_block_keyword_without_braces_is_refused(tmp_path, line) -> None:
    """keepalived would read the lines after it as its block, up to the virtual_server's `}`."""
    text = "virtual_server 10.0.0.1 80 {\n  protocol TCP\n  real_server 10.0.1.2 80 {\n    weight 1\n  }\n"
    text = text.replace("    weight 1\n", "    " + line + "\n") if line == "MISC_CHECK" else text + "  " + line + "\n"
    conf = _write(tmp_path, "k.conf", text + "}\n")
    with pytest.raises(ConfError, match="has no '{ }' block: keepalived would read the lines after it"):
        import_keepalived(conf)


def test_includes_are_relative_to_the_including_file_and_sorted(tmp_path) -> None:
    _write(tmp_path, "d/b.conf", "second\n")
    _write(tmp_path, "d/a.conf", "first\ninclude ../e/*.inc\n")
    _write(tmp_path, "e/x.inc", "third\n")
    main = _write(tmp_path, "main.conf", "include d/*.conf\n")
    statements = read_config(main).statements
    assert [(s.keyword, s.where.line) for s in statements] == [("first", 1), ("third", 1), ("second", 1)]
    assert statements[1].where.file == str(tmp_path / "e" / "x.inc")


@pytest.mark.parametrize("text, message", [
    ("virtual_server 10.0.0.1 80 {\n  lb_algo rr\n", "k.conf:1: 'virtual_server 10.0.0.1 80 {' is never closed"),
    ("a\n}\n", "k.conf:2: '}' closes nothing"),
    ("x $NOPE\n", "k.conf:1: $NOPE is not defined"),
    ("include missing.conf\n", "k.conf:1: include missing.conf: no such file"),
    ('a "open\n', "k.conf:1: unterminated quote"),
    ("virtual_server 10.0.0.1 80 {\n lb_algo xyz\n}\n", "k.conf:2: lb_algo: unknown scheduler 'xyz'"),
    ("virtual_server 10.0.0.1 80 {\n lb_kind FOO\n}\n", "k.conf:2: lb_kind: expected NAT, DR or TUN"),
    ("virtual_server 10.0.0.1 80 {\n real_server 10.1.0.1 80 {\n  weight heavy\n }\n}\n",
     "k.conf:3: weight: 'heavy' is not a number"),
])
def test_errors_name_file_line_and_token(tmp_path, monkeypatch, text, message) -> None:
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, "k.conf", text)
    with pytest.raises(ConfError) as caught:
        import_keepalived("k.conf")
    assert str(caught.value).startswith(message)


def test_config_id_selects_at_lines(tmp_path) -> None:
    conf = _write(tmp_path, "k.conf", "@a one\n@^a two\n@b three\n")
    assert [s.keyword for s in read_config(conf, "a").statements] == ["one"]
    assert [s.keyword for s in read_config(conf).statements] == ["two"]


@pytest.mark.parametrize("name", ["demo", "nat", "tun"])
def test_export_ipvsadm_of_shipped_topologies(name: str) -> None:
    cluster = Cluster.from_topology(load_topology(REPO / "topology" / f"{name}.lvs.yml"))
    director = cluster.topology.nodes_with_role("director")[0]
    rules = "".join(line + "\n" for line in save_rules(plan_cluster(cluster, only=[director])[director].ipvs))
    _golden(MIGRATE / "export" / f"{name}.rules", rules)


@pytest.mark.parametrize("dump", DUMPS, ids=[d.stem for d in DUMPS])
def test_ipvsadm_import_then_export_gives_the_dump_back(dump: Path, tmp_path) -> None:
    topology, _ = parse_topology(write_topology(import_ipvsadm(dump)), tmp_path / "t.lvs.yml")
    cluster = Cluster.from_topology(topology)
    director = topology.nodes_with_role("director")[0]
    rules = [r for r in save_rules(plan_cluster(cluster, only=[director])[director].ipvs) if not r.startswith("#")]
    assert "".join(r + "\n" for r in rules) == dump.read_text()


def test_sort_follows_ipvsadm_c_comparisons() -> None:
    """ipvsadm subtracts unsigned addresses into an int: 1.0.0.1 sorts after 200.0.0.1."""
    services = tuple(IpvsService(protocol="tcp", address=a, port=80, scheduler="rr",
                                 dests=(IpvsDest(address="10.0.0.2", port=80), IpvsDest(address="10.0.0.1", port=80)))
                     for a in ("1.0.0.1", "200.0.0.1"))
    lines = save_rules(IpvsState(services=services))
    assert [line.split()[2] for line in lines if line.startswith("-A")] == ["200.0.0.1:80", "1.0.0.1:80"]
    assert lines[1].split()[4] == "10.0.0.1:80"


def test_ipvsadm_host_names_are_refused_port_names_read(tmp_path) -> None:
    dump = _write(tmp_path, "d.rules", "-A -t 10.9.0.1:http -s rr\n-a -t 10.9.0.1:http -r 10.8.0.5:http -g -w 1\n")
    imported = import_ipvsadm(dump)
    assert imported.services[0].port == 80 and imported.services[0].dests[0].port == 80
    _write(tmp_path, "n.rules", "-A -t www.example.com:80 -s rr\n")
    with pytest.raises(ConfError, match=r"n.rules:1: 'www.example.com' is a host name"):
        import_ipvsadm(tmp_path / "n.rules")


def test_what_keepalived_drops_or_zeroes_is_noted(tmp_path) -> None:
    """A virtual server without real servers is ignored; a NAT group's portless real server gets port 0."""
    conf = _write(tmp_path, "k.conf", "virtual_server 10.0.0.1 80 {\n  protocol TCP\n  sorry_server 10.0.1.9 80\n}\n"
                  "virtual_server_group G {\n  10.0.0.2 443\n}\nvirtual_server group G {\n  lb_kind NAT\n"
                  "  protocol TCP\n  real_server 10.0.1.1 { }\n}\n")
    imported = import_keepalived(conf)
    assert [(s.address, [(d.address, d.port) for d in s.dests]) for s in imported.services] == \
        [("10.0.0.2", [("10.0.1.1", 443)])]
    reasons = [n.reason for n in imported.notes]
    assert any("ignores a virtual server without real servers" in r for r in reasons)
    assert any("keepalived programs port 0 in a NAT group" in r for r in reasons)

"""The lab record and the provider interface, on the host without root: the record round-trips,
`provider_for` hands each lab to the provider that built it, and the CLI asks the provider."""

from __future__ import annotations

import json

import pytest

from lvscluster.errors import LvsClusterError
from lvscluster.lab import provider, record
from lvscluster.lab.containers import DockerLab
from lvscluster.lab.netns import NetnsLab
from lvscluster.lab.provider import LabProvider, lab_placements, provider_for, provider_of
from lvscluster.lab.record import LabRecord, read_record, write_record


@pytest.fixture(autouse=True)
def labs_dir(tmp_path, monkeypatch):
    """Lab records under a temporary directory, never this machine's."""
    monkeypatch.setattr(record, "STATE_ROOT", tmp_path / "labs")
    return tmp_path / "labs"


def netns_record() -> LabRecord:
    return LabRecord(name="unitlab", topology="/t/demo.lvs.yml", provider="netns",
                     namespaces={"d1": "unitlab.d1", "rs1": "unitlab.rs1", "_switch": "unitlab._switch"},
                     veths=[{"netns": "unitlab.d1", "name": "lan0", "peer_netns": "unitlab._switch", "peer": "p1"},
                            {"netns": "unitlab.rs1", "name": "eth0", "peer_netns": "unitlab._switch", "peer": "p2"}],
                     bridges=["br0"], frr_nodes=["d1"], frr_daemons={"d1": ["zebra", "ospfd"]},
                     test_servers=[{"node": "rs1", "netns": "unitlab.rs1", "tcp_ports": [80], "udp_ports": [53]}])


def docker_record() -> LabRecord:
    return LabRecord(name="unitlab", topology="/t/demo.lvs.yml", provider="docker", agents=False,
                     namespaces={"d1": "unitlab.d1", "rs1": "unitlab.rs1"},
                     containers={"d1": "unitlab.d1", "rs1": "unitlab.rs1"}, frr_nodes=["d1"])


@pytest.mark.parametrize("make", [netns_record, docker_record])
def test_a_record_reads_back_as_written(make, labs_dir) -> None:
    write_record(make())
    assert read_record("unitlab") == make()
    assert json.loads((labs_dir / "unitlab" / "lab.json").read_text())["provider"] == make().provider


def test_a_record_of_an_older_lvscluster_reads_with_defaults_and_unknown_keys_pass(labs_dir) -> None:
    (labs_dir / "old").mkdir(parents=True)
    (labs_dir / "old" / "lab.json").write_text(json.dumps(
        {"name": "old", "topology": "/t/old.lvs.yml", "namespaces": {"d1": "old.d1"}, "later": "a key of tomorrow"}))
    old = read_record("old")
    assert old.provider == "netns" and old.agents and old.containers == {} and old.namespaces == {"d1": "old.d1"}


@pytest.mark.parametrize("text", ["", "not json", "[]", '{"namespaces": {}}'])
def test_no_record_or_a_broken_one_reads_as_none(text, labs_dir) -> None:
    assert read_record("unitlab") is None
    (labs_dir / "unitlab").mkdir(parents=True)
    (labs_dir / "unitlab" / "lab.json").write_text(text)
    assert read_record("unitlab") is None


def test_a_node_that_leaves_is_forgotten_everywhere_in_the_record() -> None:
    lab = netns_record()
    lab.forget("rs1")
    assert lab.namespaces == {"d1": "unitlab.d1", "_switch": "unitlab._switch"}
    assert [v["netns"] for v in lab.veths] == ["unitlab.d1"] and lab.test_servers == []
    lab.forget("d1")
    assert lab.frr_nodes == [] and lab.frr_daemons == {} and lab.veths == []


def test_provider_for_picks_the_provider_that_built_the_lab() -> None:
    assert isinstance(provider_for(netns_record()), NetnsLab)
    assert isinstance(provider_for(docker_record()), DockerLab)
    assert isinstance(provider_for("docker"), DockerLab) and isinstance(provider_for("netns"), NetnsLab)
    assert all(isinstance(p, LabProvider) for p in provider.PROVIDERS.values())


def test_an_unknown_provider_names_the_lab_and_the_value(labs_dir) -> None:
    strange = LabRecord(name="unitlab", topology="/t/demo.lvs.yml", provider="lxc")
    with pytest.raises(LvsClusterError, match=r"lab 'unitlab' has an unknown provider 'lxc' in .*unitlab/lab\.json "
                                              r"\(known: netns, docker\)"):
        provider_for(strange)
    with pytest.raises(LvsClusterError, match=r"unknown lab provider 'lxc' \(known: netns, docker\)"):
        provider_for("lxc")
    write_record(strange)
    with pytest.raises(LvsClusterError, match="lab 'unitlab' has an unknown provider 'lxc'"):
        lab_placements("unitlab")


def test_a_lab_without_a_record_goes_to_the_provider_that_finds_its_leftovers(monkeypatch) -> None:
    monkeypatch.setattr(DockerLab, "leftovers", lambda self, lab: False)
    assert isinstance(provider_of("unitlab"), NetnsLab)
    monkeypatch.setattr(DockerLab, "leftovers", lambda self, lab: True)
    assert isinstance(provider_of("unitlab"), DockerLab)
    write_record(netns_record())
    assert isinstance(provider_of("unitlab"), NetnsLab)  # the record decides


def test_each_node_is_placed_as_its_provider_reaches_it() -> None:
    assert lab_placements("unitlab") is None
    write_record(netns_record())
    assert {n: (p.kind, p.target) for n, p in lab_placements("unitlab").items() if n != "_switch"} == \
        {"d1": ("netns", "unitlab.d1"), "rs1": ("netns", "unitlab.rs1")}
    write_record(docker_record())
    assert {n: (p.kind, p.target) for n, p in lab_placements("unitlab").items()} == \
        {"d1": ("docker", "unitlab.d1"), "rs1": ("docker", "unitlab.rs1")}


def test_each_provider_enters_a_node_its_own_way() -> None:
    assert NetnsLab().exec("unitlab", "d1", ["ip", "r"]) == ["ip", "netns", "exec", "unitlab.d1", "ip", "r"]
    assert DockerLab().exec("unitlab", "d1", ["sh"], tty=True) == ["docker", "exec", "-it", "unitlab.d1", "sh"]
    assert DockerLab().exec("unitlab", "d1", ["sh"]) == ["docker", "exec", "-i", "unitlab.d1", "sh"]


def test_shrinking_a_lab_that_is_not_up_or_a_node_it_lacks_changes_nothing() -> None:
    assert provider.shrink("unitlab", "d1") is False
    write_record(netns_record())
    assert provider.shrink("unitlab", "d9") is False
    assert read_record("unitlab") == netns_record()


@pytest.mark.parametrize("make, argv", [
    (netns_record, ["ip", "netns", "exec", "unitlab.d1", "hostname"]),
    (docker_record, ["docker", "exec", "-i", "unitlab.d1", "hostname"]),
])
def test_lab_exec_runs_the_command_as_the_labs_provider_says(make, argv, monkeypatch) -> None:
    from typer.testing import CliRunner

    from lvscluster.cli import app
    from lvscluster.cli import lab as cli_lab

    write_record(make())
    ran = []
    monkeypatch.setattr(cli_lab, "lab_vm", lambda name: None)
    monkeypatch.setattr(cli_lab.os, "execvp", lambda file, args: ran.append((file, args)))
    done = CliRunner().invoke(app, ["lab", "exec", "--lab", "unitlab", "d1", "--", "hostname"])
    assert done.exit_code == 0, done.output
    assert ran == [(argv[0], argv)]
    done = CliRunner().invoke(app, ["lab", "exec", "--lab", "unitlab", "d9", "--", "hostname"])
    assert done.exit_code == 2 and "lab unitlab has no node 'd9' (nodes: d1, rs1" in done.output

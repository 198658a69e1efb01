"""Deploy over ssh for real: an sshd in a lab namespace, a generated key, host keys verified.

The node is a real server (VIP on lo, ARP sysctls), which needs no IPVS, so this runs on any
kernel with network namespaces. The remote end is `lvscluster node observe|apply`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lvscluster.apply import frr
from lvscluster.apply.backends import ACCEPT_NEW_HOST_KEYS_ENV, SshBackend
from lvscluster.runfiles import JOURNAL_DIR
from lvscluster.errors import ApplyError
from lvscluster.netlink import Links, read_sysctls
from lvscluster.plan.diff import diff_node
from lvscluster.state import InterfaceAddress, NodeState

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(not Path(SSHD).exists(), reason="openssh-server is not installed"),
]
HOST_SIDE, NODE_SIDE = "10.250.77.1", "10.250.77.2"


def run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


@pytest.fixture
def ssh_node(tmp_path: Path):
    """A namespace with sshd on a management veth to this namespace; yields (netns, backend options)."""
    ns = f"lvst-ssh-{os.getpid()}"
    host_if = f"lvsts{os.getpid() % 100000}"
    run("ip", "netns", "add", ns)
    run("ip", "link", "add", host_if, "type", "veth", "peer", "name", "mgmt0", "netns", ns)
    run("ip", "addr", "add", f"{HOST_SIDE}/30", "dev", host_if)
    run("ip", "link", "set", host_if, "up")
    run("ip", "-n", ns, "addr", "add", f"{NODE_SIDE}/30", "dev", "mgmt0")
    run("ip", "-n", ns, "link", "set", "mgmt0", "up")
    run("ip", "-n", ns, "link", "set", "lo", "up")
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "host_key"))
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "client_key"))
    (tmp_path / "authorized_keys").write_text((tmp_path / "client_key.pub").read_text())
    os.chmod(tmp_path, 0o700)
    config = tmp_path / "sshd_config"
    config.write_text(f"""Port 2222
ListenAddress {NODE_SIDE}
HostKey {tmp_path / 'host_key'}
AuthorizedKeysFile {tmp_path / 'authorized_keys'}
PermitRootLogin prohibit-password
PasswordAuthentication no
UsePAM no
StrictModes no
PidFile {tmp_path / 'sshd.pid'}
""")
    Path("/run/sshd").mkdir(exist_ok=True)
    sshd = subprocess.Popen(["ip", "netns", "exec", ns, SSHD, "-D", "-e", "-f", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    known = tmp_path / "known_hosts"
    known.write_text(f"[{NODE_SIDE}]:2222 {(tmp_path / 'host_key.pub').read_text()}")
    options = ("-i", str(tmp_path / "client_key"), "-o", f"UserKnownHostsFile={known}", "-o", "ConnectTimeout=10")
    deadline = time.monotonic() + 20
    while subprocess.run(["ssh", *options, "-p", "2222", f"root@{NODE_SIDE}", "true"], capture_output=True).returncode:
        assert time.monotonic() < deadline, "sshd did not come up"
        time.sleep(0.3)
    yield ns, options, tmp_path
    journal_path = JOURNAL_DIR / f"netns-{os.stat(f'/run/netns/{ns}').st_ino}.json"
    assert not journal_path.exists() or journal_path.read_text()
    journal_path.unlink(missing_ok=True)
    sshd.terminate()
    sshd.wait(timeout=10)
    subprocess.run(["ip", "link", "del", host_if], capture_output=True)
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_deploy_a_real_server_over_ssh(ssh_node) -> None:
    ns, options, _ = ssh_node
    backend = SshBackend(f"ssh://root@{NODE_SIDE}:2222", ssh_options=options,
                         remote_command=f"{sys.prefix}/bin/lvscluster")
    desired = NodeState(name="rs1", role="real_server",
                        addresses=(InterfaceAddress(interface="lo", address="10.99.0.10/32"),),
                        sysctls={"net.ipv4.conf.all.arp_ignore": "1", "net.ipv4.conf.all.arp_announce": "2"})
    before = backend.observe(desired)
    actions = diff_node(desired, before)
    assert [a.kind for a in actions] == ["set_sysctl", "set_sysctl", "add_address"]
    backend.apply(actions)
    # checked in the namespace itself, not through the transport
    with Links(ns) as links:
        assert InterfaceAddress(interface="lo", address="10.99.0.10/32") in links.addresses({"lo"})
    assert read_sysctls(ns, ["net.ipv4.conf.all.arp_ignore", "net.ipv4.conf.all.arp_announce"]) == {
        "net.ipv4.conf.all.arp_ignore": "1", "net.ipv4.conf.all.arp_announce": "2"}
    assert diff_node(desired, backend.observe(desired)) == []
    assert backend.originals() == {"net.ipv4.conf.all.arp_ignore": before.sysctls["net.ipv4.conf.all.arp_ignore"],
                                   "net.ipv4.conf.all.arp_announce": before.sysctls["net.ipv4.conf.all.arp_announce"]}


def test_deploy_frr_over_ssh_into_a_pathspace(ssh_node) -> None:
    """A node whose FRR runs under a pathspace (-N): observe and apply reach that FRR, not the machine's."""
    ns, options, _ = ssh_node
    space = frr.pathspace_for(ns)
    frr.start(space, ns)
    try:
        backend = SshBackend(f"ssh://root@{NODE_SIDE}:2222", ssh_options=options,
                             remote_command=f"{sys.prefix}/bin/lvscluster", frr_pathspace=space)
        config = ("frr defaults traditional\nlog syslog informational\nservice integrated-vtysh-config\n"
                  "no zebra nexthop kernel enable\n!\nrouter ospf\n ospf router-id 10.255.0.77\n"
                  " network 10.250.77.0/30 area 0.0.0.0\nexit\n!\n")
        desired = NodeState(name="r9", role="router", frr=config)
        actions = diff_node(desired, backend.observe(desired))
        assert [a.kind for a in actions] == ["set_frr"]
        backend.apply(actions)
        assert "ospf router-id 10.255.0.77" in frr.running_config(space)
        assert diff_node(desired, backend.observe(desired)) == []
    finally:
        frr.stop(space)


def test_unknown_host_key_is_refused(ssh_node) -> None:
    _, options, tmp_path = ssh_node
    (tmp_path / "known_hosts").write_text("")
    backend = SshBackend(f"ssh://root@{NODE_SIDE}:2222", ssh_options=options,
                         remote_command=f"{sys.prefix}/bin/lvscluster")
    with pytest.raises(ApplyError, match="Host key verification failed"):
        backend.observe(NodeState(name="rs1", role="real_server"))
    # ssh's own "StrictHostKeyChecking no" (say in ~/.ssh/config) cannot loosen it either
    loose = SshBackend(f"ssh://root@{NODE_SIDE}:2222", ssh_options=(*options, "-o", "StrictHostKeyChecking=no"),
                       remote_command=f"{sys.prefix}/bin/lvscluster")
    with pytest.raises(ApplyError, match="Host key verification failed"):
        loose.observe(NodeState(name="rs1", role="real_server"))
    assert (tmp_path / "known_hosts").read_text() == ""


def test_a_new_host_key_is_accepted_only_when_the_operator_asks(ssh_node, monkeypatch: pytest.MonkeyPatch) -> None:
    _, options, tmp_path = ssh_node
    (tmp_path / "known_hosts").write_text("")
    monkeypatch.setenv(ACCEPT_NEW_HOST_KEYS_ENV, "1")
    backend = SshBackend(f"ssh://root@{NODE_SIDE}:2222", ssh_options=options,
                         remote_command=f"{sys.prefix}/bin/lvscluster")
    assert backend.observe(NodeState(name="rs1", role="real_server")).name == "rs1"
    assert (tmp_path / "host_key.pub").read_text().split()[1] in (tmp_path / "known_hosts").read_text()


def test_deploy_keeps_a_directors_record_on_the_node_for_its_agent(ssh_node) -> None:
    """A director reached over ssh: deploy's record of the topology it holds is kept on the node
    itself (where `lvscluster agent --local` reads it), in the same `node apply` as the actions;
    a destroy's record of None forgets it. (The ssh node shares this machine's /run here.)"""
    from lvscluster.runfiles import deployed_path

    ns, options, _ = ssh_node
    node = f"lvst-d{os.getpid()}"
    backend = SshBackend(f"ssh://root@{NODE_SIDE}:2222", ssh_options=options,
                         remote_command=f"{sys.prefix}/bin/lvscluster")
    desired = NodeState(name=node, role="director", addresses=(InterfaceAddress(interface="lo", address="10.99.0.11/32"),))
    path = deployed_path(node, None)
    try:
        backend.apply_recorded(diff_node(desired, backend.observe(desired)), node, '{"name": "recorded"}')
        assert path.read_text() == '{"name": "recorded"}'
        with Links(ns) as links:  # and the actions were carried out on the node
            assert InterfaceAddress(interface="lo", address="10.99.0.11/32") in links.addresses({"lo"})
        backend.apply_recorded([], node, None)
        assert not path.exists()
    finally:
        path.unlink(missing_ok=True)

"""A Docker lab director's processes: its health-check agent, and the scaletest's faults on it.

In a Docker lab a director is a container, and it runs like a machine of its own: FRR under its
watchfrr (started by `frrinit.sh`, as systemd's frr.service does), and the agent as
`lvscluster agent FILE --node NAME --local`, as `contrib/lvscluster-agent@.service` runs it,
with the topology copied to `AGENT_TOPOLOGY` inside the container.

Faults (`DockerFaults`, the scaletest's churn on a Docker lab):
- kill: every link down (netlink, in the namespace the lab attached) and every process of the
  container but its init killed with SIGKILL, FRR's pid files cleared: a power cut. IPVS state
  stays as it was, as in a namespace lab;
- revive: links up, FRR started by `frrinit.sh` (as at boot), the agent started again if one ran; the
  scaletest then deploys the node;
- crash-frr: SIGKILL to ospfd and bgpd; the container's watchfrr starts them again;
- restart-agent: SIGKILL to the agent, then started again.

The container's processes come from the Docker API (`top`), as host pids: signals are sent
from here, like the namespace lab's. Nothing parses docker CLI output.
"""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path

from lvscluster.apply.processes import kill_and_wait
from lvscluster.errors import ApplyError
from lvscluster.lab import faults

AGENT_TOPOLOGY = "/etc/lvscluster/topology.lvs.yml"
AGENT_LOG = "/var/log/lvscluster-agent.log"
AGENT_MARK = "lvscluster.cli agent"  # in the agent's command line (the container's `lvscluster` runs `-m lvscluster.cli`)
FRR_BIN = "/usr/lib/frr/"
KEEP = ("sleep infinity",)  # the container's own command, under its init: the container lives on


def processes(container) -> list[tuple[int, str]]:
    """(host pid, command line) of each process in the container, from the Docker API."""
    found = container.client.api.top(container.id, ps_args="-ww -eo pid,args")  # -ww: command lines whole
    titles = found.get("Titles") or []
    pid_at = titles.index("PID")
    return [(int(row[pid_at]), " ".join(row[pid_at + 1:])) for row in found.get("Processes") or []]


def _signal_and_wait(pids: list[int], timeout: float = 10) -> None:
    if left := kill_and_wait(pids, timeout):
        raise ApplyError(f"processes {left} still alive {timeout:g} s after SIGKILL")


def agent_pids(container) -> list[int]:
    """The host pids of the container's health-check agent (empty: none runs)."""
    return [pid for pid, args in processes(container) if AGENT_MARK in args]


def start_agent(container, node: str, topology_path: Path) -> None:
    """Copy the topology into the director's container and start its agent there (`--local`:
    the container is the director), logging to `AGENT_LOG` inside it."""
    data = Path(topology_path).read_bytes()
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        directory = tarfile.TarInfo(Path(AGENT_TOPOLOGY).parent.name)
        directory.type, directory.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(directory)
        entry = tarfile.TarInfo(f"{directory.name}/{Path(AGENT_TOPOLOGY).name}")
        entry.size, entry.mode, entry.mtime = len(data), 0o644, int(time.time())
        tar.addfile(entry, io.BytesIO(data))
    if not container.put_archive(str(Path(AGENT_TOPOLOGY).parent.parent), archive.getvalue()):
        raise ApplyError(f"{container.name}: could not copy the topology to {AGENT_TOPOLOGY}")
    container.exec_run(["sh", "-c", f"exec lvscluster agent {AGENT_TOPOLOGY} --node {node} --local >>{AGENT_LOG} 2>&1"],
                       detach=True)
    deadline = time.monotonic() + 30
    while not agent_pids(container):
        if time.monotonic() > deadline:
            _, log = container.exec_run(["tail", "-n", "20", AGENT_LOG])
            raise ApplyError(f"{container.name}: the agent did not start: {log.decode(errors='replace').strip()}")
        time.sleep(0.5)


def wait_for_frr(container, daemons: tuple[str, ...], timeout: float = 60) -> None:
    """Wait until every one of `daemons` in the container has its vty socket, read through the
    container's root as this machine sees it (no `docker exec` per look: under emulation each
    costs a runc start), then until vtysh answers with all of them running."""
    container.reload()
    run = Path(f"/proc/{container.attrs['State']['Pid']}/root/run/frr")
    deadline = time.monotonic() + timeout
    while not all((run / f"{daemon}.vty").exists() for daemon in daemons):
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    while True:
        code, output = container.exec_run(["vtysh", "-c", "show daemons"])
        if code == 0 and set(daemons) <= set(output.decode(errors="replace").split()):
            return
        if time.monotonic() > deadline:
            raise ApplyError(f"{container.name}: FRR did not answer with {', '.join(daemons)} within {timeout:g} s")
        time.sleep(1)


class DockerFaults:
    """The scaletest's faults on the directors of a Docker lab (see the module's docstring)."""

    def __init__(self, client, containers: dict[str, str], namespaces: dict[str, str], topology: Path):
        self.client, self.containers, self.namespaces, self.topology = client, containers, namespaces, topology
        self.had_agent: set[str] = set()  # killed nodes whose agent ran: a revive starts it again, as a boot does

    def _container(self, node: str):
        return self.client.containers.get(self.containers[node])

    def kill(self, node: str) -> list[str]:
        """Power cut: every link down, every process but the container's init killed; returns the links."""
        container = self._container(node)
        down = faults.pull_cables(self.namespaces[node])
        init = container.attrs["State"]["Pid"]
        if agent_pids(container):
            self.had_agent.add(node)
        _signal_and_wait([pid for pid, args in processes(container) if pid != init and args not in KEEP])
        container.exec_run(["sh", "-c", "rm -f /run/frr/*.pid /run/frr/*.vty /run/frr/*/*.pid /run/frr/*/*.vty"])
        return down

    def revive(self, node: str, links: list[str], daemons: tuple[str, ...]) -> None:
        """Links up, FRR started as at boot (and waited for), the agent started again."""
        container = self._container(node)
        faults.plug_cables(self.namespaces[node], links, [])
        code, output = container.exec_run(["/usr/lib/frr/frrinit.sh", "start"])
        if code != 0:
            raise ApplyError(f"{container.name}: frrinit.sh start exited {code}: {output.decode(errors='replace')[-800:]}")
        wait_for_frr(container, daemons)
        if node in self.had_agent:
            self.had_agent.discard(node)
            start_agent(container, node, self.topology)

    def crash_frr(self, node: str, daemons: tuple[str, ...] = faults.ROUTING_DAEMONS) -> list[str]:
        """SIGKILL to the routing daemons (watchfrr starts them again); returns the ones killed."""
        found = [(pid, args.split()[0].removeprefix(FRR_BIN)) for pid, args in processes(self._container(node))
                 if args.startswith(FRR_BIN)]
        chosen = [(pid, name) for pid, name in found if name in daemons]
        _signal_and_wait([pid for pid, _ in chosen], timeout=5)
        return [name for _, name in chosen]

    def restart_agent(self, node: str) -> None:
        """SIGKILL to the director's agent, then started again."""
        container = self._container(node)
        _signal_and_wait(agent_pids(container))
        start_agent(container, node, self.topology)

    def agent_runs(self, node: str) -> bool:
        """Whether the director's agent runs."""
        return bool(agent_pids(self._container(node)))

    def restart_dead_frr(self, node: str, daemons: tuple[str, ...]) -> bool:
        """After a crash no agent saw: wait for watchfrr to have started the daemons again; True
        (the caller deploys the node, which puts back any configuration they lost)."""
        wait_for_frr(self._container(node), daemons)
        return True

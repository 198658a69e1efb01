"""Node backends: how deploy observes and changes one node, whatever the transport.

    backend.observe(desired) -> NodeState   # the node's state, limited to what desired manages
    backend.apply(actions)                  # actions in order; the first failure raises

`KernelBackend` works on this machine: in a network namespace (lab nodes, `netns:NAME`) or
in the current one (`local`), through the netlink library and FRR's frr-reload.
`SshBackend` (ssh) and `DockerBackend` (docker exec) run `lvscluster node observe|apply` on the
node with JSON on stdin, so the far side is the same `KernelBackend`. `apply.reach.backend_for`
picks one for a placement; every backend says where it works (`placement`), so callers never ask
for its type.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import signal
from urllib.parse import urlsplit
from typing import Protocol

from pydantic import TypeAdapter

from lvscluster.apply import exabgp, frr
from lvscluster.apply.commands import DEFAULT_RUNNER, CommandFailed, Runner
from lvscluster.apply.placement import Placement
from lvscluster.errors import ApplyError
from lvscluster.files import write_atomic
from lvscluster.plan.actions import Action
from lvscluster.state import NodeState
from lvscluster.apply.processes import signal_if_same
from lvscluster.runfiles import deployed_path, journal_path, read_health_record

ACTIONS = TypeAdapter(list[Action])


class NodeBackend(Protocol):
    """What deploy needs from a node."""

    description: str
    placement: Placement  # where the node is: on this machine (its lock and records here) or not
    dry_run: bool  # nothing is changed (commands are printed, not run)

    def observe(self, desired: NodeState) -> NodeState:
        """The node's current state, shaped like `desired`."""

    def apply(self, actions: list[Action]) -> None:
        """Carry out `actions` in order; raise on the first failure."""

    def originals(self) -> dict[str, str]:
        """Sysctl values as they were before deploy first changed them."""

    def apply_recorded(self, actions: list[Action], node: str, topology: str | None) -> None:
        """`apply`, and in the same hold of the node's apply lock keep deploy's record of the
        topology director `node` now holds (None: forget it, a destroy) and wake its agent."""


def wake_agent(node: str, netns: str | None) -> bool:
    """Ask a director's running agent to converge now (SIGHUP), after its record or the node
    changed: it re-reads the topology and re-plans with its live verdict at once, not at its next
    check or repair round. False when no agent runs (its record names a process that is gone)."""
    record = read_health_record(node, netns) or {}
    pid = record.get("pid")
    return isinstance(pid, int) and signal_if_same(pid, record.get("pid_start"), signal.SIGHUP)


@contextlib.contextmanager
def apply_lock(netns: str | None):
    """Held while changing one node's kernel state: deploy and that node's agent take turns."""
    path = journal_path(netns).with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class KernelBackend:
    """A node on this machine: `netns` None means the current namespace; FRR by pathspace."""

    def __init__(self, netns: str | None, frr_pathspace: str | None, runner: Runner = DEFAULT_RUNNER):
        self.netns = netns
        self.frr_pathspace = frr_pathspace
        self.runner = runner
        self.placement = Placement("netns", netns) if netns else Placement("local")
        self.description = f"netns {netns}" if netns else "this machine"
        self._frr_running: str | None = None  # FRR's running config as observe last read it

    @property
    def dry_run(self) -> bool:
        """Commands are printed, not run."""
        return self.runner.dry_run

    def originals(self) -> dict[str, str]:
        """Sysctl values as they were before deploy first changed them."""
        try:
            return json.loads(journal_path(self.netns).read_text())
        except (OSError, ValueError):
            return {}

    def _journal(self, actions: list[Action]) -> None:
        """Record the pre-deploy value of every sysctl about to change for the first time; forget restored ones."""
        saved = self.originals()
        before = dict(saved)
        for action in actions:
            if action.kind != "set_sysctl":
                continue
            if action.reason.startswith("back to its value before deploy"):
                saved.pop(action.sysctl, None)
            elif action.previous is not None:
                saved.setdefault(action.sysctl, action.previous)
        if saved != before and not self.runner.dry_run:
            write_atomic(journal_path(self.netns), json.dumps(saved, indent=1, sort_keys=True))

    def observe(self, desired: NodeState) -> NodeState:
        """Kernel state through netlink; FRR equals desired when the running config has its shape."""
        from lvscluster.netlink import observe_node  # needs pyroute2 and a kernel; keep plan imports light

        state = observe_node(self.netns, desired)
        if desired.exabgp is not None and not self.runner.dry_run:
            state = state.model_copy(update={"exabgp": exabgp.observe(self.netns, desired.exabgp)})
        if desired.frr is None:
            return state
        self._frr_running, delta = None, None  # None: FRR is not running
        if frr.is_running(self.frr_pathspace):
            if self.runner.dry_run:
                delta = []
            else:
                self._frr_running = frr.running_config(self.frr_pathspace, self.runner)
                delta = frr.shape_delta(self._frr_running, desired.frr)
        if delta is None:
            observed_frr = None  # FRR not running: nothing configured
        elif not delta:
            observed_frr = desired.frr
        else:
            observed_frr = "! differs from the desired configuration:\n" + "\n".join(delta) + "\n"
        return state.model_copy(update={"frr": observed_frr})

    def apply(self, actions: list[Action]) -> None:
        """Netlink actions in batches, FRR configs through frr-reload, in the given order."""
        if self.runner.dry_run:
            return self.apply_under_lock(actions)
        with apply_lock(self.netns):
            self.apply_under_lock(actions)

    def apply_recorded(self, actions: list[Action], node: str, topology: str | None) -> None:
        """`apply`, and deploy's record of director `node` kept in the same hold (see `record_deployed`)."""
        if self.runner.dry_run:
            return self.apply_under_lock(actions)
        with apply_lock(self.netns):
            self.apply_under_lock(actions)
            self.record_deployed(node, topology)

    def record_deployed(self, node: str, topology: str | None) -> None:
        """Keep the topology (canonical JSON) director `node` now holds, for its agent, which
        converges to it and not to the file, and wake the agent; None forgets it (a destroy).
        The caller holds the node's apply lock: the agent never sees the new state with the old topology."""
        path = deployed_path(node, self.netns)
        if topology is None:
            path.unlink(missing_ok=True)
            return
        write_atomic(path, topology)
        wake_agent(node, self.netns)

    def apply_under_lock(self, actions: list[Action], frr_running: str | None = None) -> None:
        """`apply` for a caller that already holds `apply_lock(netns)` (the agent, a quick change).
        `frr_running`: FRR's running config as the caller knows it (else the last observed one)."""
        from lvscluster.apply.kernel import NETLINK_KINDS, apply_to_kernel

        if frr_running is not None:
            self._frr_running = frr_running
        self._journal(actions)
        batch: list[Action] = []
        for action in [*actions, None]:
            if action is not None and action.kind in NETLINK_KINDS:
                batch.append(action)
                continue
            if batch:
                if not self.runner.dry_run:
                    apply_to_kernel(self.netns, batch)
                batch = []
            if action is None:
                break
            if action.kind == "set_frr":
                frr.reload(self.frr_pathspace, action.frr, self.runner, running=self._frr_running)
                self._frr_running = None
            elif action.kind in ("set_exabgp", "del_exabgp") and self.runner.dry_run:
                continue
            elif action.kind == "set_exabgp":
                exabgp.apply(self.netns, action.exabgp)
            elif action.kind == "del_exabgp":
                exabgp.stop(self.netns)
            else:
                raise ApplyError(f"{self.description}: no backend for {action.kind} ({action.summary})")


def run_node_verb(verb: str, payload: str, frr_pathspace: str | None = None) -> str:
    """What `lvscluster node VERB` prints for `payload`, on this machine's kernel and FRR (the far
    end of every transport: ssh, `docker exec`, a child entered into a container).

    observe: a desired NodeState -> the observed one. apply: a list of actions, or
    `{"actions": [...], "record": {"node": NAME, "topology": TEXT or null}}` (the actions, and
    deploy's record of director NAME kept in the same hold of the apply lock, its agent woken).
    originals: the journaled sysctl values. ValueError names a payload it cannot read."""
    backend = KernelBackend(None, frr_pathspace)
    if verb == "observe":
        try:
            desired = NodeState.model_validate_json(payload)
        except ValueError as exc:
            raise ValueError(f"stdin is not a node state: {str(exc).splitlines()[0]}") from None
        return backend.observe(desired).model_dump_json()
    if verb == "apply":
        try:
            data = json.loads(payload)
            record = data.get("record") if isinstance(data, dict) else None
            actions = ACTIONS.validate_python(data["actions"] if isinstance(data, dict) else data)
            if isinstance(data, dict) and not (isinstance(record, dict) and isinstance(record.get("node"), str)
                                               and isinstance(record.get("topology"), (str, type(None)))):
                raise ValueError('"record" should be {"node": NAME, "topology": TEXT or null}')
        except (ValueError, KeyError) as exc:
            raise ValueError(f"stdin is not a list of actions (or actions and a record): "
                             f"{str(exc).splitlines()[0]}") from None
        if record is None:
            backend.apply(actions)
        else:
            backend.apply_recorded(actions, record["node"], record["topology"])
        return json.dumps({"applied": len(actions)})
    if verb == "originals":
        return json.dumps(backend.originals())
    raise ValueError(f"unknown node verb {verb}")


ACCEPT_NEW_HOST_KEYS_ENV = "LVSCLUSTER_SSH_ACCEPT_NEW_HOST_KEYS"


class NodeCommandBackend:
    """A node reached through a command: `lvscluster node observe|apply|originals` run there, JSON
    on stdin and stdout, so the far side is the same `KernelBackend`. Subclasses say how to get there."""

    description: str
    placement: Placement
    runner: Runner
    frr_pathspace: str | None = None  # the far side's FRR -N pathspace; None = that machine's FRR

    @property
    def dry_run(self) -> bool:
        """Commands are printed, not run."""
        return self.runner.dry_run

    def _argv(self, verb: str) -> list[str]:
        raise NotImplementedError

    def _call(self, verb: str, payload: str) -> str:
        argv = self._argv(verb)
        if self.frr_pathspace and verb != "originals":
            argv += ["--frr-pathspace", self.frr_pathspace]
        try:
            return self.runner.run(argv, input=payload, timeout=300).stdout
        except CommandFailed as exc:
            raise ApplyError(f"{self.description}: lvscluster node {verb} failed: {exc.output.strip() or exc}") from None

    def originals(self) -> dict[str, str]:
        """Pre-deploy sysctl values journaled on the node."""
        text = self._call("originals", "")
        return {} if self.runner.dry_run else json.loads(text or "{}")

    def observe(self, desired: NodeState) -> NodeState:
        """Ask the node for its state."""
        text = self._call("observe", desired.model_dump_json())
        if self.runner.dry_run:
            return NodeState(name=desired.name, role=desired.role)
        return NodeState.model_validate_json(text)

    def apply(self, actions: list[Action]) -> None:
        """Have the node carry out the actions."""
        self._call("apply", json.dumps(_dumped(actions)))

    def apply_recorded(self, actions: list[Action], node: str, topology: str | None) -> None:
        """Have the node carry out the actions and keep deploy's record of director `node` there,
        in one hold of its apply lock (`lvscluster node apply` with both on stdin)."""
        self._call("apply", json.dumps({"actions": _dumped(actions), "record": {"node": node, "topology": topology}}))


def _dumped(actions: list[Action]) -> list[dict]:
    """Actions as `lvscluster node apply` reads them on stdin."""
    return [a.model_dump(mode="json", exclude_none=True) for a in actions]


class SshBackend(NodeCommandBackend):
    """A remote node: `lvscluster node ...` over ssh (its host key must already be known)."""

    def __init__(self, target: str, runner: Runner = DEFAULT_RUNNER, ssh_options: tuple[str, ...] = (),
                 remote_command: str = "lvscluster", frr_pathspace: str | None = None,
                 accept_new_host_keys: bool | None = None):
        self.target = target  # ssh://user@host[:port]
        if accept_new_host_keys is None:  # opt-in only, by the operator: LVSCLUSTER_SSH_ACCEPT_NEW_HOST_KEYS=1
            accept_new_host_keys = os.environ.get(ACCEPT_NEW_HOST_KEYS_ENV, "") == "1"
        # the node's host key must already be known (known_hosts); ssh's own config cannot loosen this
        self.host_key_checking = "accept-new" if accept_new_host_keys else "yes"
        self.runner = runner
        self.frr_pathspace = frr_pathspace
        self.ssh_options = ssh_options
        self.remote_command = remote_command
        self.placement = Placement("ssh", target)
        self.description = target

    def _argv(self, verb: str) -> list[str]:
        url = urlsplit(self.target)
        argv = ["ssh", "-o", "BatchMode=yes", "-o", f"StrictHostKeyChecking={self.host_key_checking}", *self.ssh_options]
        if url.port:
            argv += ["-p", str(url.port)]
        if url.username:
            argv += ["-l", url.username]
        # ssh hands the remote shell one string: it holds fixed words only, never a topology value
        return argv + [url.hostname, "--", *shlex.split(self.remote_command), "node", verb]


class DockerBackend(NodeCommandBackend):
    """A node that is a container: `docker exec -i CONTAINER lvscluster node ...`."""

    def __init__(self, container: str, runner: Runner = DEFAULT_RUNNER, command: str = "lvscluster"):
        self.container = container
        self.runner = runner
        self.command = command
        self.placement = Placement("docker", container)
        self.description = str(self.placement)

    def _argv(self, verb: str) -> list[str]:
        return ["docker", "exec", "-i", self.container, *shlex.split(self.command), "node", verb]

"""`EnteredContainerBackend`: a lab container on this machine, reached by forking into its namespaces.

`DockerBackend` runs `docker exec -i CONTAINER lvscluster node ...`: a new Python in the container
for every node and verb. In a lab VM under software emulation the first deploy of the demo's six
containers did not get one `node observe` answered within 300 s (a new Python imports pydantic,
rich and pyroute2 over 9p). Here a child forked from the warm deploy process enters the
container's mount, network and UTS namespaces (`setns`, as `nsenter` does) and runs the same
`KernelBackend` that `lvscluster node` would: the container's own filesystem (its FRR, /etc/frr,
vtysh sockets), network stack and IPVS, with nothing to start. The checkout and the Python are
bind-mounted in the container at the same paths, so a module imported after entering loads too.
"""

from __future__ import annotations

import ctypes
import os

from lvscluster.apply.backends import DockerBackend, run_node_verb
from lvscluster.apply.commands import DEFAULT_RUNNER, Runner
from lvscluster.apply.processes import exit_forked_child
from lvscluster.errors import ApplyError

# all opened before entering any (after the mount namespace, /proc is the container's); the pid
# namespace applies to children only, so the verb runs in a grandchild forked after entering:
# there /proc/self resolves in the container's /proc (the first try, without it, failed on
# /proc/self/ns/net)
NAMESPACES = (("net", 0x40000000), ("uts", 0x04000000), ("pid", 0x20000000), ("mnt", 0x00020000))


def _setns(fd: int, kind: int) -> None:
    if hasattr(os, "setns"):  # Python 3.12+
        os.setns(fd, kind)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, kind) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def container_pid(container: str) -> int:
    """The pid of a running container's first process, from the Docker API."""
    import docker  # the lab is up, so its dockerd runs

    pid = docker.from_env().containers.get(container).attrs["State"]["Pid"]
    if not pid:
        raise ApplyError(f"docker:{container}: the container is not running")
    return pid


class EnteredContainerBackend(DockerBackend):
    """A lab container reached by a forked child entering its namespaces (no new Python)."""

    def __init__(self, container: str, runner: Runner = DEFAULT_RUNNER):
        super().__init__(container, runner)
        self.description = f"docker:{container}"

    def _call(self, verb: str, payload: str) -> str:
        self.runner.recorded.append(["enter", self.container, "lvscluster", "node", verb])
        if self.runner.dry_run:
            return ""
        pid = container_pid(self.container)
        fds = [(os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY), kind) for name, kind in NAMESPACES]
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        child = os.fork()
        if child == 0:
            code = 1
            try:
                os.close(out_r)
                os.close(err_r)
                for fd, kind in fds:
                    _setns(fd, kind)
                grandchild = os.fork()
                if grandchild:
                    os.close(out_w)
                    code = os.waitstatus_to_exitcode(os.waitpid(grandchild, 0)[1])
                else:
                    result = run_node_verb(verb, payload).encode()
                    with os.fdopen(out_w, "wb") as out:
                        out.write(result)
                    code = 0
            except BaseException as exc:  # noqa: BLE001 - the parent reports it; never return into it
                os.write(err_w, f"{type(exc).__name__}: {exc}".encode()[-4000:])
            finally:
                exit_forked_child(code)
        for fd, _ in fds:
            os.close(fd)
        os.close(out_w)
        os.close(err_w)
        with os.fdopen(out_r, "rb") as out, os.fdopen(err_r, "rb") as err:
            text = out.read().decode()
            error = err.read().decode(errors="replace")
        _, status = os.waitpid(child, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise ApplyError(f"{self.description}: node {verb} failed: {error.strip() or 'no message'}")
        return text

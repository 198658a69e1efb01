"""One director's agent as a running service: enter its namespace, serve metrics, run until a signal.

`lvscluster agent` (the CLI, systemd) and `lab up` (a forked daemon per director) both start an
agent through `run_agent`, so a lab's agents are the same program an operator runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from lvscluster.errors import LvsClusterError
from lvscluster.runfiles import health_record_path

if TYPE_CHECKING:  # the agent imports the apply layer: only a running agent pays for it
    from lvscluster.apply.backends import KernelBackend
    from lvscluster.health.agent import Agent

DEFAULT_METRICS = "127.0.0.1:9586"


def enter_netns(name: str) -> None:
    """Move this process into the director's namespace, so checks leave from the director."""
    from pyroute2 import netns

    try:
        here, there = os.stat("/proc/self/ns/net"), os.stat(f"/run/netns/{name}")
    except OSError:
        raise LvsClusterError(f"network namespace {name} does not exist (is the lab up?)") from None
    if (here.st_ino, here.st_dev) != (there.st_ino, there.st_dev):
        netns.setns(name)


def run_agent(topology: Path, node: str, backend: "KernelBackend", listen: tuple[str, int] | None,
              repair_interval: float = 10.0) -> None:
    """Run the agent of director `node` (on this machine: `backend`) until SIGTERM or SIGINT;
    Prometheus metrics on `listen` (None: off). Its record is removed when it stops."""
    from lvscluster.health.agent import Agent

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if backend.netns:
        enter_netns(backend.netns)
    runner = Agent(Path(topology), node, backend, repair_interval=repair_interval)
    runner.load()
    if listen:
        from lvscluster.health.metrics import serve

        try:
            serve(runner, *listen)
        except OSError as exc:  # most often: this director's agent already runs and holds the port
            raise LvsClusterError(f"agent {node}: cannot serve metrics on {listen[0]}:{listen[1]}: {exc.strerror or exc} "
                                  f"(is an agent for {node} already running? choose another --metrics ADDRESS:PORT, or off)") from None
        logging.getLogger("lvscluster.agent").info("%s: metrics on http://%s:%d/metrics", node, *listen)
    try:
        asyncio.run(_run_until_signal(runner))
    finally:
        health_record_path(node, backend.netns).unlink(missing_ok=True)


def parse_listen(text: str) -> tuple[str, int] | None:
    """`ADDRESS:PORT` or `off` (None); ValueError naming the expected form otherwise."""
    if text == "off":
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} should be ADDRESS:PORT (e.g. {DEFAULT_METRICS}) or off")
    return host.strip("[]") or "127.0.0.1", int(port)


async def _run_until_signal(runner: "Agent") -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, runner.wake)
    await runner.run(stop)

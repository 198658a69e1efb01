"""`lvscluster agent`: run one director's health checks, quiesce/withdraw, repair drift, serve metrics."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from lvscluster.cli.common import TopologyFile, err, lab_vm, load_cluster
from lvscluster.errors import EnvironmentProblem, LvsClusterError
from lvscluster.health.service import DEFAULT_METRICS, parse_listen, run_agent


def _listen_address(text: str) -> tuple[str, int] | None:
    try:
        return parse_listen(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--metrics") from None


def agent(
    file: TopologyFile,
    node: Annotated[str, typer.Option("--node", help="The director this agent runs for.", show_default=False)],
    metrics: Annotated[str, typer.Option(help="Where the Prometheus endpoint listens (ADDRESS:PORT), or `off`. "
                                         "Loopback by default: expose it elsewhere only on purpose.")] = DEFAULT_METRICS,
    repair_interval: Annotated[float, typer.Option(help="Seconds between two full checks of the director against "
                                                   "the topology (drift repair).", min=1)] = 10.0,
    local: Annotated[bool, typer.Option("--local", help="This machine is the director: check and repair its own "
                                        "kernel and FRR, whatever the node's `access:` says (how systemd runs the "
                                        "agent on a director that deploy reaches over ssh).")] = False,
) -> None:
    """Run one director's health checks and keep the director right, until stopped (SIGTERM/SIGINT).

    - Checks every real server as the topology's `health:` says (tcp, http, https, udp, dns,
      exec), from the director's own network namespace.
    - A real server that fails `fall` checks in a row is quiesced (weight 0: established
      connections continue, the mh table keeps its slots); `rise` successes bring it back.
      Every director's agent reaches the same decision from the same checks.
    - When no service of a VIP has `quorum` healthy real servers, the director stops announcing
      the VIP (the upstream router drops it from ECMP); a `sorry_server` takes over instead if set.
    - Every `--repair-interval` it compares the director with the topology and puts back what
      was changed by hand (a dest deleted with ipvsadm). It acts only on a deployed director.
    - Serves Prometheus metrics (IPVS counters, health, weights, sync, OSPF, VIP announced).

    SIGHUP makes it converge at once (deploy and `director drain` send it after changing the
    director). In a lab, `lab up` starts one agent per director. On a real director run it from systemd
    with --local (`contrib/lvscluster-agent@.service`). Every change is logged with its reason.
    """
    from lvscluster.apply.reach import backend_for
    from lvscluster.apply.placement import Placement, placement_of
    from lvscluster.cli.deploy import lab_placements

    listen = _listen_address(metrics)
    cluster = load_cluster(file)
    if node not in cluster.directors:
        raise typer.BadParameter(f"{node!r} is not a director of {file} (directors: {', '.join(cluster.directors)})",
                                 param_hint="--node")
    if os.geteuid() != 0:
        raise EnvironmentProblem("agent needs root (netlink, FRR, network namespaces): run it with sudo")
    if local:
        placement = Placement("local")
    else:
        if not os.environ.get("LVSCLUSTER_IN_VM") and lab_vm(cluster.name) is not None:
            raise LvsClusterError(f"lab {cluster.name} runs in a VM: its agents run there (`lab up` starts them)")
        placement = placement_of(cluster, node, lab_placements(cluster))
    if not placement.on_this_machine:
        raise LvsClusterError(f"{node} is reached over {placement}: run the agent on that machine, "
                              f"with --local (as contrib/lvscluster-agent@.service does)")
    backend = backend_for(placement)
    run_agent(Path(file), node, backend, listen, repair_interval)
    err.print(f"agent {node}: stopped", markup=False)

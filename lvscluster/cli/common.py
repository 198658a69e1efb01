"""What every command shares: the consoles, argument types, topology loading, JSON output."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from lvscluster.model.cluster import Cluster
from lvscluster.model.loader import load_topology

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def reset_consoles() -> None:
    """Make `out` and `err` read the environment again (FORCE_COLOR, COLUMNS): the lab VM's agent
    forks commands from a process that imported this module before their environment was set."""
    out.__init__(highlight=False, soft_wrap=True)
    err.__init__(stderr=True, highlight=False, soft_wrap=True)

TopologyFile = Annotated[Path, typer.Argument(help="The topology file (*.lvs.yml).", show_default=False)]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of text.")]


def load_cluster(path: Path) -> Cluster:
    """Load and validate a topology file (raises TopologyError with every problem)."""
    return Cluster.from_topology(load_topology(path))


def lab_vm(lab: str):
    """The running VM that holds this lab, or None (the lab is on this machine, or not up)."""
    from lvscluster.lab.vmhost import LabVm

    candidate = LabVm(lab)
    return candidate if candidate.running() else None


def forward_to_vm(vm, file: Path | None = None) -> None:
    """Re-run this very command inside the lab's VM, streaming its output; exits with its code."""
    raise typer.Exit(run_in_vm(vm, file))


def run_in_vm(vm, file: Path | None = None, extra: tuple[str, ...] = ()) -> int:
    """Run this command (plus `extra` arguments) inside the lab's VM; returns its exit code."""
    args = [*sys.argv[1:], *extra]
    if file is not None:
        staged = vm.stage(file)
        args = [staged if arg == str(file) else arg for arg in args]
    env = {"COLUMNS": str(out.width if out.is_terminal else 140)}  # tables stay readable in logs too
    if out.is_terminal:
        env["FORCE_COLOR"] = "1"
    err.print(f"[dim]lab {vm.lab} lives in a VM (this kernel has no IPVS): running the command there[/dim]")
    return vm.run(args, cli=True, env=env)


def print_json(document: Any) -> None:
    """Print a JSON document on stdout (pretty, stable key order)."""
    out.print_json(json.dumps(document, sort_keys=True, default=str))


def escape(text: str) -> str:
    """Protect text from rich markup."""
    return text.replace("[", r"\[")

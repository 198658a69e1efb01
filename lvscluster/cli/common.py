"""What every command shares: the consoles, argument types, topology loading, JSON output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from lvscluster.model.cluster import Cluster
from lvscluster.model.loader import load_topology

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

TopologyFile = Annotated[Path, typer.Argument(help="The topology file (*.lvs.yml).", show_default=False)]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of text.")]


def load_cluster(path: Path) -> Cluster:
    """Load and validate a topology file (raises TopologyError with every problem)."""
    return Cluster.from_topology(load_topology(path))


def print_json(document: Any) -> None:
    """Print a JSON document on stdout (pretty, stable key order)."""
    out.print_json(json.dumps(document, sort_keys=True, default=str))


def escape(text: str) -> str:
    """Protect text from rich markup."""
    return text.replace("[", r"\[")

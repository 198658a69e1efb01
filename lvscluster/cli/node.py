"""`lvscluster node observe|apply|originals`: the remote end of the ssh transport.

Deploy runs these on a remote machine over ssh with JSON on stdin; they work on the machine's
own kernel (current network namespace) and its FRR.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer

from lvscluster.apply.backends import ACTIONS, KernelBackend
from lvscluster.cli.common import out
from lvscluster.errors import LvsClusterError
from lvscluster.state import NodeState

node_app = typer.Typer(help="Observe or change this machine as one node of a cluster (used by deploy over ssh; "
                            "JSON on stdin and stdout).", no_args_is_help=True)
PathspaceOption = Annotated[Optional[str], typer.Option(help="FRR pathspace (-N) of this node's FRR, if not the default.")]


def _read_stdin() -> str:
    text = sys.stdin.read()
    if not text.strip():
        raise LvsClusterError("expected JSON on standard input")
    return text


@node_app.command("observe")
def node_observe(frr_pathspace: PathspaceOption = None) -> None:
    """Read this machine's state for the desired NodeState on stdin; print the observed NodeState as JSON."""
    try:
        desired = NodeState.model_validate_json(_read_stdin())
    except ValueError as exc:
        raise LvsClusterError(f"stdin is not a node state: {str(exc).splitlines()[0]}") from None
    sys.stdout.write(KernelBackend(None, frr_pathspace).observe(desired).model_dump_json() + "\n")


@node_app.command("apply")
def node_apply(frr_pathspace: PathspaceOption = None) -> None:
    """Carry out the JSON list of actions on stdin, in order; the first failure exits 1 naming the action."""
    try:
        actions = ACTIONS.validate_json(_read_stdin())
    except ValueError as exc:
        raise LvsClusterError(f"stdin is not a list of actions: {str(exc).splitlines()[0]}") from None
    KernelBackend(None, frr_pathspace).apply(actions)
    out.print(json.dumps({"applied": len(actions)}), markup=False)


@node_app.command("originals")
def node_originals() -> None:
    """Print the sysctl values journaled before deploy first changed them (JSON)."""
    sys.stdout.write(json.dumps(KernelBackend(None, None).originals()) + "\n")

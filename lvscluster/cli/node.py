"""`lvscluster node observe|apply|originals`: the remote end of the ssh transport.

Deploy runs these on a remote machine over ssh with JSON on stdin; they work on the machine's
own kernel (current network namespace) and its FRR.
"""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from lvscluster.apply.backends import run_node_verb
from lvscluster.errors import LvsClusterError

node_app = typer.Typer(help="Observe or change this machine as one node of a cluster (used by deploy over ssh; "
                            "JSON on stdin and stdout).", no_args_is_help=True)
PathspaceOption = Annotated[Optional[str], typer.Option(help="FRR pathspace (-N) of this node's FRR, if not the default.")]


def _read_stdin() -> str:
    text = sys.stdin.read()
    if not text.strip():
        raise LvsClusterError("expected JSON on standard input")
    return text


def _run(verb: str, payload: str, frr_pathspace: str | None) -> None:
    try:
        sys.stdout.write(run_node_verb(verb, payload, frr_pathspace) + "\n")
    except ValueError as exc:
        raise LvsClusterError(str(exc)) from None


@node_app.command("observe")
def node_observe(frr_pathspace: PathspaceOption = None) -> None:
    """Read this machine's state for the desired NodeState on stdin; print the observed NodeState as JSON."""
    _run("observe", _read_stdin(), frr_pathspace)


@node_app.command("apply")
def node_apply(frr_pathspace: PathspaceOption = None) -> None:
    """Carry out the JSON list of actions on stdin, in order; the first failure exits 1 naming the action.

    Or `{"actions": [...], "record": {"node": NAME, "topology": TEXT or null}}`: the actions, and
    deploy's record of the topology director NAME now holds kept on this machine (null: forgotten)
    in the same hold of the apply lock, for its agent (`lvscluster agent --local`), which is woken."""
    _run("apply", _read_stdin(), frr_pathspace)


@node_app.command("originals")
def node_originals() -> None:
    """Print the sysctl values journaled before deploy first changed them (JSON)."""
    _run("originals", "", None)

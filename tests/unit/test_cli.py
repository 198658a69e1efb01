"""The command line as a user meets it: exit codes, messages, --json, help on every command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent.parent
DEMO = ROOT / "topology" / "demo.lvs.yml"
BAD = ROOT / "tests" / "errors" / "references.lvs.yml"


def lvscluster(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lvscluster.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "COLUMNS": "300"})  # usage errors' boxes unwrapped


def test_validate_ok() -> None:
    done = lvscluster("validate", str(DEMO))
    assert done.returncode == 0, done.stderr
    assert "valid" in done.stdout


def test_validate_reports_every_problem_with_file_and_line() -> None:
    done = lvscluster("validate", str(BAD))
    assert done.returncode == 1
    expected = [line.replace("references.lvs.yml", str(BAD), 1)
                for line in BAD.with_suffix("").with_suffix(".log").read_text().splitlines()]
    assert done.stderr.splitlines() == expected
    assert "Traceback" not in done.stderr


def test_validate_json() -> None:
    done = lvscluster("validate", "--json", str(DEMO), str(BAD))
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["valid"] is False and report["problems"][str(DEMO)] == [] and len(report["problems"][str(BAD)]) == 3


def test_missing_file_is_a_clear_error() -> None:
    done = lvscluster("plan", "no-such-file.lvs.yml")
    assert done.returncode == 1 and done.stderr.strip() == "no-such-file.lvs.yml: no such file"


def test_usage_error_exits_2() -> None:
    assert lvscluster("validate").returncode == 2
    assert lvscluster("no-such-command").returncode == 2


def test_render_output_must_be_a_directory(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("keep me\n")
    done = subprocess.run([sys.executable, "-m", "lvscluster.cli", "render", str(DEMO), "-o", "a-file"],
                          capture_output=True, text=True, cwd=tmp_path, env={"COLUMNS": "300", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2 and "a-file exists and is not a directory" in done.stderr, done.stderr
    assert (tmp_path / "a-file").read_text() == "keep me\n"
    for empty in ("", " "):
        done = subprocess.run([sys.executable, "-m", "lvscluster.cli", "render", str(DEMO), "-o", empty],
                              capture_output=True, text=True, cwd=tmp_path, env={"COLUMNS": "300", "PATH": "/usr/bin:/bin"})
        assert done.returncode == 2 and "is empty; name a directory" in done.stderr, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # nothing written into the cwd


def test_render_into_an_unwritable_place_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    done = lvscluster("render", str(DEMO), "-o", str(tmp_path / "a-file" / "sub"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"render: cannot write into {tmp_path / 'a-file' / 'sub'}: Not a directory"), done.stderr


def test_render_names_directories_of_nodes_not_in_the_topology(tmp_path: Path) -> None:
    assert lvscluster("render", str(DEMO), "-o", str(tmp_path)).returncode == 0
    done = lvscluster("render", str(ROOT / "topology" / "tun.lvs.yml"), "-o", str(tmp_path))
    assert done.returncode == 0
    stale = sorted({p.name for p in tmp_path.iterdir()} - _node_names(ROOT / "topology" / "tun.lvs.yml"))
    assert stale and f"also holds {', '.join(stale)}: not nodes of tun.lvs.yml" in done.stderr


def _node_names(topology: Path) -> set[str]:
    from lvscluster.model.loader import load_topology

    return set(load_topology(topology).nodes)


def test_schema_is_json_schema_of_the_topology() -> None:
    schema = json.loads(lvscluster("schema").stdout)
    assert schema["additionalProperties"] is False
    assert {"name", "nodes", "links", "vips", "defaults"} <= set(schema["properties"])


def test_render_then_plan_against_it_is_a_no_op(tmp_path: Path) -> None:
    done = lvscluster("render", str(DEMO), "-o", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert {p.name for p in (tmp_path / "d1").iterdir()} == {"frr.conf", "daemons", "state.json"}
    assert {p.name for p in (tmp_path / "rs1").iterdir()} == {"state.json"}
    again = lvscluster("plan", str(DEMO), "--against", str(tmp_path))
    assert again.returncode == 0 and again.stdout.strip() == "no changes"


def test_plan_from_scratch_json(tmp_path: Path) -> None:
    plan = json.loads(lvscluster("plan", "--offline", "--json", str(DEMO)).stdout)
    d1 = plan["nodes"]["d1"]
    assert plan["changes"] == sum(len(v) for v in plan["nodes"].values())
    assert [a["kind"] for a in d1][-2:] == ["add_address", "set_frr"]
    assert all(a["reason"] for actions in plan["nodes"].values() for a in actions)


def test_plan_after_weight_change_is_one_action_per_director(tmp_path: Path) -> None:
    lvscluster("render", str(DEMO), "-o", str(tmp_path / "before"))
    changed = tmp_path / "demo.lvs.yml"
    changed.write_text(DEMO.read_text().replace("{node: rs3, weight: 2}", "{node: rs3, weight: 3}"))
    plan = json.loads(lvscluster("plan", "--json", str(changed), "--against", str(tmp_path / "before")).stdout)
    changed_nodes = {node: actions for node, actions in plan["nodes"].items() if actions}
    assert sorted(changed_nodes) == ["d1", "d2"]
    for actions in changed_nodes.values():
        assert [(a["kind"], a["dest"]["address"], a["dest"]["weight"]) for a in actions] == [
            ("set_dest", "10.2.0.6", 3), ("set_dest", "10.2.0.6", 3)]  # tcp/80 and udp/53


def test_bad_observed_state_file(tmp_path: Path) -> None:
    (tmp_path / "d1").mkdir()
    (tmp_path / "d1" / "state.json").write_text("{not json")
    done = lvscluster("plan", str(DEMO), "--against", str(tmp_path))
    assert done.returncode == 1 and "d1/state.json: not a node state" in done.stderr


def test_plan_against_a_directory_that_is_not_one_of_states(tmp_path: Path) -> None:
    """A typo in --against must not quietly plan every node from empty."""
    missing = lvscluster("plan", "--offline", str(DEMO), "--against", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    empty = lvscluster("plan", str(DEMO), "--against", str(tmp_path))
    assert empty.returncode == 1 and "holds no node state (<node>/state.json) for any node" in empty.stderr
    lvscluster("render", str(DEMO), "-o", str(tmp_path / "r"))
    for state in (tmp_path / "r" / "d2").iterdir():
        state.unlink()
    partial = lvscluster("plan", "--json", str(DEMO), "--against", str(tmp_path / "r"))
    assert partial.returncode == 0, partial.stderr
    assert f"{tmp_path / 'r'} has no state.json for d2: planned from empty nodes" in partial.stderr
    assert [n for n, actions in json.loads(partial.stdout)["nodes"].items() if actions] == ["d2"]


def all_commands() -> list[list[str]]:
    """Every command path of the app, e.g. ["lab", "up"], ["director", "drain"]."""
    import typer.main

    from lvscluster.cli import app

    paths = []

    def walk(command, path):
        if hasattr(command, "commands"):  # a group
            for name, sub in command.commands.items():
                walk(sub, [*path, name])
        else:
            paths.append(path)
    walk(typer.main.get_command(app), [])
    return paths


@pytest.mark.parametrize("command", all_commands(), ids=" ".join)
def test_every_command_has_help(command: list[str]) -> None:
    from typer.testing import CliRunner

    from lvscluster.cli import app

    done = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "100"})
    assert done.exit_code == 0 and "Usage:" in done.output, done.output
    assert len(done.output.splitlines()) > 8  # a description and the options, not just a usage line
    for shown in {tuple(command[:1]), tuple(command)}:  # the group's help and the command's
        wide = CliRunner().invoke(app, [*shown, "--help"], env={"COLUMNS": "1000"}).output
        for placeholder in _placeholders(list(shown)):  # markdown help drops a bare <node> as an HTML tag
            assert placeholder in wide, f"{placeholder} missing from `{' '.join(shown)} --help`"


def _placeholders(command: list[str]) -> set[str]:
    """The `<name>` placeholders the command's help texts (its own and its options') hold."""
    import re

    import typer.main

    from lvscluster.cli import app

    node = typer.main.get_command(app)
    for name in command:
        node = node.commands[name]
    texts = [node.help or "", *(getattr(param, "help", None) or "" for param in node.params)]
    return {m for text in texts for m in re.findall(r"<[a-z][a-z_ -]*>", text)}


def test_lifecycle_commands_name_the_wrong_node(tmp_path: Path) -> None:
    topology = tmp_path / "demo.lvs.yml"
    topology.write_text(DEMO.read_text())
    done = lvscluster("director", "drain", str(topology), "rs1")
    assert done.returncode == 1 and "rs1 is a real server, not a director" in done.stderr, done.stderr
    done = lvscluster("rs", "remove", str(topology), "rs9")
    assert done.returncode == 1 and "no node 'rs9' in demo (rs1, rs2, rs3 are its real servers)" in done.stderr
    assert topology.read_text() == DEMO.read_text()  # nothing edited


def test_removing_the_only_director_is_refused(tmp_path: Path) -> None:
    topology = tmp_path / "nat.lvs.yml"
    topology.write_text((ROOT / "topology" / "nat.lvs.yml").read_text())
    done = lvscluster("director", "remove", str(topology), "d1")
    assert done.returncode == 1 and "d1 is the only director of nat" in done.stderr, done.stderr
    assert topology.read_text() == (ROOT / "topology" / "nat.lvs.yml").read_text()


def test_scaletest_checks_the_churn_before_anything_runs() -> None:
    done = lvscluster("scaletest", str(DEMO), "--duration", "10", "--churn", "kill d3@2s,drain d1@20s")
    assert done.returncode == 1, done.stderr
    assert "--churn: 'kill d3@2s': 'd3' is not a director of demo (directors: d1, d2)" in done.stderr
    assert "--churn: 'drain d1@20s': at 20s is not before the end of the run (10s)" in done.stderr


def test_consoles_follow_the_environment_they_are_reset_in(monkeypatch) -> None:
    """The lab VM agent forks commands from a warm process: colour and width come from the request."""
    from lvscluster.cli import common

    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "77")
    try:
        common.reset_consoles()
        assert common.out.is_terminal and common.out.width == 77 and common.err.width == 77
    finally:
        monkeypatch.delenv("FORCE_COLOR")
        monkeypatch.delenv("COLUMNS")
        common.reset_consoles()


def test_the_agent_refuses_a_director_deploy_reaches_over_ssh_and_names_local(tmp_path: Path) -> None:
    """On the deploying machine, an agent for a director reached over ssh would check and repair
    the wrong kernel: refused, naming --local (what systemd on the director runs). Only the
    refusal is run here: --local would act on this machine's own IPVS and FRR (the Docker lab's
    kernel test runs it, in the directors' containers)."""
    topology = tmp_path / "remote.lvs.yml"
    topology.write_text(DEMO.read_text().replace("name: demo\n", "name: remoteagent\n", 1).replace(
        "  d1:  {role: director, router_id: 10.255.0.11}", "  d1:  {role: director, router_id: 10.255.0.11, access: ssh://root@192.0.2.11}"))
    assert "ssh://root@192.0.2.11" in topology.read_text()
    done = lvscluster("agent", str(topology), "--node", "d1", "--metrics", "off")
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == ("d1 is reached over ssh://root@192.0.2.11: run the agent on that machine, with --local "
                                   "(as contrib/lvscluster-agent@.service does)"), done.stderr
    assert "--local" in (ROOT / "contrib" / "lvscluster-agent@.service").read_text()

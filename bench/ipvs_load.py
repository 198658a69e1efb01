"""Benchmark: program 1000 services x 16 dests with lvscluster.netlink and with `ipvsadm -R`.

Runs inside a kernel with IPVS (the test VM, see bench/README.md), as root. Each run uses
fresh throwaway namespaces `lvsb-lib` and `lvsb-adm`. Reports, in seconds:

* `ipvsadm_restore`: `ipvsadm -R` of the rule set (process start included);
* `library_full_load`: `netlink.apply()` of the same 17,000 actions from empty
  (`build_actions` is reported apart: that is the planner's work, not netlink's);
* `noop_reapply`: observe the whole IPVS state + compare with the desired state + apply
  the (empty) action list;
* `diff_node_noop`: `plan.diff.diff_node` of the desired vs the observed state (what the
  deploy engine runs after observing; reported apart, it is planner code, not netlink);
* `single_weight_change`: one `set_dest` action, asserted to be exactly one netlink write;
and checks that both namespaces end with the same services and the same dest order.

    python bench/ipvs_load.py [--services 1000] [--dests 16] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lvscluster.apply.kernel import apply_to_kernel  # noqa: E402
from lvscluster.netlink import IpvsSocket, observe  # noqa: E402
from lvscluster.plan.actions import Action  # noqa: E402
from lvscluster.plan.diff import diff_node  # noqa: E402
from lvscluster.state import IpvsDest, IpvsService, IpvsState, NodeState  # noqa: E402

NS_LIB, NS_ADM = "lvsb-lib", "lvsb-adm"


def desired_services(n_services: int, n_dests: int) -> tuple[IpvsService, ...]:
    """1000 tcp mh services (mh-port) with 16 DR dests each, in canonical dest order.

    Every dest is unique (no pool shared between services), the worst case for observing.
    """
    out = []
    for s in range(n_services):
        dests = tuple(IpvsDest(address=f"10.{2 + s // 250}.{d}.{s % 250 + 1}", port=80) for d in range(n_dests))
        vip = f"10.99.{s // 250}.{s % 250 + 1}"
        out.append(IpvsService(protocol="tcp", address=vip, port=80, scheduler="mh", flags=("mh-port",), dests=dests))
    return tuple(out)


def build_actions(services) -> list[Action]:
    """add_service then add_dest in reverse canonical order (the kernel inserts at the head)."""
    actions = []
    for svc in services:
        bare = svc.without_dests()
        actions.append(Action(node="bench", kind="add_service", reason="bench", service=bare))
        for dest in reversed(svc.dests):
            actions.append(Action(node="bench", kind="add_dest", reason="bench", service=bare, dest=dest))
    return actions


def ipvsadm_rules(services) -> str:
    """The same rule set as `ipvsadm -R` input, dests in the same insertion order."""
    lines = []
    for svc in services:
        lines.append(f"-A -t {svc.address}:{svc.port} -s mh -b mh-port")
        for dest in reversed(svc.dests):
            lines.append(f"-a -t {svc.address}:{svc.port} -r {dest.address}:{dest.port} -g -w {dest.weight}")
    return "\n".join(lines) + "\n"


def fresh_netns(name: str) -> None:
    subprocess.run(["ip", "netns", "del", name], stderr=subprocess.DEVNULL)
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--dests", type=int, default=16)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    r: dict = {"services": args.services, "dests_per_service": args.dests}
    services = desired_services(args.services, args.dests)

    fresh_netns(NS_ADM)
    rules = ipvsadm_rules(services).encode()
    t = time.perf_counter()
    subprocess.run(["ip", "netns", "exec", NS_ADM, "ipvsadm", "-R"], input=rules, check=True)
    r["ipvsadm_restore"] = time.perf_counter() - t
    t = time.perf_counter()
    subprocess.run(["ip", "netns", "exec", NS_ADM, "ipvsadm", "-v"], check=True, stdout=subprocess.DEVNULL)
    r["ipvsadm_process_start"] = time.perf_counter() - t

    fresh_netns(NS_LIB)
    t = time.perf_counter()
    actions = build_actions(services)
    r["build_actions"] = time.perf_counter() - t
    t = time.perf_counter()
    res = apply_to_kernel(NS_LIB, actions)
    r["library_full_load"] = time.perf_counter() - t
    r["library_writes"] = res.ipvs_writes
    r["ratio_library_vs_ipvsadm"] = r["library_full_load"] / r["ipvsadm_restore"]

    t = time.perf_counter()
    seen = observe(NS_LIB).ipvs
    have = {svc.key: svc for svc in seen.services}  # the dump follows the kernel's hash table
    want = {svc.key: svc for svc in services}
    todo = [k for k, svc in want.items() if have.get(k) != svc] + [k for k in have if k not in want]
    apply_to_kernel(NS_LIB, [])
    r["noop_reapply"] = time.perf_counter() - t
    t = time.perf_counter()
    observe(NS_LIB)
    r["observe_only"] = time.perf_counter() - t
    r["noop_vs_full_load"] = r["noop_reapply"] / r["library_full_load"]
    r["noop_vs_ipvsadm"] = r["noop_reapply"] / r["ipvsadm_restore"]
    assert not todo, "library state differs from the desired state"
    # the deploy engine's comparison (plan.diff.diff_node) of the same states, reported apart
    t = time.perf_counter()
    actions = diff_node(NodeState(name="bench", role="director", ipvs=IpvsState(services=services)),
                        NodeState(name="bench", role="director", ipvs=seen))
    r["diff_node_noop"] = time.perf_counter() - t
    assert not actions, "diff_node found differences in a no-op"

    with IpvsSocket(NS_ADM) as sock:
        other = {svc.key: svc for svc in sock.services()}
        assert other == have, "ipvsadm -R and the library produced different lists"

    svc = services[500 % len(services)]
    changed = svc.dests[7 % len(svc.dests)].model_copy(update={"weight": 5})
    with IpvsSocket(NS_LIB) as sock:
        before = sock.writes
        t = time.perf_counter()
        apply_to_kernel(NS_LIB, [Action(node="bench", kind="set_dest", reason="bench", service=svc.without_dests(), dest=changed)], ipvs_socket=sock)
        r["single_weight_change"] = time.perf_counter() - t
        r["single_weight_change_writes"] = sock.writes - before
        assert sock.writes - before == 1, "a weight change must be exactly one netlink write"
        assert changed in sock.dests(svc)

    for ns in (NS_LIB, NS_ADM):
        subprocess.run(["ip", "netns", "del", ns])
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        for k, v in r.items():
            print(f"{k:32} {v:.3f}" if isinstance(v, float) else f"{k:32} {v}")
    ok = r["ratio_library_vs_ipvsadm"] <= 1.0 and r["noop_vs_full_load"] < 0.2
    print("goals met" if ok else "GOALS MISSED", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

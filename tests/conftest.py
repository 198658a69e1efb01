"""Pytest plugin for `kernel` tests: run them in place with IPVS, or all together in one VM."""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from lvscluster.lab import vm

try:
    from hostload import HostLoadService
except ImportError:  # this plugin copied elsewhere (the pytester tests of it): no host load service
    HostLoadService = None

pytest_plugins = ["pytester"]

KERNEL_DIR = Path(__file__).parent / "kernel"
# Markers the inner (VM) run evaluates; the host must not evaluate them a second time.
INNER_ONLY_MARKS = {"skip", "skipif", "xfail"}
IN_VM_ENV = "LVSCLUSTER_IN_VM"
MEASURED = "measured: "  # a kernel test's stdout lines with this prefix reach the host's summary
RESULTS_ENV = "LVSCLUSTER_VM_RESULTS"


def pytest_addoption(parser):
    group = parser.getgroup("lvscluster kernel tests")
    group.addoption(
        "--kernel-tests", choices=("auto", "inplace", "vm", "skip"),
        default=os.environ.get("LVSCLUSTER_KERNEL_TESTS", "auto"),
        help="how to run tests marked `kernel`: auto (in place if this kernel has IPVS, else in "
             "one virtme-ng VM), inplace, vm, skip. Env: LVSCLUSTER_KERNEL_TESTS",
    )
    group.addoption(
        "--vm-timeout", type=float, default=float(os.environ.get("LVSCLUSTER_VM_TIMEOUT", "900")),
        help="seconds the whole VM batch may take, boot included (default 900). "
             "Env: LVSCLUSTER_VM_TIMEOUT",
    )


def pytest_configure(config):
    path = os.environ.get(RESULTS_ENV)
    if os.environ.get(IN_VM_ENV) and path:
        config.pluginmanager.register(_ResultRecorder(path), "lvscluster-vm-recorder")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Mark everything under tests/kernel/ as `kernel` (before -m deselects anything)."""
    for item in items:
        if KERNEL_DIR in Path(item.path).parents and item.get_closest_marker("kernel") is None:
            item.add_marker(pytest.mark.kernel)


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session):
    """After -m/-k selection: swap the selected kernel tests for proxies when IPVS is absent."""
    config = session.config
    kernel_items = [i for i in session.items if i.get_closest_marker("kernel")]
    if not kernel_items or os.environ.get(IN_VM_ENV):
        return
    mode = config.getoption("--kernel-tests")
    if mode == "inplace" or (mode == "auto" and vm.kernel_has_ipvs()):
        return
    batch = VMBatch(config, kernel_items, mode)
    batch.cpus = vm.vcpus_for_host()  # measured now, before this machine's own tests start beside the VM
    config.stash[_BATCH_KEY] = batch
    # The VM boots now and runs its batch while this machine runs the other tests; the proxies
    # come last and wait for it (most of a kernel test's time is the VM's, not this machine's).
    session.items[:] = [i for i in session.items if not i.get_closest_marker("kernel")] + [
        KernelVMItem.from_parent(i.parent, name=i.name, original=i, batch=batch) for i in kernel_items]
    batch.start()
    yield_cpu_to_the_vm()


#: Nice value of the host's own tests while the VM batch runs beside them.
HOST_TESTS_NICE = 10


def yield_cpu_to_the_vm() -> None:
    """Lower this (main) thread's priority, and so that of every process the host's tests start,
    below the VM batch's thread, its QEMU and its host CPU hog (started earlier, they keep nice 0).

    Beside the VM, the host's own tests (FRR labs, fuzzing) kept both cores busy for most of the
    batch: the kernel tests that judge whether their lab could keep up (the scaletests) then ran
    beside two busy cores, not the one the busy-host test asks for, and said "lab overloaded".
    The VM is CI's critical path; the host's tests take the CPU it leaves. Linux nice values are
    per thread, so only the thread calling this is lowered."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, HOST_TESTS_NICE)
    except (OSError, AttributeError):  # not Linux, or not allowed: the tests still run
        pass


def pytest_sessionfinish(session):
    """Stop a VM batch the session no longer waits for (e.g. -x stopped at a host test)."""
    batch = session.config.stash.get(_BATCH_KEY, None)
    if batch is not None:
        batch.cancel_and_wait()


_BATCH_KEY = pytest.StashKey["VMBatch"]()


class InnerFailure(Exception):
    """A kernel test failed inside the VM (or could not run there); holds the text to show."""


class KernelVMItem(pytest.Item):
    """Stand-in for a kernel test: same node id, outcome taken from the single VM batch."""

    def __init__(self, *, original, batch, **kw):
        super().__init__(**kw)
        self.original = original
        self.batch = batch
        self.own_markers = list(original.own_markers)
        self.keywords.update(original.keywords)

    def iter_markers_with_node(self, name=None):
        """Hide skip/skipif/xfail from the host: the inner run applies them, in the VM."""
        for node, mark in super().iter_markers_with_node(name=name):
            if mark.name not in INNER_ONLY_MARKS:
                yield node, mark

    def reportinfo(self):
        return self.original.reportinfo()

    def runtest(self):
        self.batch.host_tests_done.set()  # the proxies come last: this machine's own tests are over
        res = self.batch.result_for(self.nodeid)
        outcome = res["outcome"]
        if outcome in ("passed", "xpassed"):
            return
        if outcome == "skipped":
            # Report the skip at the test's own location, not at this line.
            raise pytest.skip.Exception(res["reason"], _use_item_location=True)
        if outcome == "xfailed":
            pytest.xfail(res["reason"])
        raise InnerFailure(res["text"])

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, InnerFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)


class VMBatch:
    """All proxied kernel tests of a session, run lazily in one VM boot by the first proxy."""

    def __init__(self, config, items, mode):
        self.config = config
        self.nodeids = [i.nodeid for i in items]
        self.mode = mode
        self.host_tests_done = threading.Event()  # a test's host CPU hog waits for it (tests/hostload.py)
        self.cpus: tuple[int, str] = (vm.DEFAULT_CPUS, "default")
        self.results: dict[str, dict] | None = None
        self.summary: str | None = None
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self._messages: list[str] = []  # said in the background thread, printed by the main one
        self._lock = threading.Lock()

    def start(self) -> None:
        """Run the batch in a background thread (results are collected by `result_for`)."""
        def run() -> None:
            try:
                self.results = self._run()
            except BaseException as exc:  # the proxies report it
                self.results = {n: _failed(f"VM batch failed: {exc!r}") for n in self.nodeids}
        self._thread = threading.Thread(target=run, name="lvscluster-vm-batch", daemon=True)
        self._thread.start()

    def result_for(self, nodeid: str) -> dict:
        if self._thread is None:
            self.start()
        self._flush()
        while self._thread.is_alive():
            self._thread.join(timeout=1.0)
            self._flush()
        self._flush()
        return self.results[nodeid]

    def cancel_and_wait(self) -> None:
        """Kill the VM if the batch is still running, and wait for its thread."""
        if self._thread is not None and self._thread.is_alive():
            self._cancel.set()
            self._thread.join(timeout=60)
        self._flush()

    # -- output ---------------------------------------------------------------------------
    def _say(self, msg: str) -> None:
        if threading.current_thread() is not threading.main_thread():
            with self._lock:
                self._messages.append(msg)
            return
        self._write(msg)

    def _flush(self) -> None:
        with self._lock:
            messages, self._messages = self._messages, []
        for msg in messages:
            self._write(msg)

    def _write(self, msg: str) -> None:
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        capman = self.config.pluginmanager.get_plugin("capturemanager")
        if tr is None:
            return
        if capman is not None:
            with capman.global_and_fixture_disabled():
                tr.write_line(msg)
        else:
            tr.write_line(msg)
        tr.currentfspath = None  # the next result re-prints its file name on a fresh line

    # -- the batch --------------------------------------------------------------------------
    def _run(self) -> dict[str, dict]:
        reason = vm.vm_unavailable_reason()
        if reason:
            why = f"kernel test needs IPVS: this kernel has none and no VM can be booted: {reason}"
            if os.environ.get("CI"):
                self._say(f"lvscluster: ERROR: {why}")
                return {n: _failed(why) for n in self.nodeids}
            self._say(f"lvscluster: skipping kernel tests: {why}")
            return {n: {"outcome": "skipped", "reason": why} for n in self.nodeids}
        if self.mode == "skip":
            why = "kernel tests disabled (--kernel-tests=skip)"
            return {n: {"outcome": "skipped", "reason": why} for n in self.nodeids}
        timeout = self.config.getoption("--vm-timeout")
        workdir = Path(tempfile.mkdtemp(prefix="lvscluster-vm-",
                                        dir=os.environ.get("LVSCLUSTER_VM_WORKDIR", "/tmp")))
        results_path = workdir / "results.jsonl"
        script = workdir / "run.sh"
        script.write_text(self._script(results_path, timeout))
        kernel = vm.find_kernel_image()
        why = ("forced by --kernel-tests=vm" if self.mode == "vm"
               else f"host kernel {os.uname().release} has no IPVS")
        self._say(f"\nlvscluster: {why}: booting {kernel} in a virtme-ng VM (software emulation, "
                  f"~35 s boot; {self.cpus[0]} vCPU(s): {self.cpus[1]}) to run {len(self.nodeids)} kernel test(s); "
                  f"limit {timeout:.0f} s, log {workdir / 'console.log'}")
        stream = self.config.getoption("verbose") > 0
        t0 = time.monotonic()
        # a kernel test may ask for a busy host core: it starts once this machine's own tests are over
        load = HostLoadService(workdir, self.host_tests_done) if HostLoadService else None
        if load:
            load.start()
        try:
            res = vm.run_in_vm(
                f"sh {shlex.quote(str(script))}", kernel=kernel, timeout=timeout, cpus=self.cpus[0],
                rwdirs=[workdir], cwd=self.config.rootpath, log_path=workdir / "console.log",
                on_line=(lambda line: self._say(f"  [vm] {line}")) if stream else None,
                on_wait=lambda msg: self._say(f"lvscluster: {msg}"),
                lock_path=os.environ.get("LVSCLUSTER_VM_LOCK", vm.LOCK_PATH), cancel=self._cancel,
            )
        except (vm.VMLockTimeout, RuntimeError, OSError) as e:
            return {n: _failed(f"VM batch could not start: {e}") for n in self.nodeids}
        finally:
            if load:
                load.stop()
        results, inner_secs = _read_results(results_path)
        slowest = sorted(((r.get("seconds", 0.0), n) for n, r in results.items()), reverse=True)[:6]
        tail = _tail(workdir / "console.log")
        if res.timed_out or res.returncode in (124, 137):
            missing = (f"VM batch timed out after {timeout:.0f} s (killed); this test had not "
                       f"finished. Last VM output:\n{tail}")
        else:
            missing = (f"no result from the VM batch (guest exit status {res.returncode}). "
                       f"Last VM output:\n{tail}")
        out = {n: results.get(n) or _failed(missing) for n in self.nodeids}
        overhead = f"{res.duration - inner_secs:.1f}" if inner_secs is not None else "?"
        self.summary = (f"VM batch: {len(self.nodeids)} kernel test(s) in {res.duration:.1f} s "
                        f"(VM boot/teardown overhead {overhead} s, waited {res.lock_wait:.1f} s "
                        f"for the VM lock), wall {time.monotonic() - t0:.1f} s; slowest: "
                        + ", ".join(f"{n.split('::')[-1]} {secs:.0f} s" for secs, n in slowest))
        self._say(f"lvscluster: {self.summary}")
        if all(r["outcome"] not in ("failed", "error") for r in out.values()):
            for p in workdir.iterdir():
                p.unlink()
            workdir.rmdir()
        return out

    def _script(self, results_path: Path, timeout: float) -> str:
        """The guest's shell script: run the selected kernel tests with pytest, in place."""
        cfg = self.config
        inner_limit = int(timeout - min(150, timeout / 4))
        args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                f"--tb={cfg.getoption('tbstyle')}", f"--rootdir={cfg.rootpath}"]
        if cfg.inipath:
            args += ["-c", str(cfg.inipath)]
        args += ["-m", "", "--", *self.nodeids]  # selected here already: no -m of addopts deselects them there
        env = {IN_VM_ENV: "1", RESULTS_ENV: str(results_path), "PYTHONDONTWRITEBYTECODE": "1",
               "CI": os.environ.get("CI", "")}
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        return (f"export {exports}\ncd {shlex.quote(str(cfg.rootpath))} || exit 3\n"
                f"timeout -k 10 {inner_limit} {shlex.join(args)}\n")


def pytest_terminal_summary(terminalreporter, config):
    batch = config.stash.get(_BATCH_KEY, None)
    if batch is not None and batch.summary:
        terminalreporter.write_sep("-", "lvscluster kernel tests")
        terminalreporter.write_line(batch.summary)
        for nodeid, result in (batch.results or {}).items():  # what the tests measured, pass or fail
            for line in result.get("measured", ()):
                terminalreporter.write_line(f"{nodeid.split('::')[-1]}: {line}")


def _failed(text: str) -> dict:
    return {"outcome": "failed", "text": text}


def _tail(path: Path, n: int = 40) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no VM output)"
    return "\n".join(lines[-n:])


def _read_results(path: Path) -> tuple[dict[str, dict], float | None]:
    """Fold the inner run's per-phase reports into one outcome per node id."""
    out: dict[str, dict] = {}
    done: set[str] = set()
    inner_secs = None
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return out, None
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line cut short by a killed VM
        if "session_seconds" in rec:
            inner_secs = rec["session_seconds"]
            continue
        nodeid, when, outcome = rec["nodeid"], rec["when"], rec["outcome"]
        cur = out.setdefault(nodeid, {"outcome": "passed"})
        cur["seconds"] = cur.get("seconds", 0.0) + rec.get("duration", 0.0)
        cur.setdefault("measured", []).extend(rec.get("measured", ()))
        if when == "teardown":
            done.add(nodeid)
        if cur["outcome"] in ("failed", "skipped", "xfailed"):
            if outcome == "failed" and when == "teardown":  # a teardown error still counts
                cur.update(_failed(f"[in VM] error in teardown\n{rec['text']}"))
            continue
        if outcome == "failed":
            prefix = "[in VM]" if when == "call" else f"[in VM] error in {when}:"
            cur.update(_failed(f"{prefix} {rec.get('crash', '')}\n{rec['text']}"))
        elif outcome == "skipped":
            if rec.get("wasxfail") is not None:
                cur.update(outcome="xfailed", reason=f"[in VM] {rec['wasxfail']}")
            else:
                cur.update(outcome="skipped", reason=f"[in VM] {rec['reason']}")
        elif when == "call" and rec.get("wasxfail") is not None:
            cur["outcome"] = "xpassed"
    # A test whose teardown never reported did not finish (the VM was killed or hung).
    return {n: r for n, r in out.items() if n in done}, inner_secs


class _ResultRecorder:
    """Inner-run plugin: append each test phase's report to a JSON-lines file as it happens."""

    def __init__(self, path: str):
        self.path = path
        self.start = time.monotonic()

    def _write(self, rec: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")

    def pytest_runtest_logreport(self, report):
        rec = {"nodeid": report.nodeid, "when": report.when, "outcome": report.outcome,
               "duration": report.duration, "wasxfail": getattr(report, "wasxfail", None)}
        measured = [line for line in report.capstdout.splitlines() if line.startswith(MEASURED)]
        if measured:
            rec["measured"] = measured
        if report.skipped and isinstance(report.longrepr, tuple):
            rec["reason"] = str(report.longrepr[2]).removeprefix("Skipped: ")
        elif report.failed:
            crash = getattr(report.longrepr, "reprcrash", None)
            rec["crash"] = crash.message.splitlines()[0] if crash and crash.message else ""
            text = report.longreprtext
            for title, content in report.sections:
                text += f"\n{'-' * 20} {title} {'-' * 20}\n{content}"
            rec["text"] = text
        self._write(rec)

    def pytest_sessionfinish(self, session):
        self._write({"session_seconds": time.monotonic() - self.start})

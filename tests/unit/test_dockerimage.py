"""The Docker lab's skeleton image and the VM's dockerd: what goes into the image, where dockerd is started."""

from __future__ import annotations

import pytest

from lvscluster.errors import EnvironmentProblem
from lvscluster.lab import dockerimage, vmdocker


def test_the_skeleton_holds_what_a_container_must_own_and_is_the_same_for_the_same_files(tmp_path):
    """Users, FRR's packaged config (owned by FRR's user), the loader's cache and the usr-merge
    links; nothing of /usr (a container mounts this machine's); equal files, equal bytes and tag."""
    import io
    import tarfile

    etc = tmp_path / "etc"
    (etc / "frr").mkdir(parents=True)
    (etc / "frr" / "daemons").write_text("ospfd=no\n")
    (etc / "passwd").write_text("root:x:0:0::/root:/bin/sh\nfrr:x:103:110::/nonexistent:/usr/sbin/nologin\n")
    (etc / "ld.so.cache").write_bytes(b"\0cache")
    (etc / "shadow").write_text("root:secret\n")  # not copied: no container needs it
    (etc / "os-release").symlink_to("../usr/lib/os-release")
    first = dockerimage.skeleton(etc)
    assert dockerimage.skeleton(etc) == first and dockerimage.tag(first) == dockerimage.tag(dockerimage.skeleton(etc))
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert tar.extractfile("etc/frr/daemons").read() == b"ospfd=no\n"
    assert members["etc/os-release"].issym() and members["etc/os-release"].linkname == "../usr/lib/os-release"
    assert members["bin"].linkname == "usr/bin" and members["tmp"].mode == 0o1777
    assert "etc/shadow" not in members and not [n for n in members if n.startswith("usr/")]
    frr_uid = dockerimage._user_ids("frr")[0]
    assert members["etc/frr/daemons"].uid == frr_uid and members["var/lib/frr"].uid == frr_uid
    assert len(first) < 200_000, len(first)
    (etc / "frr" / "daemons").write_text("ospfd=yes\n")
    assert dockerimage.tag(dockerimage.skeleton(etc)) != dockerimage.tag(first)  # a changed file, a new image


def test_no_dockerd_is_started_outside_a_vm(monkeypatch):
    monkeypatch.delenv("LVSCLUSTER_IN_VM", raising=False)
    assert not vmdocker.in_vm()
    monkeypatch.setattr(vmdocker, "start_dockerd", lambda *a: pytest.fail("started a dockerd on the host"))
    from lvscluster.lab import containers

    try:
        containers.connect(start=True)
    except EnvironmentProblem as exc:
        assert "Docker is not running" in str(exc)


def test_containerd_config_keeps_everything_on_the_tmpfs():
    config = vmdocker.CONTAINERD_CONFIG
    assert f'root = "{vmdocker.ROOT}/containerd"' in config and str(vmdocker.CONTAINERD_SOCKET) in config
    assert '"io.containerd.grpc.v1.cri"' in config  # disabled: it slows the start past dockerd's patience

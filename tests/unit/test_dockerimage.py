"""The Docker lab image's tarball and the VM's dockerd: what the host makes, what the VM refuses to."""

from __future__ import annotations

import pytest

from lvscluster.errors import EnvironmentProblem
from lvscluster.lab import dockerimage, vmdocker


def test_tarball_is_cached_by_tag(tmp_path, monkeypatch):
    monkeypatch.setattr(dockerimage, "CACHE", tmp_path)
    monkeypatch.delenv("LVSCLUSTER_IN_VM", raising=False)
    rootfs = tmp_path / f"lab-rootfs-{dockerimage.tag()}"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "os-release").write_text("ID=debian\n")
    (tmp_path / f"lab-rootfs-{dockerimage.tag()}.done").write_text("")
    said = []
    first = dockerimage.tarball(said.append)
    assert first == tmp_path / f"lab-rootfs-{dockerimage.tag()}.tar" and first.stat().st_size > 0
    assert len(said) == 1 and "packing" in said[0]
    assert dockerimage.tarball(said.append) == first and len(said) == 1  # made once


def test_tarball_missing_in_a_vm_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(dockerimage, "CACHE", tmp_path)
    monkeypatch.setenv("LVSCLUSTER_IN_VM", "1")
    with pytest.raises(EnvironmentProblem, match=r"lab-rootfs-.*\.tar is missing: the host makes it"):
        dockerimage.tarball(print)


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

"""A podman of the tests' own: its configuration, storage and image under one temporary folder.

Nothing of the machine's own configuration is read or changed (no registry is reachable, and
other programs on the machine may use podman at the same time):

- ``containers.conf``, pointed at by ``CONTAINERS_CONF`` (which replaces the system's file):
  the ``runc`` runtime (the default, crun, fails on these machines: ``setrlimit RLIMIT_NOFILE:
  Operation not permitted`` and "cgroups in hybrid mode not supported"); ``default_ulimits =
  []`` (without it runc fails: ``error setting rlimit type 7``); libpod's per-boot folder
  (``tmp_dir``) here, with file locks: the default SHM locks and ``/run/libpod`` are shared by
  every podman on the machine, and a podman that finds a fresh ``tmp_dir`` "refreshes" as after
  a reboot, which frees every SHM lock. The network stays the machine's default bridge, so that
  address leases are shared with any other podman user.
- ``storage.conf``, pointed at by ``CONTAINERS_STORAGE_CONF``: the vfs driver (plain copies, no
  overlay mounts to leave behind; the image is a few empty folders), graphroot and runroot here.
- The image: no registry is reachable and these machines have no busybox, so its root file
  system is empty folders (``bin`` a link into ``usr``); every container mounts the machine's
  ``/usr``, ``/lib`` and ``/lib64`` and the llama.cpp build folder read-only (``options``), and
  the image's ENTRYPOINT is that build's llama-server. The launcher mounts the model itself.

:func:`make` checks that podman really uses this storage before anything is created in it, and
:meth:`Podman.clean` removes every container and image made in it.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

IMAGE = "localhost/llmctl-test-llama:1"


@dataclass
class Podman:
    base: Path
    env: dict[str, str]  #: CONTAINERS_CONF and CONTAINERS_STORAGE_CONF
    image: str = IMAGE
    options: list[str] = field(default_factory=list)  #: `docker.options`: the read-only mounts

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        r = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, **self.env})
        assert not check or r.returncode == 0, f"podman {' '.join(args)}: {r.stderr}"
        return r

    def names(self) -> list[str]:
        """Every container in this storage, running or not."""
        return self.run("ps", "-a", "--format", "{{.Names}}").stdout.split()

    def state(self, name: str) -> dict | None:
        r = self.run("inspect", name, check=False)
        return json.loads(r.stdout)[0]["State"] if r.returncode == 0 else None

    def clean(self) -> list[str]:
        """Remove every container in this storage; the names of those there are returned."""
        left = self.names()
        if left:
            self.run("rm", "-f", "-t", "0", *left)
        return left

    def remove_images(self) -> None:
        self.run("rmi", "-a", "-f")
        assert self.run("images", "-q").stdout.strip() == ""


def _configure(base: Path) -> dict[str, str]:
    run = base / "run"
    (base / "containers.conf").write_text(
        "[containers]\ndefault_ulimits = []\n"
        f'[engine]\nruntime = "runc"\ntmp_dir = {json.dumps(str(run / "libpod"))}\n'
        'lock_type = "file"\nevents_logger = "file"\n')
    (base / "storage.conf").write_text(
        f'[storage]\ndriver = "vfs"\ngraphroot = {json.dumps(str(base / "root"))}\n'
        f"runroot = {json.dumps(str(run))}\n")
    return {"CONTAINERS_CONF": str(base / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(base / "storage.conf")}


def _rootfs_tar(base: Path) -> Path:
    """An image root of empty folders: what it runs comes from the read-only mounts."""
    root = base / "rootfs"
    for d in ("usr", "lib", "lib64", "etc", "tmp", "dev", "proc", "sys", "models"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for link in ("bin", "sbin"):
        if not (root / link).is_symlink():
            (root / link).symlink_to(f"usr/{link}")
    tar = base / "rootfs.tar"
    with tarfile.open(tar, "w") as t:
        t.add(root, arcname=".")
    return tar


def make(base: Path, engine: Path) -> Podman:
    """Configure a podman under ``base`` and import the test image, whose entrypoint is the
    llama-server at ``engine`` (its libraries beside it)."""
    base.mkdir(parents=True, exist_ok=True)
    pod = Podman(base, _configure(base))
    graphroot = pod.run("info", "--format", "{{.Store.GraphRoot}}").stdout.strip()
    assert graphroot == str(base / "root"), f"podman ignored the tests' storage.conf (uses {graphroot})"
    entry = json.dumps([str(engine)])
    pod.run("import", "--change", f"ENTRYPOINT {entry}", str(_rootfs_tar(base)), IMAGE)
    mounts = [d for d in ("/usr", "/lib", "/lib64") if os.path.isdir(d)] + [str(engine.parent)]
    pod.options = [x for d in mounts for x in ("-v", f"{d}:{d}:ro")]
    return pod

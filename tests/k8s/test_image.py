"""The container image: the repository's Dockerfile built with buildah (no Docker engine here),
on a base made from Debian's own packages (scripts/build-image-base: no registry can be reached,
so the public Python image cannot be pulled), and its entrypoint run against the real API
server: one round binds a pod. buildah and debootstrap are the Debian packages; the build and
the run use chroot isolation and the host's network."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

kubernetes = pytest.importorskip("kubernetes", reason="the 'k8s' extra is not installed")
from kubernetes.client import CoreV1Api  # noqa: E402

pytestmark = pytest.mark.k8s
REPO = Path(__file__).resolve().parents[2]
BASE = "localhost/gpualloc-base:bookworm"


def _required() -> bool:
    return os.environ.get("GPUALLOC_REQUIRE_K8S") == "1"


@pytest.fixture(scope="module")
def buildah() -> list[str]:
    """buildah with the tests' storage, the base image made (once per machine)."""
    if os.geteuid() != 0 and not shutil.which("buildah"):
        if _required():
            pytest.fail("buildah is missing and this is not root: apt-get install buildah")
        pytest.skip("buildah is missing (apt-get install buildah debootstrap, as root)")
    made = subprocess.run(
        [str(REPO / "scripts" / "build-image-base")], capture_output=True, text=True
    )
    if made.returncode != 0:
        pytest.fail(f"scripts/build-image-base failed:\n{made.stderr[-4000:]}")
    return ["buildah", *made.stdout.split()]


@pytest.fixture(scope="module")
def image(buildah: list[str]) -> Any:
    """The Dockerfile built on the local base; removed afterwards."""
    tag = f"localhost/gpu-allocator:test-{uuid.uuid4().hex[:8]}"
    build = [*buildah, "bud", "--isolation", "chroot", "--network", "host"]
    build += ["--build-arg", f"BASE={BASE}", "-t", tag, str(REPO)]
    done = subprocess.run(build, capture_output=True, text=True, timeout=2400)
    if done.returncode != 0:
        pytest.fail(f"buildah bud failed:\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}")
    yield tag
    subprocess.run([*buildah, "rmi", "-f", tag], capture_output=True)
    subprocess.run([*buildah, "rm", "--all"], capture_output=True)
    subprocess.run([*buildah, "rmi", "--prune"], capture_output=True)  # the build stage's


def test_the_built_image_runs_a_round_that_binds_a_pod(
    buildah: list[str],
    image: str,
    api_client: Callable[[str], Any],
    control_plane: Any,
    gpualloc_crds: Any,
    gpu_world: Any,
    tmp_path: Path,
) -> None:
    """The image runs as user 10001 with `gpu-allocator` as its entrypoint; that entrypoint,
    run in a container of the image on the host's network with a kubeconfig mounted, clears a
    round: the pending pod of its scheduler is bound and its wallet charged."""
    inspected = json.loads(
        subprocess.run(
            [*buildah, "inspect", "--type", "image", image],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    config = inspected["OCIv1"]["config"]
    assert config["User"] == "10001:10001"
    entrypoint = config["Entrypoint"]
    assert entrypoint == ["gpu-allocator"] and config["Cmd"] == ["run", "--once"]
    layers = inspected["OCIv1"]["rootfs"]["diff_ids"]
    size = json.loads(
        subprocess.run(
            [*buildah, "images", "--json", image], check=True, capture_output=True, text=True
        ).stdout
    )[0]["size"]  # as buildah prints it ("671 MB")
    print(f"image {image}: {size}, {len(layers)} layers", file=sys.stderr)

    admin = api_client(control_plane.admin_token)
    core = CoreV1Api(admin)
    ns, _ = gpu_world.cluster(admin, 2)
    scheduler = f"image-{uuid.uuid4().hex[:6]}"  # only this test's pod is a bid
    gpu_world.pod(core, ns, "job", 1, "5", scheduler)
    # What the container's user 10001 reads, mounted at /etc/gpu-allocator: the kubeconfig and
    # the API server's CA, owned by that user (as a Secret's files would be).
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    shutil.copy(control_plane.ca_file, mounted / "ca.crt")
    written = control_plane.write_kubeconfig(tmp_path / "kc", control_plane.admin_token)
    config_doc = json.loads(written.read_text())
    config_doc["clusters"][0]["cluster"]["certificate-authority"] = "/etc/gpu-allocator/ca.crt"
    (mounted / "kubeconfig").write_text(json.dumps(config_doc))
    for f in (mounted, mounted / "ca.crt", mounted / "kubeconfig"):
        os.chown(f, 10001, 10001)
    container = subprocess.run(
        [*buildah, "from", "--pull-never", image], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        run = [*buildah, "run", "--isolation", "chroot", "--network", "host"]
        run += ["--user", config["User"]]
        run += ["-v", f"{mounted}:/etc/gpu-allocator:ro", container, "--", *entrypoint]
        run += ["run", "--once", "--kubeconfig", "/etc/gpu-allocator/kubeconfig"]
        run += ["--solver", "greedy", "--scheduler-name", scheduler]
        done = subprocess.run(run, capture_output=True, text=True, timeout=300)
    finally:
        subprocess.run([*buildah, "rm", container], capture_output=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"bind {ns}/job -> " in done.stdout, done.stdout
    assert "applied: 1 bound" in done.stdout, done.stdout
    assert core.read_namespaced_pod("job", ns).spec.node_name is not None

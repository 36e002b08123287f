"""`export TARGET [NAMES...] [-o DIR]`: the profiles as files for Kubernetes, SkyPilot, Compose
or systemd (:mod:`llmctl.export`). Thin: options -> :class:`~llmctl.export.Options` -> files on
stdout or in DIR."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, List, Optional

import typer

from ..errors import UsageError
from ..output import Output
from .common import OptNamesArg, handle_errors, load_config

if TYPE_CHECKING:
    from ..export import ExportFile

TARGET_HELP = "k8s, skypilot, compose or systemd."
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
#: option -> the targets it applies to
ONLY = {"--namespace": ("k8s",), "--storage-class": ("k8s",), "--llmctl-image": ("k8s",),
        "--image": ("k8s", "skypilot", "compose"), "--install": ("systemd",)}
#: what to run next, by target (stderr, after the files are written)
NEXT = {"k8s": "kubectl apply -f {dir}", "skypilot": "sky serve up {dir}/NAME.sky.yaml",
        "compose": "podman-compose -f {dir}/compose.yaml up -d  (or docker compose)",
        "systemd": "systemctl --user daemon-reload && systemctl --user enable --now llmctl-NAME.service"}


def export(
    target: Annotated[str, typer.Argument(help=TARGET_HELP, show_default=False)],
    names: OptNamesArg = None,
    output: Annotated[Optional[Path], typer.Option(
        "-o", "--output", help="Directory to write the files to (default: print them on stdout).",
        show_default=False)] = None,
    namespace: Annotated[Optional[str], typer.Option(
        help="k8s: the namespace of every object (default: kubectl's current one).", show_default=False)] = None,
    image: Annotated[Optional[List[str]], typer.Option(
        "--image", help="[NAME=]IMAGE: the image of profile NAME's server, or of every server (repeatable). "
        "Default: docker.image, else llama.cpp's or vLLM's image for the backend.", show_default=False)] = None,
    llmctl_image: Annotated[Optional[str], typer.Option(
        "--llmctl-image", help="k8s: an image with llmctl, for the gateway and the init containers that pull "
        "models (default: llmctl:VERSION, built as the README shows).", show_default=False)] = None,
    storage_class: Annotated[Optional[str], typer.Option(
        "--storage-class", help="k8s: the StorageClass of the model volumes (default: the cluster's).",
        show_default=False)] = None,
    install: Annotated[bool, typer.Option(
        "--install", help="systemd: write the units to $XDG_CONFIG_HOME/systemd/user.")] = False,
) -> None:
    """Write the profiles as files for Kubernetes, SkyPilot, Compose or systemd.

    k8s: per profile a Deployment, a Service and a volume for its model, plus the llmctl gateway
    (Deployment, Service, ConfigMap with the tasks). skypilot: a `sky serve` service per profile.
    compose: one Compose file. systemd: a user unit per profile. The same profiles give the same
    bytes; comments say where each value came from. API keys are never written.
    """
    from ..export import TARGETS, Options, export as make
    from ..export.systemd import install_dir

    if target not in TARGETS:
        raise UsageError(f"no export target {target!r}: use one of {', '.join(TARGETS)}")
    given: dict[str, object] = {"--namespace": namespace, "--storage-class": storage_class,
                                "--llmctl-image": llmctl_image, "--image": image, "--install": install}
    _check(target, given, output)
    opts = Options(namespace=namespace, images=_images(image or []), storage_class=storage_class,
                   llmctl_argv=[sys.executable, "-m", "llmctl"])
    if llmctl_image:
        opts.llmctl_image = llmctl_image
    config = load_config()
    _unknown_images([n for n in opts.images if n and n not in config.profiles])
    files = make(target, config, names, opts)
    _emit(files, install_dir() if install else output, target)


def _check(target: str, given: dict[str, object], output: Path | None) -> None:
    for option, value in given.items():
        if value and target not in ONLY[option]:
            raise UsageError(f"{option} is for {' and '.join(ONLY[option])}, not {target}")
    if given["--install"] and output is not None:
        raise UsageError("give -o DIR or --install, not both (--install writes to $XDG_CONFIG_HOME/systemd/user)")
    ns = given["--namespace"]
    if isinstance(ns, str) and (len(ns) > 63 or not _NAMESPACE.match(ns)):
        raise UsageError(f"--namespace {ns!r} is not a Kubernetes namespace name (lower-case letters, digits, "
                         "'-', at most 63)")


def _images(values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        name, eq, ref = v.partition("=")
        name, ref = (name, ref) if eq else ("", v)
        if not ref or any(c.isspace() for c in ref):
            raise UsageError(f"--image {v!r}: give IMAGE or NAME=IMAGE")
        out[name] = ref
    return out


def _unknown_images(unknown: list[str]) -> None:
    if unknown:
        raise UsageError(f"--image names no profile: {', '.join(unknown)} (export's profiles: see "
                         "`llmctl profiles list`)")


def _emit(files: list[ExportFile], directory: Path | None, target: str) -> None:
    from ..export import write

    out = Output()
    if directory is None:  # one stream: YAML documents, or units each under its file name
        if target == "systemd":
            out.text("\n".join(f"### {f.name}\n{f.text}" for f in files).rstrip("\n"))
        else:
            out.text("---\n".join(f.text for f in files).rstrip("\n"))
        return
    for path in write(files, directory):
        out.text(str(path))
    out.hint("next: " + NEXT[target].format(dir=directory))


COMMANDS = {"export": handle_errors(export)}

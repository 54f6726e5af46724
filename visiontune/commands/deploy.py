"""`visiontune deploy`: roll a stored model out, on this machine or to Kubernetes.

``--target local`` (default) builds the CPU image and switches the local
deployment on ``127.0.0.1:PORT`` to it blue/green, with no failed request
(``visiontune.lifecycle.release``). ``--target kubernetes`` builds, pushes and
applies a cluster overlay (``visiontune.lifecycle.cluster``); ``--dry-run``
prints its commands. A release that fails leaves what was serving in place,
never changes a stage, and exits 2. `visiontune rollback --redeploy` releases
with the same flags.
"""

from __future__ import annotations

import argparse

from contract.savedmodel import DEFAULT_MODEL_TAG
from visiontune.errors import CommandError

NAME = "deploy"
HELP = "roll a stored model out: locally with podman (blue/green) or to Kubernetes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL_TAG,
        help=f"the model to roll out, NAME@STAGE or NAME:VERSION (default {DEFAULT_MODEL_TAG})",
    )
    add_target_arguments(parser)
    parser.add_argument(
        "--stop", action="store_true", help="remove the local deployment on --port instead"
    )


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """Where and how a release goes (shared with `visiontune rollback --redeploy`)."""
    parser.add_argument("--target", choices=("local", "kubernetes"), default="local")
    local = parser.add_argument_group("--target local")
    local.add_argument(
        "--port", type=int, default=3300, help="loopback port clients use (default 3300)"
    )
    local.add_argument(
        "--ready-timeout",
        type=float,
        default=300,
        help="seconds the new pod may take to serve (default 300)",
    )
    local.add_argument(
        "--rebuild",
        action="store_true",
        help="build the model's image again (each model version's image is kept and reused)",
    )
    cluster = parser.add_argument_group("--target kubernetes")
    cluster.add_argument("--registry", help="registry to push the image to, e.g. ghcr.io/me")
    cluster.add_argument(
        "--overlay",
        choices=("gpu", "cpu"),
        default="gpu",
        help="deploy/k8s/overlays/OVERLAY to apply (default gpu)",
    )
    cluster.add_argument(
        "--dry-run", action="store_true", help="print the commands instead of running them"
    )


def run(args: argparse.Namespace) -> int:
    check_target(args)
    if args.stop:
        from visiontune.lifecycle.release import LocalRelease

        if args.target != "local":
            raise CommandError("--stop is for --target local; use kubectl delete -k instead")
        release = LocalRelease(port=args.port)
        release.stop()
        print(f"stopped the local deployment on {release.url}")
        return 0
    from contract.stages import resolve

    release_tag(str(resolve(args.model)), args)
    return 0


def check_target(args: argparse.Namespace) -> None:
    """Flags missing for the target, or belonging to the other one; and a checkout to
    release from (the bentofiles and deploy/ are not part of the installed package)."""
    from visiontune.lifecycle.release import require_checkout

    require_checkout()
    if args.target == "kubernetes" and not args.registry:
        raise CommandError("--target kubernetes needs --registry (where to push the image)")
    if args.target == "local" and (args.dry_run or args.registry):
        raise CommandError("--dry-run and --registry are for --target kubernetes")
    if not 0 < args.port < 65536:
        raise CommandError(f"--port must be a TCP port, not {args.port}")


def release_tag(tag: str, args: argparse.Namespace) -> None:
    """Roll ``tag`` out as the target flags say, and say where it serves."""
    if args.target == "local":
        from visiontune.lifecycle.release import LocalRelease

        local = LocalRelease(args.port, args.ready_timeout, args.rebuild)
        url = local.deploy(tag)
        print(f"{tag} serving at {url}")
        return
    from visiontune.lifecycle.cluster import ClusterRelease

    release = ClusterRelease(tag, args.registry, args.overlay)
    if args.dry_run:
        print("\n".join(release.plan()))
        return
    release.deploy()
    print(f"{tag} rolled out to namespace {release.namespace} ({release.image})")

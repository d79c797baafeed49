"""The ``--ray`` options of ``medcf batch`` and ``medcf pairs`` (parsing only: no Ray here)."""

from __future__ import annotations

import argparse

from medcf.errors import InputError
from medcf.onray.address import check_address


def add_ray_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ray", metavar="ADDRESS|local",
                        help="run the edits on Ray actors that each load the model once (on their GPU when they "
                             "have one): 'local' starts a cluster on this machine (loopback), ADDRESS joins one "
                             "(host:port or ray://host:port; medcf must be installed on its nodes). Needs "
                             "pip install 'medcf[ray]'")
    parser.add_argument("--ray-workers", type=int, metavar="N",
                        help="actors (editors) to start (default: one per GPU of the cluster, else one per CPU)")


def check_ray_options(args: argparse.Namespace) -> None:
    """Bad ``--ray`` options in one line before anything is read, loaded or written (a
    cluster address that does not answer included: Ray itself would retry it for minutes)."""
    if args.ray_workers is not None and args.ray is None:
        raise InputError("--ray-workers only applies with --ray local|ADDRESS")
    if args.ray_workers is not None and args.ray_workers < 1:
        raise InputError(f"--ray-workers {args.ray_workers}: at least 1")
    if args.ray is not None and args.ray != "local":
        check_address(args.ray)

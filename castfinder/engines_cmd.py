"""`castfinder engines`: start (or stop) the engine workers of a Ray cluster, the processes that
hold the models when the bot runs with CASTFINDER_ENGINE_RAY_ADDRESS (core/ray_engines.py)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from castfinder.common import EXIT_USAGE, engine_output_to_stderr, fail

if TYPE_CHECKING:
    from core import Settings


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("engines", parents=parents, help="start the engine workers of a Ray cluster (for the bot)",
                       description="Start N engine workers (Ray actors that load the models once and answer the "
                                   "bot's searches) on a Ray cluster, or stop them. Workers already running are "
                                   "kept, with their settings (--stop them first to change those); Ray restarts "
                                   "one that dies. The settings (models, index folder) are "
                                   "this command's: the index folder must be at the same path on every machine.")
    p.add_argument("--ray", default="auto", metavar="ADDRESS",
                   help="the cluster: host:6379, ray://host:10001, or auto (RAY_ADDRESS or the local one)")
    p.add_argument("--workers", type=int, default=1, help="how many workers (default 1)")
    p.add_argument("--cpus", type=float, default=1.0, help="CPUs Ray reserves per worker (default 1)")
    p.add_argument("--gpus", type=float, default=None,
                   help="GPUs per worker (default: one each when the cluster has enough, a share when fewer, none "
                        "without)")
    p.add_argument("--calls", type=int, default=2, help="calls a worker answers at once (default 2)")
    p.add_argument("--stop", action="store_true", help="stop every engine worker instead")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from core import ray_engines

    if args.stop:
        count = ray_engines.stop_workers(args.ray)
        print(f"stopped {count} engine worker(s)")
        return 0
    if args.workers < 1 or args.calls < 1 or args.cpus < 0 or (args.gpus is not None and args.gpus < 0):
        return fail("--workers and --calls must be at least 1, --cpus and --gpus not negative", EXIT_USAGE)
    with engine_output_to_stderr():
        pids = ray_engines.start_workers(args.ray, args.workers, settings, cpus=args.cpus, gpus=args.gpus,
                                         concurrency=args.calls)
    print(f"{len(pids)} engine worker(s) ready on {args.ray} (pids {', '.join(map(str, pids))}); "
          f"point the bot at them with CASTFINDER_ENGINE_RAY_ADDRESS={args.ray}")
    return 0

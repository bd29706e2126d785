"""``python -m flowprof.device``: list the devices, or measure this machine's ceilings again.

python -m flowprof.device list
python -m flowprof.device measure cpu [--threads N] [--quick]
python -m flowprof.device measure cuda
"""

from __future__ import annotations

import argparse
import sys

from flowprof.device.table import GPUS, MEASURED


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flowprof.device", description=__doc__)
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="the devices --device takes, with their ceilings and sources")
    m = sub.add_parser("measure", help="measure a device at hand and cache its ceilings")
    m.add_argument("name", choices=MEASURED)
    m.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own)")
    m.add_argument("--quick", action="store_true", help="short ladders (a smoke run)")
    args = p.parse_args(argv)
    if args.action == "list":
        for d in GPUS.values():
            peaks = ", ".join(f"{k} {v / 1e12:g}" for k, v in d.matrix_flops.items())
            print(f"{d.name}: {d.title}; dense TFLOP/s {peaks}; {d.bandwidth / 1e9:g} GB/s")
            for s in d.sources:
                print(f"    source: {s}")
        print("cpu: this machine's CPU, measured (python -m flowprof.device measure cpu)")
        print("cuda: the CUDA device at hand, measured (python -m flowprof.device measure cuda)")
        return 0
    import torch

    from flowprof.device import microbench
    from flowprof.errors import FlowprofError

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = microbench.measure(args.name, quick=args.quick)
    except FlowprofError as exc:
        print(f"flowprof: {exc}", file=sys.stderr)
        return 2
    path = microbench.save(device, microbench.cache_path(args.name))
    peak = ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in device.matrix_flops.items())
    copy = device.measured["stream_copy"][-1]
    print(f"{device.title}: matrix peak {peak}")
    print(
        f"  STREAM triad {device.bandwidth / 1e9:.1f} GB/s, copy {copy[1] / 1e9:.1f} GB/s "
        f"(arrays of {copy[0] / 2**20:.0f} MiB moved)"
    )
    print(
        f"  vector {device.vector_flops / 1e9:.2f} GFLOP/s; call {device.call_seconds * 1e6:.1f} "
        f"us, op {device.op_seconds * 1e6:.1f} us; took {device.measured['seconds_taken']} s"
    )
    print(f"  cached in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

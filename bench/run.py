"""onnxplain against the hardware limit and the peers, in one table (`make bench` runs this).

Rows, each with our time, the limit's, the peer's and their ratios (medians of interleaved rounds, all in one
process with the same threads: ONNX Runtime intra-op = torch = the usable cores, numpy's BLAS = 1):
  1  RISE and occlusion vs the same number of plain forwards at the best batch size vs PyTorch RISE / Captum
  2  saliency, integrated gradients, Grad-CAM, guided backprop, LRP vs plain forwards of the rows vs Captum / Zennit
  3  every class at once (10- and 1000-class heads) vs one target at a time, K times
  4  the explain call through gRPC (a real server on loopback) vs the engine called in this process
  5  throughput of many clients with dynamic batching on vs off
  6  time against image size, number of masks and number of steps (ms per pass)
The claim is the ratios, not the seconds: plan.py sizes the work to finish in minutes on a 2-core CPU.

    python bench/run.py [--rows 1 2 ...] [--repeat N] [--markdown] [--quick] [--device cuda]
"""

from __future__ import annotations

import os

# Before numpy loads: numpy's BLAS threads spin after each call and steal ONNX Runtime's cores (as in the server).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_context import Bench
from common import cpu_cores, load_average, log, machine_description, print_description, print_results
from engine import Engine
from plan import FULL, GPU, QUICK
from rows import all_classes, concurrency, gradients, perturbation, scaling, transport
from table import COLUMNS

FAMILIES = {1: perturbation, 2: gradients, 3: all_classes, 4: transport, 5: concurrency, 6: scaling}
CACHE = Path(__file__).parent / ".cache"


def main() -> int:
    args = parse_args()
    plan = QUICK if args.quick else GPU if args.device == "cuda" else FULL
    if args.repeat:
        plan = dataclasses.replace(plan, repeat=args.repeat)
    threads = cpu_cores()
    torch.set_num_threads(threads)
    description = machine_description()
    description["threads"] = f"ONNX Runtime intra-op {threads}, torch {torch.get_num_threads()}"
    description["load before"] = load_average()
    started = time.perf_counter()
    table = []
    with tempfile.TemporaryDirectory(prefix="onnxplain-bench-") as workspace:
        repository = Path(workspace) / "engine"
        repository.mkdir()
        engine = Engine(repository, threads, args.cache, plan, args.device)
        description["providers"] = ", ".join(str(provider) for provider in engine.providers)
        print_description(description, args.markdown)
        bench = Bench(plan, engine, threads, Path(workspace))
        for family in args.rows:
            rows = FAMILIES[family].rows(bench)
            for row in rows:
                log(" | ".join(row.cells()))  # kept if a later family fails or runs out of time
            table.extend(rows)
    print_results(COLUMNS, [row.cells() for row in table], args.markdown, started)
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", type=int, choices=sorted(FAMILIES), default=sorted(FAMILIES))
    parser.add_argument("--repeat", type=int, help="rounds; each figure is their median (default 3, --quick 1)")
    parser.add_argument("--markdown", action="store_true", help="print the table in Markdown, for RESULTS.md")
    parser.add_argument("--quick", action="store_true", help="tiny models, one round: seconds (the smoke test)")
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="cuda: CUDA provider, torch on the GPU, the GPU plan"
    )
    parser.add_argument("--cache", type=Path, default=CACHE, help="where exported ONNX files are kept")
    args = parser.parse_args()
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be positive")
    return args


if __name__ == "__main__":
    sys.exit(main())

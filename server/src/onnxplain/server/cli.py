"""`onnxplain serve`: registered into the client's CLI through the `onnxplain.commands` entry point."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

# numpy's BLAS threads spin after each call and steal the cores ONNX Runtime needs; set before numpy loads.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")


def register_serve(subparsers: argparse._SubParsersAction) -> None:
    from onnxplain.server.demo import REPOSITORY

    parser = subparsers.add_parser("serve", help="run the onnxplain gRPC server on a model repository")
    parser.add_argument(
        "--model-repository",
        type=Path,
        default=REPOSITORY,
        help="DIR/<model>/<version>/model.onnx (+ DIR/<model>/config.yaml); default: the embedded demo",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for all interfaces)")
    parser.add_argument("--port", type=int, default=50051, help="port to listen on; 0 picks a free one")
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto uses CUDA when it really loads, else the CPU",
    )
    parser.add_argument("--device-id", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: number of cores)")
    parser.add_argument("--workers", type=int, default=2, help="requests computed at the same time")
    parser.add_argument(
        "--max-image-pixels",
        type=int,
        default=40_000_000,
        help="encoded images above this many pixels are refused before decoding",
    )
    parser.add_argument(
        "--max-forward-passes", type=int, default=100_000, help="most forward passes one image's explanation may take"
    )
    parser.add_argument(
        "--max-batch-size", type=int, default=0, help="most images per ONNX Runtime run (0: 16 on CPU, 64 on GPU)"
    )
    parser.add_argument(
        "--batch-memory-mb",
        type=int,
        default=0,
        help="memory one perturbation batch may take (inputs and activations); 0: a quarter of free memory, <= 1 GiB",
    )
    parser.add_argument("--log-level", default="INFO")
    parser.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from onnxplain.server.app import serve
    from onnxplain.server.settings import Limits, ServerSettings

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.model_repository.is_dir():
        raise SystemExit(f"error: model repository {args.model_repository} is not a folder")
    settings = ServerSettings(
        model_repository=args.model_repository,
        host=args.host,
        port=args.port,
        device=args.device,
        device_id=args.device_id,
        threads=args.threads,
        workers=args.workers,
        batch_memory_bytes=args.batch_memory_mb * 1024 * 1024,
        max_batch_size=args.max_batch_size,
        limits=Limits(max_image_pixels=args.max_image_pixels, max_forward_passes=args.max_forward_passes),
    )
    asyncio.run(serve(settings))
    return 0

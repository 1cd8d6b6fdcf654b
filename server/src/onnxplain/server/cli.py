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
    from onnxplain.server.observability.logs import LOG_FORMATS

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
    parser.add_argument(
        "--workers",
        type=int,
        default=32,
        help="requests handled at once (decoding, waiting for their runs; long explanations hold at most half, and "
        "at least 2 are needed); the runs go through each model's queue",
    )
    parser.add_argument(
        "--batch-delay-us",
        type=int,
        default=0,
        help="microseconds a run waits for other requests' rows to share its batch (config.yaml overrides)",
    )
    parser.add_argument(
        "--max-queue-size", type=int, default=256, help="runs queued per model before RESOURCE_EXHAUSTED"
    )
    parser.add_argument("--instance-count", type=int, default=1, help="threads running each model's batches")
    parser.add_argument(
        "--max-concurrent-explanations",
        type=int,
        default=2,
        help="explanations of more than one pass computed at once per model",
    )
    parser.add_argument(
        "--max-waiting-explanations",
        type=int,
        default=64,
        help="explanations waiting for a turn per model before RESOURCE_EXHAUSTED",
    )
    parser.add_argument(
        "--max-connection-age-ms",
        type=int,
        default=0,
        help="close connections after this long (GOAWAY) so clients behind L4 balancers rebalance; 0: never",
    )
    parser.add_argument(
        "--shutdown-grace-s",
        type=float,
        default=10.0,
        help="seconds calls in flight get to finish after SIGTERM before they are cancelled",
    )
    parser.add_argument(
        "--max-image-pixels",
        type=int,
        default=40_000_000,
        help="encoded images above this many pixels are refused before decoding",
    )
    parser.add_argument(
        "--max-request-pixels",
        type=int,
        default=160_000_000,
        help="a request whose encoded images have more pixels together is refused before any is decoded",
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
    parser.add_argument(
        "--log-format", choices=LOG_FORMATS, default="json", help="json: one object per line (one per request); text"
    )
    parser.add_argument(
        "--metrics-port", type=int, default=0, help="serve Prometheus metrics at http://HOST:PORT/metrics; 0: off"
    )
    parser.add_argument(
        "--tls-cert", type=Path, metavar="PEM", help="server certificate chain: serve TLS (re-read on change)"
    )
    parser.add_argument("--tls-key", type=Path, metavar="PEM", help="the certificate's unencrypted private key")
    parser.add_argument(
        "--tls-client-ca", type=Path, metavar="PEM", help="mutual TLS: clients need a certificate signed by this CA"
    )
    parser.add_argument(
        "--tokens-file",
        type=Path,
        metavar="FILE",
        help="bearer tokens, lines '<caller|admin> <token>' (re-read on change); also $ONNXPLAIN_CALLER_TOKENS and "
        "$ONNXPLAIN_ADMIN_TOKENS; no token anywhere: auth off",
    )
    parser.add_argument(
        "--max-model-bytes",
        type=int,
        default=4 * 1024**3,
        help="largest model a version may be, model.onnx plus its external data",
    )
    parser.add_argument(
        "--model-load-timeout-s",
        type=_positive_seconds,
        default=300.0,
        help="seconds a model version may take to load before it is abandoned and reported unavailable "
        "(config.yaml's load_timeout_s may lower it)",
    )
    parser.add_argument(
        "--max-message-bytes", type=int, default=256 * 1024 * 1024, help="largest request or response message"
    )
    parser.add_argument(
        "--partial-map-interval-s",
        type=float,
        default=0.5,
        help="seconds between the partial maps an explanation stream sends",
    )
    parser.add_argument(
        "--memory-budget",
        type=int,
        default=0,
        metavar="MIB",
        help="MiB the sessions of derived graphs (gradient, CAM, LRP, RISE graphs) of all models may hold; the least "
        "recently used are evicted, a graph that cannot fit is refused; 0: half the machine's or container's memory",
    )
    parser.set_defaults(handler=run_serve)


def _positive_seconds(text: str) -> float:
    seconds = float(text)
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return seconds


def run_serve(args: argparse.Namespace) -> int:
    import asyncio

    from onnxplain.server.app import serve
    from onnxplain.server.observability.logs import configure_logging
    from onnxplain.server.settings import ConfigurationError, Limits, ServerSettings

    configure_logging(args.log_level, args.log_format)
    if not args.model_repository.is_dir():
        raise SystemExit(f"error: model repository {args.model_repository} is not a folder")
    if (args.tls_cert is None) != (args.tls_key is None) or (args.tls_client_ca and not args.tls_cert):
        raise SystemExit("error: --tls-cert and --tls-key go together, and --tls-client-ca needs both")
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
        batch_delay_us=args.batch_delay_us,
        max_queue_size=args.max_queue_size,
        instance_count=args.instance_count,
        max_concurrent_explanations=args.max_concurrent_explanations,
        max_waiting_explanations=args.max_waiting_explanations,
        max_connection_age_ms=args.max_connection_age_ms,
        shutdown_grace_s=args.shutdown_grace_s,
        metrics_port=args.metrics_port,
        tls_certificate=args.tls_cert,
        tls_private_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        tokens_file=args.tokens_file,
        max_model_bytes=args.max_model_bytes,
        model_load_timeout_s=args.model_load_timeout_s,
        limits=Limits(
            max_image_pixels=args.max_image_pixels,
            max_request_pixels=args.max_request_pixels,
            max_forward_passes=args.max_forward_passes,
            max_message_bytes=args.max_message_bytes,
        ),
        partial_map_interval_s=args.partial_map_interval_s,
        memory_budget_bytes=args.memory_budget * 1024 * 1024,
    )
    try:
        asyncio.run(serve(settings))
    except ConfigurationError as error:
        raise SystemExit(f"error: {error}") from None
    return 0

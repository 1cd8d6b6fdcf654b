"""grpc.health.v1: NOT_SERVING until the models are loaded and warmed, NOT_SERVING again while draining."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from onnxplain.server.inference.v2 import grpc_predict_v2_pb2 as oip_pb
from onnxplain.v1 import explain_service_pb2

SERVICE_NAMES = (
    "",
    explain_service_pb2.DESCRIPTOR.services_by_name["ExplainService"].full_name,
    oip_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
)


async def add_health(server: grpc.aio.Server) -> health.aio.HealthServicer:
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    await set_serving(servicer, False)
    return servicer


async def set_serving(servicer: health.aio.HealthServicer, serving: bool) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in SERVICE_NAMES:
        await servicer.set(name, status)


async def is_serving(servicer: health.aio.HealthServicer) -> bool:
    """The whole server's status (service ""), which is always set, so Check never aborts and needs no context."""
    response = await servicer.Check(health_pb2.HealthCheckRequest(service=""), None)
    return response.status == health_pb2.HealthCheckResponse.SERVING

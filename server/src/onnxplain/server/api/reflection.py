"""Server reflection, so grpcurl and clients in other languages work without our .proto files."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection

from onnxplain.server.inference.v2 import grpc_predict_v2_pb2 as oip_pb
from onnxplain.v1 import explain_service_pb2


def add_reflection(server: grpc.aio.Server) -> None:
    names = (
        explain_service_pb2.DESCRIPTOR.services_by_name["ExplainService"].full_name,
        oip_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    )
    reflection.enable_server_reflection(names, server)

"""onnxplain server: explains the decisions of ONNX image classifiers over gRPC.

Request path, one folder each: api (gRPC transport) -> handlers (transport-free) -> repository (model registry)
-> methods (attribution methods) -> engine (batched ONNX Runtime execution).
"""

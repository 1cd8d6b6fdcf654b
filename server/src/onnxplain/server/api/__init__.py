"""The gRPC transport: thin servicers that convert protobuf, call handlers, and map errors to status codes."""

"""Transport-free request handlers: plain Python values in, plain values out. The gRPC layer only converts."""

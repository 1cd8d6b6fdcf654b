"""Backward graphs: VJP rules per ONNX op, rule sets, and the builder that appends backward ops to a model."""

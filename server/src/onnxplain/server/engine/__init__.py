"""The engine: ONNX Runtime sessions, provider choice, batched runs and cancellation."""

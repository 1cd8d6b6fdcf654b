"""The model repository (Triton's layout): DIR/<model>/<version>/model.onnx plus an optional DIR/<model>/config.yaml."""

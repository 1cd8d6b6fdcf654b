"""What a user would run instead of onnxplain: Captum, Zennit and a straightforward RISE, on the torch model."""

"""Report classification at runtime: windows, ONNX Runtime, Triton client (no torch)."""

"""Training and export of the report classifier (extras `train`: torch, transformers, onnx)."""

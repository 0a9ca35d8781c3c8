"""ONNX export with PyTorch parity checks, and the Triton model repository writer."""

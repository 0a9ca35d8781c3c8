"""ganserve: small-latent GANs trained with PyTorch, exported to ONNX/Triton, served over gRPC."""

__version__ = "0.1.0"

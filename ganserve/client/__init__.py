"""Client SDK for the ganserve gRPC API (imports without torch or onnx)."""

"""The gRPC generation service."""

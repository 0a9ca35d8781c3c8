"""Generated gRPC/protobuf stubs for the ganserve.v1 API (see proto/ganserve/v1/*.proto)."""

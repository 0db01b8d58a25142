"""The REST API's documentation, generated from the same annotations the gateway serves
(grpc-gateway's protoc-gen-openapiv2 counterpart). Nothing is imported here, so that
`python -m service.apidocs.openapi` runs cleanly."""

"""The HTTP/JSON gateway, a gRPC client of the server in the manner of grpc-gateway's runtime:
`routes.py` (the mux, compiled from the `google.api.http` options), `transcoding.py` (the
marshaler, around protobuf's json_format), `errors.py` (the one error handler), `server.py` (the
aiohttp application), `dispatch.py` (in process, or over a channel)."""

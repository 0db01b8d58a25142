"""The HTTP/JSON gateway, a gRPC client of the server in the manner of grpc-gateway's runtime:
`routes.py` (the route table, compiled from the `google.api.http` options), `mux.py` (the handler
that routes, calls and answers), `transcoding.py` (the marshaler, around protobuf's json_format),
`errors.py` (the one error handler), `dispatch.py` (in process, or over a channel). The listener
that serves it is service/http_server.py."""

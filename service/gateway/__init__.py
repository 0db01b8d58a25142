"""The HTTP/JSON gateway, a gRPC client of the servicers in the manner of grpc-gateway's runtime:
routes (from the annotations), mux (route, call, answer), transcoding (the marshaler), errors (the
one error handler), dispatch (in process or over a channel). service/http_server.py serves it."""

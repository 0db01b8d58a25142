"""The HTTP/JSON gateway: a gRPC client of the server, in the manner of grpc-gateway.

Routes come from the `google.api.http` options of the compiled descriptors (`routes.py`), so a
newly annotated RPC is served with no change here. The gateway knows no business rule: it turns
JSON into the request message (`transcoding.py`), forwards `Authorization` and a request id as
metadata, and turns the reply or the status back into JSON and an HTTP status (`errors.py`, the
only place a gRPC status becomes HTTP). `server.py` holds the aiohttp application and
`openapi.py` describes the same route table as an OpenAPI 3 document.

Nothing is imported here, so that `python -m service.gateway.openapi` runs cleanly.
"""

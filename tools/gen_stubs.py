"""Generate the Python gRPC stubs from proto/ (`make stubs`).

The include path for google/api/*.proto comes from the installed googleapis-common-protos and
the one for google/protobuf/*.proto from grpcio-tools, so no .proto file is vendored. Output is
deterministic, so `make verify-stubs` can compare it with what is committed.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

import google.api.annotations_pb2 as annotations
from grpc_tools import protoc


def main(out_dir: str, *protos: str) -> int:
    googleapis = Path(annotations.__file__).resolve().parents[2]
    well_known = Path(str(resources.files("grpc_tools") / "_proto"))
    out = Path(out_dir)
    args = [
        "grpc_tools.protoc",
        "-Iproto",
        f"-I{googleapis}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *protos,
    ]
    code = protoc.main(args)
    if code != 0:
        return int(code)
    for package in {Path(p).relative_to("proto").parent for p in protos}:
        for level in (package, *package.parents[:-1]):
            (out / level / "__init__.py").touch()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

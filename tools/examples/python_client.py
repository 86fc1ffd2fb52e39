#!/usr/bin/python3
"""A minimal Python client of an epserve router.

Compiles proto/epserve/v1/epserve.proto into Python stubs in a temporary
directory (nothing generated is kept), calls Generate with a text prompt,
prints the text as it streams, then one JSON line with the finish reason,
matched stop, usage and output token ids.

Needs Debian's python3-grpcio and python3-grpc-tools (for /usr/bin/python3):

    tools/examples/python_client.py --server 127.0.0.1:50051 --prompt "Hello" --max-tokens 16
"""

import argparse
import importlib
import json
import os
import re
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTO_ROOT = os.path.join(REPO, "proto")
PROTO = "epserve/v1/epserve.proto"


def require(module, package):
    """Imports `module`, or exits naming the Debian package that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        sys.exit(
            f"python_client.py: error: cannot import {module} ({e}); install Debian's "
            f"{package} (apt-get install {package}) for this interpreter ({sys.executable})"
        )


def compile_stubs(out_dir):
    """Writes epserve/v1/epserve_pb2{,_grpc}.py under out_dir; returns the two modules."""
    protoc = require("grpc_tools.protoc", "python3-grpc-tools")
    # Debian 12's grpc_tools bundles protoc 3.6, which predates proto3
    # `optional`. An optional field is a oneof of one field named "_<field>"
    # (that is how protoc itself represents it), with the same wire format and
    # the same HasField(); the copy compiled here spells it that way.
    with open(os.path.join(PROTO_ROOT, PROTO), encoding="utf-8") as f:
        text = f.read()
    text = re.sub(
        r"^(\s*)optional\s+([\w.]+)\s+(\w+)\s*=\s*(\d+)\s*;",
        r"\1oneof _\3 { \2 \3 = \4; }",
        text,
        flags=re.MULTILINE,
    )
    src = os.path.join(out_dir, "src")
    os.makedirs(os.path.join(src, os.path.dirname(PROTO)))
    with open(os.path.join(src, PROTO), "w", encoding="utf-8") as f:
        f.write(text)
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"--proto_path={src}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            os.path.join(src, PROTO),
        ]
    )
    if code != 0:
        sys.exit(f"python_client.py: error: grpc_tools.protoc failed on {PROTO} (exit {code})")
    sys.path.insert(0, out_dir)
    pb2 = importlib.import_module("epserve.v1.epserve_pb2")
    pb2_grpc = importlib.import_module("epserve.v1.epserve_pb2_grpc")
    return pb2, pb2_grpc


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", default="127.0.0.1:50051", help="HOST:PORT of the router")
    parser.add_argument("--prompt", required=True, help="prompt text")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--seed", type=int, help="sampling seed")
    parser.add_argument("--ignore-eos", action="store_true")
    parser.add_argument("--timeout-s", type=float, default=None, help="call deadline")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("EPSERVE_API_KEY"),
        help="key for a router started with --api-key-file (default: $EPSERVE_API_KEY)",
    )
    parser.add_argument("--tls-ca", help="PEM CA of the router's --tls-cert: talk TLS")
    parser.add_argument("--tls-cert", help="PEM client certificate (router with --tls-client-ca)")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    args = parser.parse_args()
    # The key travels as call metadata: authorization: Bearer KEY.
    metadata = [("authorization", f"Bearer {args.api_key}")] if args.api_key else None

    grpc = require("grpc", "python3-grpcio")
    with tempfile.TemporaryDirectory(prefix="epserve_stubs_") as stubs:
        pb2, pb2_grpc = compile_stubs(stubs)

        request = pb2.GenerateRequest(text=args.prompt)
        params = request.sampling_params
        params.max_tokens = args.max_tokens
        params.temperature = args.temperature  # set explicitly: unset means 1.0
        params.ignore_eos = args.ignore_eos
        if args.seed is not None:
            params.seed = args.seed

        complete = None
        def read(path):
            with open(path, "rb") as f:
                return f.read()

        if args.tls_ca:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=read(args.tls_ca),
                private_key=read(args.tls_key) if args.tls_key else None,
                certificate_chain=read(args.tls_cert) if args.tls_cert else None,
            )
            channel = grpc.secure_channel(args.server, credentials)
        else:
            channel = grpc.insecure_channel(args.server)
        with channel:
            stub = pb2_grpc.EpserveStub(channel)
            try:
                for response in stub.Generate(request, timeout=args.timeout_s, metadata=metadata):
                    kind = response.WhichOneof("response")
                    if kind == "chunk":
                        sys.stdout.write(response.chunk.text)
                        sys.stdout.flush()
                    elif kind == "complete":
                        complete = response.complete
            except grpc.RpcError as e:
                sys.stdout.write("\n")
                sys.exit(f"python_client.py: error: Generate failed: {e.code().name}: {e.details()}")
        sys.stdout.write("\n")
        if complete is None:
            sys.exit("python_client.py: error: the stream ended without a complete message")

        stop = complete.WhichOneof("matched_stop")
        summary = {
            "finish_reason": pb2.FinishReason.Name(complete.finish_reason)
            .removeprefix("FINISH_REASON_")
            .lower(),
            "matched_stop": getattr(complete, stop) if stop else None,
            "usage": {
                "prompt_tokens": complete.usage.prompt_tokens,
                "completion_tokens": complete.usage.completion_tokens,
                "cached_tokens": complete.usage.cached_tokens,
            },
            "output_ids": list(complete.output_ids),
        }
        print(json.dumps(summary))


if __name__ == "__main__":
    main()

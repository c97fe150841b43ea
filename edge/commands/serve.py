"""`grok-edge serve`: an OpenAI-compatible HTTP server with continuous batching (extra ``server``)."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path

from edge.commands.expert_args import add_device_args, add_expert_cache_args


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a Grok GGUF file")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080; 0: any free port)")
    parser.add_argument(
        "--parallel",
        "-np",
        type=int,
        default=4,
        help="sequences decoded together, each its own slot (default 4)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("GROK_EDGE_API_KEY"),
        help="require 'Authorization: Bearer KEY' on every request (default: $GROK_EDGE_API_KEY, else none)",
    )
    parser.add_argument(
        "--model-id", default=None, help="the model name clients use (default: the file's stem)"
    )
    parser.add_argument("-t", "--threads", type=int, default=None, help="threads (default: all cores)")
    parser.add_argument(
        "-c",
        "--ctx-size",
        type=int,
        default=None,
        help="context tokens per slot; 0 = the model's (default: the model's, at most 4096)",
    )
    parser.add_argument(
        "-b", "--batch-size", type=int, default=512, help="tokens per forward pass (default 512)"
    )
    parser.add_argument("--kv-type", choices=["f16", "q8_0", "f32"], default="f16", help="KV cache type")
    parser.add_argument(
        "--queue", type=int, default=64, help="requests that may wait for a slot (default 64)"
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds a request may take (default 600)"
    )
    add_expert_cache_args(parser)
    add_device_args(parser)
    parser.add_argument(
        "--port-file", default=None, help=argparse.SUPPRESS
    )  # tests: write the bound port here


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError as exc:
        raise RuntimeError("the server needs its extra: pip install 'grok-edge[server]'") from exc
    from edge.batch import BatchContext
    from edge.gguf import GGUFFile
    from edge.llama import load_tokenizer
    from edge.server.app import create_app
    from edge.server.scheduler import Scheduler

    if args.parallel < 1:
        raise ValueError(f"--parallel {args.parallel} must be >= 1")
    if args.queue < 0 or args.timeout <= 0:
        raise ValueError("--queue must be >= 0 and --timeout > 0")
    if not _is_loopback(args.host) and not args.api_key:
        print(
            f"grok-edge serve: warning: listening on {args.host} without --api-key: "
            "anyone who can reach it can use it",
            file=sys.stderr,
        )
    tokenizer = load_tokenizer(args.model)
    n_ctx = args.ctx_size
    if n_ctx is None:  # the model's context, at most 4096 tokens a slot (each slot holds its own KV cache)
        with GGUFFile(args.model) as f:
            n_ctx = min(4096, int(f.metadata.get("grok.context_length", 4096)))
    bc = BatchContext(
        args.model,
        n_seq=args.parallel,
        n_ctx=n_ctx,
        n_batch=args.batch_size,
        n_threads=args.threads,
        kv_type=args.kv_type,
        expert_cache=args.expert_cache,
        expert_policy=args.expert_policy,
        prefetch=not args.no_prefetch,
        device=args.device,
        gpu_memory=args.gpu_memory,
    )
    scheduler = Scheduler(bc, tokenizer, max_queue=args.queue)
    model_id = args.model_id or Path(args.model).stem
    app = create_app(scheduler, model_id, api_key=args.api_key, timeout_s=args.timeout)
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    scheduler.start()
    try:
        if args.port_file:
            import threading

            def announce() -> None:
                import time

                while not server.started:
                    time.sleep(0.05)
                port = server.servers[0].sockets[0].getsockname()[1]
                tmp = Path(args.port_file + ".tmp")
                tmp.write_text(str(port))
                os.replace(tmp, args.port_file)  # readers never see a partial number

            threading.Thread(target=announce, daemon=True).start()
        print(
            f"grok-edge serve: {model_id} on http://{args.host}:{args.port}/v1 "
            f"({args.parallel} slots of {bc.n_ctx} tokens)",
            file=sys.stderr,
        )
        server.run()
    finally:
        scheduler.stop()
        bc.close()
    return 0

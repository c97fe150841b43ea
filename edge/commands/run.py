"""`grok-edge run`: generate text from a GGUF model, streamed to the terminal."""

from __future__ import annotations

import argparse
import sys


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a Grok GGUF file")
    parser.add_argument("-p", "--prompt", default="", help="the prompt (text)")
    parser.add_argument("-n", "--n-predict", type=int, default=128, help="tokens to generate (default 128)")
    parser.add_argument("--temp", type=float, default=0.8, help="temperature; 0 = greedy (default 0.8)")
    parser.add_argument("--top-k", type=int, default=40)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--min-p", type=float, default=0.05)
    parser.add_argument("--repeat-penalty", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=None, help="sampling seed (default: random)")
    parser.add_argument("-t", "--threads", type=int, default=None, help="threads (default: all cores)")
    parser.add_argument(
        "-c", "--ctx-size", type=int, default=8192, help="context size in tokens (default 8192)"
    )
    parser.add_argument(
        "-b", "--batch-size", type=int, default=512, help="prompt tokens per batch (default 512)"
    )
    parser.add_argument("--kv-type", choices=["f16", "q8_0"], default="f16", help="KV cache type")
    parser.add_argument(
        "-i", "--interactive", action="store_true", help="chat-style loop reading prompts from stdin"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument(
        "--expert-cache",
        default=None,
        metavar="SIZE",
        help="keep experts in a RAM cache of SIZE (e.g. 8GiB), read from the file as needed "
        "(default: the whole file mapped)",
    )
    parser.add_argument(
        "--expert-policy", choices=["lfu", "lru"], default="lfu", help="expert cache policy (default lfu)"
    )
    parser.add_argument(
        "--no-prefetch", action="store_true", help="no router-driven prefetch of the next layer's experts"
    )
    parser.add_argument(
        "--trace-experts", default=None, metavar="FILE", help="write every token's expert routing to FILE"
    )


def _generate(model: object, prompt: str, args: argparse.Namespace) -> str:
    from edge.model import Model

    assert isinstance(model, Model)
    pieces: list[str] = []
    for piece in model.stream(
        prompt,
        max_tokens=args.n_predict,
        temperature=args.temp,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        repeat_penalty=args.repeat_penalty,
        seed=args.seed,
    ):
        sys.stdout.write(piece)
        sys.stdout.flush()
        pieces.append(piece)
    sys.stdout.write("\n")
    sys.stdout.flush()
    print(model.last_stats.summary(), file=sys.stderr)
    if model.expert_cache is not None:
        print(model.cache_stats().summary(), file=sys.stderr)
    return "".join(pieces)


def run(args: argparse.Namespace) -> int:
    from edge.model import Model

    if not args.interactive and not args.prompt:
        raise ValueError("give a prompt with -p, or -i for an interactive loop")
    with Model(
        args.model,
        n_threads=args.threads,
        n_ctx=args.ctx_size,
        n_batch=args.batch_size,
        kv_type=args.kv_type,
        seed=args.seed,
        verbose=args.verbose,
        expert_cache=args.expert_cache,
        expert_policy=args.expert_policy,
        prefetch=not args.no_prefetch,
        trace_experts=args.trace_experts,
    ) as model:
        if not args.interactive:
            sys.stdout.write(args.prompt)
            _generate(model, args.prompt, args)
            return 0
        # Interactive: the whole transcript is the prompt; the cached prefix is reused each turn.
        transcript = args.prompt
        if transcript:
            sys.stdout.write(transcript)
            transcript += _generate(model, transcript, args)
        while True:
            try:
                line = input("> ")
            except EOFError:
                print(file=sys.stderr)
                return 0
            if not line.strip():
                continue
            transcript += ("\n" if transcript else "") + line
            if len(model.tokenize(transcript)) + args.n_predict > model.n_ctx:
                print("(context full: starting over)", file=sys.stderr)
                transcript = line
            transcript += _generate(model, transcript, args)

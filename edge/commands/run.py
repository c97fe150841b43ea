"""`grok-edge run`: generate text from a GGUF model, streamed to the terminal.

The prompt comes from -p, -f FILE, or standard input when it is not a terminal. With -i, an interactive
loop: each line is added to the transcript and the model continues it; Ctrl-C stops the reply in progress,
Ctrl-C at the prompt (so a second one) or Ctrl-D quits; lines starting with "/" are commands (/help).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edge.commands.expert_args import add_device_args, add_expert_cache_args

SLASH_HELP = """commands (not sent to the model):
  /help         this list
  /reset        forget the conversation (start a new transcript)
  /stats        timings and finish reason of the last reply
  /quit, /exit  leave (as Ctrl-D does)"""


def add_generation_options(
    parser: argparse.ArgumentParser,
    max_tokens: int,
    temperature: float,
    repeat_penalty: float,
    seed: int | None,
) -> None:
    """The options `run` and `demo` share, under the same names (each has both spellings)."""
    parser.add_argument(
        "-n",
        "--n-predict",
        "--max-tokens",
        dest="max_tokens",
        type=int,
        default=max_tokens,
        help="tokens to generate at most (default: %(default)s)",
    )
    parser.add_argument(
        "--temp",
        "--temperature",
        dest="temperature",
        type=float,
        default=temperature,
        help="temperature; 0 = greedy (default: %(default)s)",
    )
    parser.add_argument(
        "--repeat-penalty",
        type=float,
        default=repeat_penalty,
        help="penalty for tokens among the last 64; 1.0 = off (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=seed, help="sampling seed; None = random (default: %(default)s)"
    )


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a Grok GGUF file")
    parser.add_argument("-p", "--prompt", default="", help="the prompt text (default: %(default)r)")
    parser.add_argument(
        "-f",
        "--file",
        type=Path,
        default=None,
        help="read the prompt from this file (default: %(default)s; without -p or -f, from standard "
        "input when it is not a terminal)",
    )
    add_generation_options(parser, max_tokens=128, temperature=0.8, repeat_penalty=1.0, seed=None)
    parser.add_argument(
        "--top-k", type=int, default=40, help="keep the k most likely tokens; 0 = off (default: %(default)s)"
    )
    parser.add_argument(
        "--top-p",
        type=float,
        default=0.95,
        help="nucleus sampling, in (0, 1]; 1 = off (default: %(default)s)",
    )
    parser.add_argument(
        "--min-p",
        type=float,
        default=0.05,
        help="drop tokens below min-p x the most likely one's probability; 0 = off (default: %(default)s)",
    )
    parser.add_argument(
        "--stop",
        action="append",
        default=None,
        metavar="TEXT",
        help="stop before this text (repeatable; default: %(default)s)",
    )
    parser.add_argument(
        "-t",
        "--threads",
        type=int,
        default=None,
        help="threads; None = the engine's choice from the cores and the model size (default: %(default)s)",
    )
    parser.add_argument(
        "-c",
        "--ctx-size",
        type=int,
        default=0,
        help="context size in tokens; 0 = the model's (default: %(default)s)",
    )
    parser.add_argument(
        "-b", "--batch-size", type=int, default=512, help="prompt tokens per batch (default: %(default)s)"
    )
    parser.add_argument(
        "--kv-type",
        choices=["f16", "q8_0", "f32"],
        default="f16",
        help="KV cache type: f16, q8_0 (half the memory) or f32 (exact) (default: %(default)s)",
    )
    parser.add_argument(
        "-i",
        "--interactive",
        action="store_true",
        help="chat-style loop reading prompts from stdin; /help lists its commands (default: off)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="print the model's shape and progress (default: off)"
    )
    add_expert_cache_args(parser)
    add_device_args(parser)
    parser.add_argument(
        "--trace-experts",
        default=None,
        metavar="FILE",
        help="write every token's expert routing to FILE (default: %(default)s)",
    )


def _generate(model: Any, prompt: str, args: argparse.Namespace) -> tuple[str, bool]:
    """Stream one reply: (its text, whether Ctrl-C stopped it)."""
    pieces: list[str] = []
    interrupted = False
    try:
        for piece in model.stream(
            prompt,
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            min_p=args.min_p,
            repeat_penalty=args.repeat_penalty,
            stop=args.stop,
            seed=args.seed,
        ):
            sys.stdout.write(piece)
            sys.stdout.flush()
            pieces.append(piece)
    except KeyboardInterrupt:
        if not args.interactive:
            raise
        interrupted = True
    sys.stdout.write("\n")
    sys.stdout.flush()
    if interrupted:
        print("(stopped; Ctrl-C again or Ctrl-D quits)", file=sys.stderr)
    else:
        print(model.last_stats.summary(), file=sys.stderr)
        if model.expert_cache is not None:
            print(model.cache_stats().summary(), file=sys.stderr)
    return "".join(pieces), interrupted


def _read_prompt(args: argparse.Namespace) -> str:
    if args.prompt and args.file:
        raise ValueError("give the prompt with -p or -f, not both")
    if args.file is not None:
        return args.file.read_text(encoding="utf-8")
    if args.prompt or args.interactive or sys.stdin is None or sys.stdin.isatty():
        return str(args.prompt)
    return sys.stdin.read()


def _slash(command: str, model: Any) -> str | None:
    """Handle an interactive "/" command: "quit", "reset", or None (handled)."""
    name = command.split()[0].lower()
    if name in ("/quit", "/exit"):
        return "quit"
    if name == "/reset":
        print("(conversation forgotten)", file=sys.stderr)
        return "reset"
    if name == "/stats":
        s = model.last_stats
        print(f"{s.summary()} | finish: {s.finish_reason or '-'}", file=sys.stderr)
    elif name == "/help":
        print(SLASH_HELP, file=sys.stderr)
    else:
        print(f"unknown command {name}; /help lists them", file=sys.stderr)
    return None


def run(args: argparse.Namespace) -> int:
    from edge.model import Model

    prompt = _read_prompt(args)
    if not args.interactive and not prompt:
        raise ValueError("give a prompt with -p, -f FILE or on standard input, or -i for an interactive loop")
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
        device=args.device,
        gpu_memory=args.gpu_memory,
    ) as model:
        if not args.interactive:
            sys.stdout.write(prompt)
            _generate(model, prompt, args)
            return 0
        # Interactive: the whole transcript is the prompt; the cached prefix is reused each turn.
        transcript = prompt
        if transcript:
            sys.stdout.write(transcript)
            transcript += _generate(model, transcript, args)[0]
        while True:
            try:
                line = input("> ")
            except EOFError:
                print(file=sys.stderr)
                return 0
            except KeyboardInterrupt:  # Ctrl-C at the prompt: the second one
                print(file=sys.stderr)
                return 0
            if not line.strip():
                continue
            if line.startswith("/"):
                action = _slash(line, model)
                if action == "quit":
                    return 0
                if action == "reset":
                    transcript = ""
                continue
            transcript += ("\n" if transcript else "") + line
            if len(model.tokenize(transcript)) + args.max_tokens > model.n_ctx:
                print("(context full: starting over)", file=sys.stderr)
                transcript = line
            transcript += _generate(model, transcript, args)[0]

"""Train the tiny Grok-1-architecture model shipped as grok-edge's demo, and export it in release format.

The model is Grok-1 as released (docs/grok1.md), scaled down: the same blocks, four RMSNorms per
layer, embedding and output multipliers, attention multiplier and 30·tanh(s/30) cap, rotate-half RoPE,
GQA, 8 experts top-2 with un-renormalized softmax gates, gelu(x W1) ⊙ (x V) experts, tied embeddings.
Only the sizes differ (TinyConfig). d_model and the expert width are 256 so that every matrix row is a
whole number of 256-wide K-quant super-blocks: llama.cpp falls back to other types for rows that are
not, which would make a Q4_K comparison meaningless.

Corpus: the King James Version of the Bible (1611, public domain), as shipped by Debian's
`bible-kjv-text` package and printed by its `bible` program (`apt-get install bible-kjv`).
Every 40th chapter is held out for evaluation.

Steps (each writes into --work, default build/train-tiny; run from the repository root with the
package installed, `pip install torch==2.13.0` (CPU) and `apt-get install bible-kjv`):
    python tools/train_tiny.py corpus      # bible text -> train.txt / heldout.txt (needs `bible`)
    python tools/train_tiny.py tokenizer   # SentencePiece BPE on train.txt -> tokenizer.model
    python tools/train_tiny.py train       # PyTorch CPU, one thread, seed 1611; state.pt every 50 steps
    python tools/train_tiny.py export      # state.pt -> OUT/ckpt-0/tensor*_000, tokenizer.model, model.json
    python tools/train_tiny.py verify      # held-out ppl: PyTorch float / int8 export / edge / llama.cpp
    python tools/train_tiny.py all         # everything above

The shipped model is `all` with the defaults: 500 steps of 8 x 256 tokens (~1 epoch), 31 minutes on one
thread of a shared 2-core machine. One thread is meant to make the run repeat exactly (checked here on the
first logged losses only); with two threads one of our runs differed in the 4th decimal of the step-10
loss. The load-balancing loss (Switch Transformer, coefficient 0.01) is the only addition to the official
objective, added to keep all 8 experts in use: at the end the busiest expert of any layer takes 23 % of
the routed slots (12.5 % is uniform).
torch is needed for train/export/verify only; the exported files need nothing but numpy.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

# Constants of the official model (run.py / model.py), kept as they are.
from edge.convert.grok1 import (
    ATTN_LOGIT_CAP,
    ATTN_OUTPUT_MULTIPLIER,
    EMBEDDING_MULTIPLIER,
    OUTPUT_MULTIPLIER,
    RMS_EPS,
    ROPE_BASE,
)


@dataclass(frozen=True)
class TinyConfig:
    vocab_size: int = 4096
    d_model: int = 256
    n_layers: int = 11
    n_q_heads: int = 4
    n_kv_heads: int = 2
    head_dim: int = 64  # n_q_heads * head_dim == d_model, as llama.cpp's grok graph requires
    ffn: int = 256
    n_experts: int = 8
    n_selected: int = 2
    context: int = 256


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 1611
    seq_len: int = 256
    batch: int = 8
    steps: int = 500
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup: int = 40
    weight_decay: float = 0.05
    balance_coef: float = 0.01  # Switch-Transformer load-balancing loss, keeps all 8 experts in use
    grad_clip: float = 1.0
    eval_every: int = 100
    save_every: int = 50
    threads: int = 1  # one thread: deterministic, and no OpenMP spin-waits on a shared machine


# ----------------------------------------------------------------------------------------- corpus


def chapters_from_bible_output(text: str) -> list[str]:
    """Split `bible -l 100000 Gen1:1-Rev22:21` output into chapters of verses, one verse per line."""
    chapters: list[list[str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        m = re.match(r"^\s+(\d+) (.*)$", line)
        if m is None:  # a heading such as "Genesis 1"
            chapters.append([])
            continue
        chapters[-1].append(m.group(2).strip())
    return ["\n".join(verses) for verses in chapters if verses]


def cmd_corpus(work: Path) -> None:
    bible = shutil.which("bible")
    if bible is None:
        sys.exit("corpus: the `bible` program is missing (apt-get install bible-kjv bible-kjv-text)")
    raw = subprocess.run(
        [bible, "-l", "100000", "Gen1:1-Rev22:21"], capture_output=True, text=True, check=True
    )
    chapters = chapters_from_bible_output(raw.stdout)
    held = [c for i, c in enumerate(chapters) if i % 40 == 39]
    train = [c for i, c in enumerate(chapters) if i % 40 != 39]
    work.mkdir(parents=True, exist_ok=True)
    (work / "train.txt").write_text("\n\n".join(train) + "\n")
    (work / "heldout.txt").write_text("\n\n".join(held) + "\n")
    print(f"corpus: {len(chapters)} chapters, {len(train)} train / {len(held)} held out")


# -------------------------------------------------------------------------------------- tokenizer


def cmd_tokenizer(work: Path, cfg: TinyConfig, seed: int) -> None:
    import sentencepiece as spm

    spm.set_random_generator_seed(seed)
    # Same conventions as Grok-1's tokenizer: identity normalization, dummy prefix, whitespace kept,
    # [PAD]/[BOS]/[EOS]/[UNK] = 0/1/2/3, newline runs and digits as user-defined pieces, byte fallback.
    spm.SentencePieceTrainer.train(
        input=str(work / "train.txt"),
        model_prefix=str(work / "tokenizer"),
        model_type="bpe",
        vocab_size=cfg.vocab_size,
        character_coverage=1.0,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        byte_fallback=True,
        split_digits=True,
        user_defined_symbols=["\n", "\n\n", *"0123456789"],
        pad_id=0,
        bos_id=1,
        eos_id=2,
        unk_id=3,
        pad_piece="[PAD]",
        bos_piece="[BOS]",
        eos_piece="[EOS]",
        unk_piece="[UNK]",
        num_threads=1,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    print(f"tokenizer: {work / 'tokenizer.model'}")


def encode_file(work: Path, name: str) -> np.ndarray:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(work / "tokenizer.model"))
    return np.asarray(sp.encode((work / name).read_text()), dtype=np.int64)


# ------------------------------------------------------------------------------------------ model


def build_model(cfg: TinyConfig):  # noqa: C901 - one readable module definition
    import torch
    import torch.nn.functional as F
    from torch import nn

    class RMSNorm(nn.Module):
        def __init__(self, d: int) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(d))

        def forward(self, x):
            x32 = x.float()
            return self.scale * x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + RMS_EPS)

    def rope(x, pos):  # x [B, T, H, D]; rotate-half pairing i <-> i + D/2
        d = x.shape[-1]
        inv = ROPE_BASE ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)
        ph = pos[:, None].float() * inv[None, :]
        ph = torch.cat([ph, ph], dim=-1)
        cos, sin = ph.cos()[None, :, None, :], ph.sin()[None, :, None, :]
        rot = torch.cat([-x[..., d // 2 :], x[..., : d // 2]], dim=-1)
        return x * cos + rot * sin

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            d, hd = cfg.d_model, cfg.head_dim
            # stored [in, out] like the release
            self.query = nn.Parameter(torch.randn(d, cfg.n_q_heads * hd) / math.sqrt(d))
            self.key = nn.Parameter(torch.randn(d, cfg.n_kv_heads * hd) / math.sqrt(d))
            self.value = nn.Parameter(torch.randn(d, cfg.n_kv_heads * hd) / math.sqrt(d))
            self.linear = nn.Parameter(torch.randn(cfg.n_q_heads * hd, d) / math.sqrt(cfg.n_q_heads * hd))

        def forward(self, x):
            b, t, _ = x.shape
            hd = cfg.head_dim
            pos = torch.arange(t)
            q = rope((x @ self.query).view(b, t, cfg.n_q_heads, hd), pos)
            k = rope((x @ self.key).view(b, t, cfg.n_kv_heads, hd), pos)
            v = (x @ self.value).view(b, t, cfg.n_kv_heads, hd)
            rep = cfg.n_q_heads // cfg.n_kv_heads  # query head h uses KV head h // rep
            k = k.repeat_interleave(rep, dim=2)
            v = v.repeat_interleave(rep, dim=2)
            s = torch.einsum("bthd,bshd->bhts", q, k) * ATTN_OUTPUT_MULTIPLIER
            s = ATTN_LOGIT_CAP * torch.tanh(s / ATTN_LOGIT_CAP)
            mask = torch.ones(t, t, dtype=torch.bool).tril()
            s = s.masked_fill(~mask, -1e30)
            p = torch.softmax(s, dim=-1)
            o = torch.einsum("bhts,bshd->bthd", p, v).reshape(b, t, cfg.n_q_heads * hd)
            return o @ self.linear

    class MoE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            d, f, e = cfg.d_model, cfg.ffn, cfg.n_experts
            self.router = nn.Parameter(torch.randn(d, e) * 0.02)
            self.linear = nn.Parameter(torch.randn(e, d, f) / math.sqrt(d))  # W1 (gelu'd)
            self.linear_v = nn.Parameter(torch.randn(e, d, f) / math.sqrt(d))  # V
            self.linear_1 = nn.Parameter(torch.randn(e, f, d) / math.sqrt(f))  # W2

        def forward(self, x):
            shape = x.shape
            x = x.reshape(-1, shape[-1])
            probs = torch.softmax(x.float() @ self.router, dim=-1)
            top_p, top_i = probs.topk(cfg.n_selected, dim=-1)  # gates = probabilities, not renormalized
            out = torch.zeros_like(x)
            for e in range(cfg.n_experts):
                hit = top_i == e
                rows = hit.any(dim=-1).nonzero().squeeze(-1)
                if rows.numel() == 0:
                    continue
                gate = (top_p * hit).sum(dim=-1)[rows]
                xe = x[rows]
                ye = (
                    F.gelu(xe @ self.linear[e], approximate="tanh") * (xe @ self.linear_v[e])
                ) @ self.linear_1[e]
                out = out.index_add(0, rows, ye * gate[:, None])
            # load balancing (Switch Transformer): n_e * sum_e fraction_routed_e * mean_prob_e
            frac = (
                torch.zeros(cfg.n_experts).index_add(0, top_i.reshape(-1), torch.ones(top_i.numel()))
                / top_i.numel()
            )
            balance = cfg.n_experts * (frac * probs.mean(dim=0)).sum()
            return out.view(shape), balance, frac

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            d = cfg.d_model
            self.multi_head_attention = Attention()
            self.moe = MoE()
            self.rms_norm, self.rms_norm_1 = RMSNorm(d), RMSNorm(d)
            self.rms_norm_2, self.rms_norm_3 = RMSNorm(d), RMSNorm(d)

        def forward(self, h):
            h = h + self.rms_norm_1(self.multi_head_attention(self.rms_norm(h)))
            m, balance, frac = self.moe(self.rms_norm_2(h))
            h = h + self.rms_norm_3(m)
            return h, balance, frac

    class TinyGrok(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            # init so that E[tok] * 78.38 has unit RMS
            self.embeddings = nn.Parameter(torch.randn(cfg.vocab_size, cfg.d_model) / EMBEDDING_MULTIPLIER)
            self.layers = nn.ModuleList(Layer() for _ in range(cfg.n_layers))
            self.rms_norm = RMSNorm(cfg.d_model)

        def forward(self, tokens):
            h = self.embeddings[tokens] * EMBEDDING_MULTIPLIER
            balance = torch.zeros(())
            fracs = []
            for layer in self.layers:
                h, b, f = layer(h)
                balance = balance + b
                fracs.append(f)
            h = self.rms_norm(h)
            logits = (h @ self.embeddings.T) * OUTPUT_MULTIPLIER
            return logits, balance / cfg.n_layers, torch.stack(fracs)

    return TinyGrok()


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------------ train


def lr_at(step: int, tc: TrainConfig) -> float:
    if step < tc.warmup:
        return tc.lr * (step + 1) / tc.warmup
    t = (step - tc.warmup) / max(1, tc.steps - tc.warmup)
    return tc.min_lr + 0.5 * (tc.lr - tc.min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


def evaluate(model, data: np.ndarray, seq_len: int, max_windows: int = 24) -> float:
    import torch
    import torch.nn.functional as F

    n = min(max_windows, (len(data) - 1) // seq_len)
    losses = []
    with torch.no_grad():
        for w in range(n):
            chunk = torch.from_numpy(data[w * seq_len : w * seq_len + seq_len + 1])
            logits, _, _ = model(chunk[None, :-1])
            losses.append(F.cross_entropy(logits[0], chunk[1:]).item())
    return float(np.mean(losses))


def cmd_train(work: Path, cfg: TinyConfig, tc: TrainConfig, resume: bool) -> None:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    train = encode_file(work, "train.txt")
    held = encode_file(work, "heldout.txt")
    print(f"train tokens {len(train)}, held-out tokens {len(held)}", flush=True)
    model = build_model(cfg)
    print(f"parameters: {count_params(model):,}", flush=True)
    decay = [
        p for n, p in model.named_parameters() if p.dim() >= 2 and "router" not in n and "embeddings" not in n
    ]
    no_decay = [
        p
        for n, p in model.named_parameters()
        if not (p.dim() >= 2 and "router" not in n and "embeddings" not in n)
    ]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": tc.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=tc.lr,
        betas=(0.9, 0.95),
    )
    rng = np.random.default_rng(tc.seed)
    start = 0
    state_path = work / "state.pt"
    if resume and state_path.exists():
        st = torch.load(state_path, weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        rng.bit_generator.state = st["rng"]
        start = st["step"]
        print(f"resumed at step {start}", flush=True)
    log = open(work / "train.log", "a")  # noqa: SIM115
    t0 = time.time()
    for step in range(start, tc.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, tc)
        starts = rng.integers(0, len(train) - tc.seq_len - 1, size=tc.batch)
        batch = torch.from_numpy(np.stack([train[s : s + tc.seq_len + 1] for s in starts]))
        logits, balance, frac = model(batch[:, :-1])
        ce = F.cross_entropy(logits.reshape(-1, cfg.vocab_size), batch[:, 1:].reshape(-1))
        loss = ce + tc.balance_coef * balance
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        done = step + 1
        if done % 10 == 0:
            msg = (
                f"step {done} ce {ce.item():.4f} balance {balance.item():.4f} "
                f"max_expert_frac {frac.max().item():.3f} lr {lr_at(step, tc):.2e} "
                f"{(time.time() - t0) / (done - start):.2f}s/step"
            )
            print(msg, flush=True)
            log.write(msg + "\n")
            log.flush()
        if done % tc.eval_every == 0 or done == tc.steps:
            model.eval()
            ev = evaluate(model, held, tc.seq_len)
            model.train()
            msg = f"step {done} heldout_ce {ev:.4f} ppl {math.exp(ev):.2f}"
            print(msg, flush=True)
            log.write(msg + "\n")
            log.flush()
        if done % tc.save_every == 0 or done == tc.steps:
            tmp = work / "state.pt.part"
            torch.save(
                {
                    "model": model.state_dict(),
                    "opt": opt.state_dict(),
                    "rng": rng.bit_generator.state,
                    "step": done,
                },
                tmp,
            )
            os.replace(tmp, state_path)
    (work / "config.json").write_text(json.dumps({"model": asdict(cfg), "train": asdict(tc)}, indent=2))


# ----------------------------------------------------------------------------------------- export


def release_tensors(state: dict, cfg: TinyConfig) -> dict[str, np.ndarray]:
    """Float arrays keyed by official module path (weights [in, out], experts [8, in, out])."""
    out: dict[str, np.ndarray] = {
        "language_model/in_out_embed": state["embeddings"].numpy(),
        "language_model/rms_norm": state["rms_norm.scale"].numpy(),
    }
    for i in range(cfg.n_layers):
        p = f"layers.{i}."
        base = f"transformer/decoder_layer_{i}"
        for name in ("query", "key", "value", "linear"):
            out[f"{base}/multi_head_attention/{name}"] = state[p + f"multi_head_attention.{name}"].numpy()
        for name in ("linear", "linear_v", "linear_1"):
            out[f"{base}/moe/{name}"] = state[p + f"moe.{name}"].numpy()
        out[f"{base}/router"] = state[p + "moe.router"].numpy()
        for name in ("rms_norm", "rms_norm_1", "rms_norm_2", "rms_norm_3"):
            out[f"{base}/{name}"] = state[p + f"{name}.scale"].numpy()
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def cmd_export(work: Path, cfg: TinyConfig, tc: TrainConfig, out_dir: Path) -> None:
    """Write OUT/ckpt-0 (release format), tokenizer.model, heldout.txt and model.json."""
    import torch
    from edge.convert.release import write_checkpoint  # the converter's own release-format writer

    st = torch.load(work / "state.pt", weights_only=False)
    tensors = release_tensors(st["model"], cfg)
    if (out_dir / "ckpt-0").exists():
        shutil.rmtree(out_dir / "ckpt-0")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_checkpoint(out_dir / "ckpt-0", tensors, key_size=cfg.head_dim)
    shutil.copyfile(work / "tokenizer.model", out_dir / "tokenizer.model")
    shutil.copyfile(work / "heldout.txt", out_dir / "heldout.txt")
    train = encode_file(work, "train.txt")
    counts = np.bincount(train, minlength=cfg.vocab_size)
    log = (work / "train.log").read_text().splitlines() if (work / "train.log").exists() else []
    evals = [ln for ln in log if "heldout_ce" in ln and int(ln.split()[1]) <= st["step"]]
    n_params = sum(t.size for t in tensors.values())
    info = {
        "name": "tiny-grok-kjv",
        "description": (
            f"Grok-1 architecture, {cfg.n_layers} layers, d_model {cfg.d_model}, "
            f"{cfg.n_experts} experts top-{cfg.n_selected}, {n_params / 1e6:.1f} M parameters, "
            "trained on the King James Bible (public domain)"
        ),
        "key_size": cfg.head_dim,
        "context_length": cfg.context,
        "prompt": "And God said,",
        "corpus": {
            "text": "King James Version of the Bible (1611), public domain",
            "source": "Debian package bible-kjv-text (printed with `bible` from bible-kjv)",
            "split": "every 40th chapter held out (heldout.txt); the rest trains the model and tokenizer",
        },
        "model": asdict(cfg),
        "train": {**asdict(tc), "steps_done": st["step"], "last_eval": evals[-1] if evals else None},
        "n_params": int(n_params),
        "train_unigram_counts": counts.tolist(),
    }
    (out_dir / "model.json").write_text(json.dumps(info, indent=1) + "\n")
    print(f"export: step {st['step']} -> {out_dir}")


def load_release_into(model, ckpt_dir: Path, cfg: TinyConfig) -> None:
    """Load the exported checkpoint's values into ``model``: the exact int8 x bf16 scale products."""
    import torch
    from edge.convert.release import dequantize, open_checkpoint

    ckpt = open_checkpoint(ckpt_dir, cfg.head_dim)
    by_path = {spec.path: dequantize(leaf) for spec, leaf in ckpt.leaves()}
    tensors = release_tensors({k: v.detach() for k, v in model.state_dict().items()}, cfg)
    inverse = {}
    for i in range(cfg.n_layers):
        p, base = f"layers.{i}.", f"transformer/decoder_layer_{i}"
        for name in ("query", "key", "value", "linear"):
            inverse[p + f"multi_head_attention.{name}"] = f"{base}/multi_head_attention/{name}"
        for name in ("linear", "linear_v", "linear_1"):
            inverse[p + f"moe.{name}"] = f"{base}/moe/{name}"
        inverse[p + "moe.router"] = f"{base}/router"
        for name in ("rms_norm", "rms_norm_1", "rms_norm_2", "rms_norm_3"):
            inverse[p + f"{name}.scale"] = f"{base}/{name}"
    inverse["embeddings"] = "language_model/in_out_embed"
    inverse["rms_norm.scale"] = "language_model/rms_norm"
    assert set(inverse.values()) == set(tensors) == set(by_path)
    model.load_state_dict({k: torch.from_numpy(np.array(by_path[v])) for k, v in inverse.items()})


def cmd_verify(work: Path, cfg: TinyConfig, out_dir: Path, n_windows: int) -> None:
    """Held-out perplexity: PyTorch (trained floats), PyTorch (exported int8 values), our engine and
    llama.cpp on the F32 GGUF of the exported checkpoint; max logit difference engine vs PyTorch."""
    import tempfile

    import torch
    from edge.convert.pipeline import convert_checkpoint

    torch.set_num_threads(2)
    held = encode_file(work, "heldout.txt")
    model = build_model(cfg)
    model.load_state_dict(torch.load(work / "state.pt", weights_only=False)["model"])
    model.eval()
    print(f"pytorch float   held-out ppl {math.exp(evaluate(model, held, cfg.context, n_windows)):.3f}")
    load_release_into(model, out_dir / "ckpt-0", cfg)
    print(f"pytorch int8    held-out ppl {math.exp(evaluate(model, held, cfg.context, n_windows)):.3f}")
    window = held[: cfg.context]
    with torch.no_grad():
        ref = model(torch.from_numpy(window)[None])[0][0].numpy()
    with tempfile.TemporaryDirectory() as tmp:
        f32 = Path(tmp) / "f32.gguf"
        convert_checkpoint(
            out_dir / "ckpt-0",
            f32,
            out_dir / "tokenizer.model",
            preset="f32",
            key_size=cfg.head_dim,
            context_length=cfg.context,
            show_progress=False,
        )
        from edge.model import Model

        with Model(f32, n_ctx=cfg.context, n_batch=cfg.context) as m:
            ours = np.asarray(m.logits(window.tolist()))
        import llama_cpp

        llm = llama_cpp.Llama(
            model_path=str(f32),
            n_ctx=cfg.context,
            n_batch=cfg.context,
            logits_all=True,
            n_threads=2,
            verbose=False,
        )
        llm.eval(window.tolist())
        theirs = np.asarray(llm.scores[: len(window)])
        llm.close()
    scale = np.abs(ref).max()
    for name, x in (("edge", ours), ("llama.cpp", theirs)):
        nll = -np.mean(
            [
                (x[t] - np.log(np.exp(x[t] - x[t].max()).sum()) - x[t].max())[window[t + 1]]
                for t in range(len(window) - 1)
            ]
        )
        print(
            f"{name:<10} first window ppl {math.exp(nll):.3f}; max |logit - pytorch int8| / max|logit| "
            f"{np.abs(x - ref).max() / scale:.2e}"
        )
    nll = -np.mean(
        [
            (ref[t] - np.log(np.exp(ref[t] - ref[t].max()).sum()) - ref[t].max())[window[t + 1]]
            for t in range(len(window) - 1)
        ]
    )
    print(f"pytorch    first window ppl {math.exp(nll):.3f}")


# ------------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["corpus", "tokenizer", "train", "export", "verify", "all"])
    ap.add_argument("--work", type=Path, default=Path("build/train-tiny"))
    ap.add_argument("--out", type=Path, default=Path("edge/data/tiny-grok"))
    ap.add_argument("--steps", type=int, default=TrainConfig.steps)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--windows", type=int, default=24, help="held-out windows for verify")
    args = ap.parse_args()
    cfg = TinyConfig()
    tc = TrainConfig(steps=args.steps)
    if args.step in ("corpus", "all"):
        cmd_corpus(args.work)
    if args.step in ("tokenizer", "all"):
        cmd_tokenizer(args.work, cfg, tc.seed)
    if args.step in ("train", "all"):
        cmd_train(args.work, cfg, tc, args.resume)
    if args.step in ("export", "all"):
        cmd_export(args.work, cfg, tc, args.out)
    if args.step in ("verify", "all"):
        cmd_verify(args.work, cfg, args.out, args.windows)


if __name__ == "__main__":
    main()

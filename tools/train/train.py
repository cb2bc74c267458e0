#!/usr/bin/env python3
"""Train the embedded default model (or its dense baseline), resumably.

  python3 tools/train/train.py --corpus DIR --tok DIR --work DIR --arch {hybrid,llama} --minutes M
                               [--max-steps S] [--smoke]

--arch hybrid: Qwen3NextForCausalLM, 8 layers (3 gated-delta-rule : 1 gated attention, twice),
  hidden 256, 8 experts top-2 + shared expert per layer, tied embeddings, vocab 8192.
--arch llama: LlamaForCausalLM with the same hidden size / depth / tokenizer and an FFN width chosen
  so the total parameter count matches the hybrid.

The corpus is tokenized once into WORK/tokens-*.u16. Every step draws batch × (seq+1)-token windows
at offsets given by numpy's default_rng([seed, step]), so the data order depends only on the seed and
the step: both archs see the same data, and a resumed run continues it. The LR schedule (linear
warmup, cosine to --min-lr-ratio × peak) spans --max-steps, fixed by the first run and stored in the
checkpoint. A run stops after --minutes of wall clock (or at max-steps, or on SIGTERM/SIGINT) and
saves WORK/ckpt.pt atomically; it also saves every --ckpt-minutes. WORK/log.jsonl gets
{step, tokens, train_loss, lr, elapsed} lines and {kind: "eval", valid_loss, valid_bpb} lines.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from common import (  # noqa: E402
    EVAL_WINDOW,
    SEQ_LEN,
    bits_per_byte,
    corpus_files,
    count_params,
    eval_windows,
    file_fingerprint,
    make_config,
    read_text,
    sha256_file,
    split_documents,
    token_stream,
    write_json,
)

CKPT_FORMAT = 1


def load_tokenizer(tok_dir: str):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json"))


def cached_stream(work: str, name: str, paths: list[str], tokenizer, tok_hash: str):
    """Token stream of `paths` (cached as WORK/tokens-<name>.u16) and the UTF-8 byte count of its documents."""
    data_path = os.path.join(work, f"tokens-{name}.u16")
    meta_path = os.path.join(work, f"tokens-{name}.json")
    key = {"tokenizer_sha256": tok_hash, "files": file_fingerprint(paths)}
    if os.path.exists(data_path) and os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        if all(meta.get(k) == v for k, v in key.items()):
            arr = np.fromfile(data_path, dtype=np.uint16)
            if len(arr) == meta["n_tokens"]:
                return arr, meta["n_bytes"]
    t0 = time.time()
    docs = []
    for p in paths:
        docs.extend(split_documents(read_text(p)))
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    arr = token_stream(tokenizer, docs)
    tmp = data_path + ".tmp"
    arr.tofile(tmp)
    os.replace(tmp, data_path)
    write_json(meta_path, dict(key, n_tokens=int(len(arr)), n_bytes=int(n_bytes), n_docs=len(docs)))
    print(f"tokenized {name}: {len(docs)} docs, {n_bytes / 1e6:.1f} MB -> {len(arr):,} tokens "
          f"({n_bytes / len(arr):.2f} bytes/token) in {time.time() - t0:.1f}s", flush=True)
    return arr, n_bytes


def batch_offsets(seed: int, step: int, n_tokens: int, batch: int, seq: int) -> np.ndarray:
    rng = np.random.default_rng([seed, step])
    return rng.integers(0, n_tokens - (seq + 1), size=batch)


def get_batch(stream: np.ndarray, offsets: np.ndarray, seq: int, device, torch):
    x = np.stack([stream[o: o + seq + 1] for o in offsets]).astype(np.int64)
    t = torch.from_numpy(x)
    if device.type == "cuda":
        t = t.pin_memory().to(device, non_blocking=True)
    return t


def lr_at(step: int, peak: float, warmup: int, max_steps: int, min_ratio: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    lo = peak * min_ratio
    return lo + 0.5 * (peak - lo) * (1.0 + math.cos(math.pi * progress))


def evaluate(model, stream: np.ndarray, n_bytes: int, device, torch, batch: int, max_windows: int | None = None):
    """Validation nats / tokens / bpb with the common window protocol (bf16 autocast on CUDA)."""
    import torch.nn.functional as F

    wins = eval_windows(len(stream), EVAL_WINDOW)
    partial = max_windows is not None and max_windows < len(wins)
    if partial:
        wins = wins[:max_windows]
    full = [w for w in wins if w[1] - w[0] == EVAL_WINDOW + 1]
    rest = [w for w in wins if w[1] - w[0] != EVAL_WINDOW + 1]
    nats = 0.0
    count = 0
    was_training = model.training
    model.eval()
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16) if device.type == "cuda" else _null()
    extra = {"output_router_logits": False} if getattr(model.config, "num_experts", None) else {}
    with torch.no_grad(), autocast:
        groups = [full[i: i + batch] for i in range(0, len(full), batch)] + [[w] for w in rest]
        for group in groups:
            x = torch.from_numpy(np.stack([stream[s:e] for s, e in group]).astype(np.int64)).to(device)
            logits = model(input_ids=x[:, :-1], use_cache=False, **extra).logits
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                   reduction="sum")
            nats += float(loss)
            count += x[:, 1:].numel()
    if was_training:
        model.train()
    out = {"valid_tokens": count, "valid_nats": nats, "valid_loss": nats / max(count, 1)}
    if not partial:
        out["valid_bytes"] = n_bytes
        out["valid_bpb"] = bits_per_byte(nats, n_bytes)
    else:
        out["valid_windows"] = len(wins)
    return out


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def keep_delta_rule_fp32(model, torch) -> int:
    """Run each gated-delta-rule kernel with autocast disabled.

    The PyTorch fallback of Qwen3-Next casts q, k, v, g, beta to float32 but, under bf16 autocast, its
    matmuls would still produce bf16 tensors and the chunk-to-chunk recurrent state would be carried
    in bf16. Disabling autocast inside the kernel keeps that state float32, as at inference.
    """
    n = 0
    for module in model.modules():
        fn = getattr(module, "chunk_gated_delta_rule", None)
        if fn is None or getattr(fn, "_sparrow_fp32", False):
            continue

        def wrapped(*a, _fn=fn, **kw):
            with torch.autocast(device_type="cuda", enabled=False):
                return _fn(*a, **kw)

        wrapped._sparrow_fp32 = True
        module.chunk_gated_delta_rule = wrapped
        n += 1
    return n


def save_checkpoint(path: str, state: dict, torch) -> None:
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def append_log(path: str, rec: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--tok", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--arch", choices=["hybrid", "llama"], required=True)
    ap.add_argument("--minutes", type=float, required=True,
                    help="wall-clock budget of this invocation, counted from process start (tokenization included)")
    ap.add_argument("--max-steps", type=int, default=None,
                    help="total steps of the schedule (default 2000; fixed by the first run)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq", type=int, default=SEQ_LEN)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-ratio", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--eval-batch", type=int, default=64)
    ap.add_argument("--ckpt-minutes", type=float, default=2.0)
    ap.add_argument("--attn-impl", default="sdpa", help="attention implementation while training")
    ap.add_argument("--experts-impl", default="eager", help="MoE experts implementation while training")
    ap.add_argument("--until-step", type=int, default=None,
                    help="pause this invocation once this step is reached (the schedule is unchanged)")
    ap.add_argument("--probe", type=int, default=0, metavar="N",
                    help="time N full-size steps (after 3 untimed ones), print steps/s and the --max-steps that "
                         "fits --minutes, then exit without writing anything")
    ap.add_argument("--smoke", action="store_true", help="tiny run: batch 4, 12 steps, 8 eval windows")
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    t_process = time.time()

    import torch

    default_steps = 2000
    eval_max_windows = None
    if args.smoke:
        args.batch = min(args.batch, 4)
        args.warmup = min(args.warmup, 3)
        args.log_every = 2
        args.eval_every = 6
        default_steps = 12
        eval_max_windows = 8
        args.eval_batch = min(args.eval_batch, 4)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    os.makedirs(args.work, exist_ok=True)
    ckpt_path = os.path.join(args.work, "ckpt.pt")
    log_path = os.path.join(args.work, "log.jsonl")

    tok_json = os.path.join(args.tok, "tokenizer.json")
    tok_hash = sha256_file(tok_json)
    tokenizer = load_tokenizer(args.tok)
    train_files, valid_file = corpus_files(args.corpus)
    train_stream, _ = cached_stream(args.work, "train", train_files, tokenizer, tok_hash)
    valid_stream, valid_bytes = cached_stream(args.work, "valid", [valid_file], tokenizer, tok_hash)

    ckpt = None
    if os.path.exists(ckpt_path):
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ckpt.get("format") != CKPT_FORMAT or ckpt["arch"] != args.arch:
            raise SystemExit(f"{ckpt_path} is a {ckpt.get('arch')} checkpoint (format {ckpt.get('format')}), "
                             f"not {args.arch}")
        if ckpt["tokenizer_sha256"] != tok_hash:
            raise SystemExit("tokenizer.json changed since the checkpoint was written")
        for k in ("batch", "seq", "seed"):
            if getattr(args, k) != ckpt["args"][k]:
                print(f"note: --{k} {getattr(args, k)} ignored, checkpoint uses {ckpt['args'][k]}")
                setattr(args, k, ckpt["args"][k])
        max_steps = ckpt["max_steps"]
        if args.max_steps is not None and args.max_steps != max_steps:
            print(f"note: --max-steps {args.max_steps} ignored, the schedule of the checkpoint is {max_steps} steps")
    else:
        max_steps = args.max_steps if args.max_steps is not None else default_steps

    import transformers

    if ckpt is not None:
        model_kwargs = ckpt["model_kwargs"]
        cfg_cls = transformers.Qwen3NextConfig if args.arch == "hybrid" else transformers.LlamaConfig
        config = cfg_cls(**model_kwargs)
        model_cls = transformers.Qwen3NextForCausalLM if args.arch == "hybrid" else transformers.LlamaForCausalLM
    else:
        config, model_kwargs, model_cls = make_config(args.arch)
    config._attn_implementation = args.attn_impl
    if hasattr(config, "_experts_implementation"):
        config._experts_implementation = args.experts_impl

    torch.manual_seed(args.seed)
    model = model_cls(config)
    n_params = count_params(model)
    wrapped = keep_delta_rule_fp32(model, torch)
    if wrapped:
        print(f"delta rule runs outside autocast in {wrapped} layers (its state stays float32)")
    model.to(device)
    model.train()
    print(f"{args.arch}: {n_params:,} parameters ({model_cls.__name__}), device {device}, "
          f"transformers {transformers.__version__}, torch {torch.__version__}", flush=True)

    decay, no_decay = [], []
    seen = set()
    for _, p in model.named_parameters():
        if id(p) in seen or not p.requires_grad:
            continue
        seen.add(id(p))
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:
        opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=device.type == "cuda")
    except (TypeError, RuntimeError):
        opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), eps=1e-8)

    step, tokens, elapsed_before = 0, 0, 0.0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        step, tokens, elapsed_before = ckpt["step"], ckpt["tokens"], ckpt["elapsed"]
        rng = ckpt.get("rng", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "cuda" in rng and device.type == "cuda":
            torch.cuda.set_rng_state_all(rng["cuda"])
        if "numpy" in rng:
            np.random.set_state(rng["numpy"])
        if "python" in rng:
            random.setstate(rng["python"])
        print(f"resumed at step {step}/{max_steps}, {tokens:,} tokens, {elapsed_before / 60:.1f} min trained", flush=True)
        del ckpt
    fresh = step == 0 and not os.path.exists(ckpt_path)

    if args.probe:
        import torch.nn.functional as F

        autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16) if device.type == "cuda" else _null()
        aux_coef = float(getattr(config, "router_aux_loss_coef", 0.0) or 0.0) if args.arch == "hybrid" else 0.0
        for g in opt.param_groups:
            g["lr"] = args.lr * 0.1
        t0 = None
        for i in range(args.probe + 3):
            if i == 3:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.time()
            x = get_batch(train_stream, batch_offsets(args.seed, i, len(train_stream), args.batch, args.seq),
                          args.seq, device, torch)
            with autocast:
                kw = {"output_router_logits": True} if aux_coef > 0 else {}
                out = model(input_ids=x[:, :-1], use_cache=False, **kw)
            loss = F.cross_entropy(out.logits.float().reshape(-1, out.logits.shape[-1]), x[:, 1:].reshape(-1))
            aux = getattr(out, "aux_loss", None)
            if aux_coef > 0 and torch.is_tensor(aux):
                loss = loss + aux_coef * aux.float()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        sps = args.probe / (time.time() - t0)
        mem = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0
        fit = int(sps * (args.minutes * 60.0 - 60.0))  # one minute kept for start-up, evals and saves
        print(f"probe: {sps:.3f} steps/s ({sps * args.batch * args.seq / 1e3:.0f}k tokens/s), peak memory "
              f"{mem:.1f} GiB; about {fit} steps fit in {args.minutes} min (minus 1 min for evals/saves)", flush=True)
        return

    write_json(os.path.join(args.work, "model_kwargs.json"), {"arch": args.arch, "model_kwargs": model_kwargs})
    if fresh:
        append_log(log_path, {"kind": "start", "arch": args.arch, "params": n_params, "max_steps": max_steps,
                              "batch": args.batch, "seq": args.seq, "lr": args.lr, "model_kwargs": model_kwargs})

    stop = {"signal": None}

    def on_signal(signum, _frame):
        stop["signal"] = signum
        print(f"signal {signum}: stopping after this step", flush=True)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def make_state():
        rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "format": CKPT_FORMAT,
            "arch": args.arch,
            "model_kwargs": model_kwargs,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "step": step,
            "tokens": tokens,
            "elapsed": elapsed_before + (time.time() - t_start),
            "max_steps": max_steps,
            "args": vars(args),
            "rng": rng,
            "tokenizer_sha256": tok_hash,
            "train_tokens": int(len(train_stream)),
            "n_params": n_params,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        }

    def run_eval():
        t = time.time()
        ev = evaluate(model, valid_stream, valid_bytes, device, torch, args.eval_batch, eval_max_windows)
        rec = {"kind": "eval", "step": step, "tokens": tokens,
               "elapsed": round(elapsed_before + time.time() - t_start, 2), "final": step >= max_steps}
        rec.update(ev)
        append_log(log_path, rec)
        bpb = ev.get("valid_bpb")
        print(f"eval step {step}: valid_loss {ev['valid_loss']:.4f}" + (f" bpb {bpb:.4f}" if bpb else "")
              + f" ({time.time() - t:.1f}s)", flush=True)
        return time.time() - t

    t_start = time.time()
    budget = args.minutes * 60.0
    last_ckpt = t_start
    eval_cost = 15.0
    acc_loss = torch.zeros((), device=device)
    acc_aux = torch.zeros((), device=device)
    acc_n = 0
    t_log = time.time()
    steps_at_log = step
    aux_coef = float(getattr(config, "router_aux_loss_coef", 0.0) or 0.0) if args.arch == "hybrid" else 0.0
    autocast = (torch.autocast(device_type="cuda", dtype=torch.bfloat16) if device.type == "cuda" else _null())
    import torch.nn.functional as F

    if step >= max_steps:
        print(f"schedule already complete ({step}/{max_steps} steps); nothing to do")
        return
    while step < max_steps:
        if stop["signal"] is not None:
            break
        if args.until_step is not None and step >= args.until_step:
            print(f"reached --until-step {args.until_step}", flush=True)
            break
        if time.time() - t_process > budget - eval_cost - 10.0:
            print("time budget reached", flush=True)
            break
        lr = lr_at(step, args.lr, args.warmup, max_steps, args.min_lr_ratio)
        for g in opt.param_groups:
            g["lr"] = lr
        x = get_batch(train_stream, batch_offsets(args.seed, step, len(train_stream), args.batch, args.seq),
                      args.seq, device, torch)
        with autocast:
            if aux_coef > 0:
                out = model(input_ids=x[:, :-1], use_cache=False, output_router_logits=True)
            else:
                out = model(input_ids=x[:, :-1], use_cache=False)
            logits = out.logits
        lm_loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        loss = lm_loss
        aux = getattr(out, "aux_loss", None) if aux_coef > 0 else None
        if torch.is_tensor(aux):
            loss = loss + aux_coef * aux.float()
            acc_aux += aux.detach().float()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        step += 1
        tokens += args.batch * args.seq
        acc_loss += lm_loss.detach()
        acc_n += 1

        if step % args.log_every == 0 or step == max_steps or step in (1, 10):
            now = time.time()
            sps = (step - steps_at_log) / max(now - t_log, 1e-9)
            rec = {"step": step, "tokens": tokens, "train_loss": round(float(acc_loss) / acc_n, 5), "lr": lr,
                   "elapsed": round(elapsed_before + now - t_start, 2), "steps_per_s": round(sps, 3)}
            if aux_coef > 0:
                rec["aux_loss"] = round(float(acc_aux) / acc_n, 5)
            append_log(log_path, rec)
            remaining = (max_steps - step) / max(sps, 1e-9)
            print(f"step {step}/{max_steps} loss {rec['train_loss']:.4f} lr {lr:.2e} {sps:.2f} steps/s "
                  f"{sps * args.batch * args.seq / 1e3:.0f}k tok/s, ~{remaining / 60:.1f} min to finish", flush=True)
            acc_loss.zero_()
            acc_aux.zero_()
            acc_n = 0
            t_log = now
            steps_at_log = step
        if step % args.eval_every == 0 and step < max_steps:
            eval_cost = max(eval_cost, run_eval())
        if time.time() - last_ckpt > args.ckpt_minutes * 60.0:
            save_checkpoint(ckpt_path, make_state(), torch)
            last_ckpt = time.time()

    if stop["signal"] is None and (step >= max_steps or time.time() - t_process < budget - 5.0):
        run_eval()
    save_checkpoint(ckpt_path, make_state(), torch)
    state = "complete" if step >= max_steps else "paused"
    print(f"{state}: step {step}/{max_steps}, {tokens:,} tokens; checkpoint {ckpt_path}", flush=True)


if __name__ == "__main__":
    main()

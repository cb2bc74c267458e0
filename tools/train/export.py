#!/usr/bin/env python3
"""Export the trained default model for sparrow and measure it.

  python3 tools/train/export.py --work DIR --tok DIR --out DIR --corpus DIR [--baseline-work DIR]

1. Loads WORK/ckpt.pt (the hybrid), rounds every tensor that sparrow stores as Q8_0 onto the Q8_0
   grid (q8_0.py: is_q8_0_tensor / q8_0_round; a fixed point, so quantising on load is exact) and
   saves OUT/hf with save_pretrained in float32, sharded at 14 MB, plus tokenizer.json,
   tokenizer_config.json and a sampling generation_config.json. OUT/quant.json lists every saved
   tensor with its storage (q8_0 | f32); every q8_0 one is checked to be on the grid.
2. Reloads OUT/hf with transformers (eager attention and experts) in float64 and writes
   OUT/bpb.json        validation bits per byte on the whole valid.txt (protocol inside the file),
   OUT/fixture/        reference.json + reference_logits.f32 (parity fixture, design.md format; the
                       weights are OUT/hf, named by "model_dir": "../hf"),
   OUT/greedy.json     48 greedy tokens after "Once upon a time",
   OUT/samples.json    seeded sampled continuations for the model card,
   OUT/card.json       sizes, training facts, losses and bpb of the hybrid and of the llama baseline
                       (--baseline-work; evaluated the same way, not exported), decode cost.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from common import (  # noqa: E402
    EOT_ID,
    EVAL_PROTOCOL,
    EVAL_WINDOW,
    active_params,
    bits_per_byte,
    corpus_files,
    count_params,
    decode_cost,
    eval_windows,
    read_text,
    sha256_file,
    split_documents,
    token_stream,
    write_json,
)
from q8_0 import is_q8_0_tensor, is_on_q8_0_grid, q8_0_round_fixed_point  # noqa: E402

FIXTURE_TOKENS = 64
FIXTURE_GREEDY_PROMPT = 16
FIXTURE_GREEDY_NEW = 16
GREEDY_PROMPT = "Once upon a time"
GREEDY_NEW = 48
SAMPLE_PROMPTS = ["Once upon a time", "The little dragon looked at the moon and", "Tom and his sister went to the"]
SAMPLES_PER_PROMPT = 3
SAMPLE_NEW = 96
SAMPLING = {"do_sample": True, "temperature": 0.8, "top_k": 40, "top_p": 0.95}


def model_classes(arch: str, transformers):
    if arch == "hybrid":
        return transformers.Qwen3NextConfig, transformers.Qwen3NextForCausalLM
    return transformers.LlamaConfig, transformers.LlamaForCausalLM


def load_checkpoint_model(work: str, torch, transformers):
    ckpt = torch.load(os.path.join(work, "ckpt.pt"), map_location="cpu", weights_only=False)
    cfg_cls, model_cls = model_classes(ckpt["arch"], transformers)
    kwargs = dict(ckpt["model_kwargs"])
    if "output_router_logits" in kwargs:
        kwargs["output_router_logits"] = False
    config = cfg_cls(**kwargs)
    set_eager_config(config)
    model = model_cls(config)
    model.load_state_dict(ckpt["model"])
    model.eval()
    info = {k: ckpt[k] for k in ("arch", "step", "tokens", "elapsed", "max_steps", "n_params", "train_tokens")
            if k in ckpt}
    info["args"] = ckpt.get("args", {})
    return model, config, info


def set_eager_config(config):
    for attr in ("_attn_implementation", "_experts_implementation"):
        try:
            setattr(config, attr, "eager")
        except Exception:  # noqa: BLE001
            pass


def set_eager_model(model):
    for meth in ("set_attn_implementation", "set_experts_implementation"):
        fn = getattr(model, meth, None)
        if fn is not None:
            try:
                fn("eager")
            except Exception as e:  # noqa: BLE001
                print(f"note: {meth}('eager'): {type(e).__name__}: {e}")


def round_to_q8_0(model, torch) -> dict:
    """Round, in place, every parameter that is_q8_0_tensor selects (by its in-memory name)."""
    rounded, kept, passes = [], [], []
    with torch.no_grad():
        for name, p in model.named_parameters():
            if is_q8_0_tensor(name, p.shape):
                values, it = q8_0_round_fixed_point(p.detach().cpu().float().numpy())
                p.copy_(torch.from_numpy(values).to(p.dtype))
                rounded.append(name)
                passes.append(it)
            else:
                kept.append(name)
    return {"rounded": rounded, "kept_f32": kept, "max_fixed_point_passes": max(passes) if passes else 0}


def save_hf(model, out_hf: str, tok_dir: str, transformers):
    if os.path.exists(out_hf):
        shutil.rmtree(out_hf)
    try:
        model.save_pretrained(out_hf, safe_serialization=True, max_shard_size="14MB")
    except TypeError:
        model.save_pretrained(out_hf, max_shard_size="14MB")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(os.path.join(tok_dir, f), os.path.join(out_hf, f))
    gen = transformers.GenerationConfig(bos_token_id=EOT_ID, eos_token_id=EOT_ID, pad_token_id=EOT_ID,
                                        max_new_tokens=256, **SAMPLING)
    gen.save_pretrained(out_hf)


def audit_saved(out_hf: str, torch) -> dict:
    """Storage class of every saved tensor, and proof that each q8_0 one sits on the Q8_0 grid."""
    from safetensors import safe_open

    files = sorted(f for f in os.listdir(out_hf) if f.endswith(".safetensors"))
    tensors = []
    off_grid = []
    total_bytes = {"q8_0": 0, "f32": 0}
    for fname in files:
        with safe_open(os.path.join(out_hf, fname), framework="pt") as f:
            for name in f.keys():
                t = f.get_tensor(name)
                shape = list(t.shape)
                storage = "q8_0" if is_q8_0_tensor(name, shape) else "f32"
                if str(t.dtype) != "torch.float32":
                    raise SystemExit(f"{name} saved as {t.dtype}, expected float32")
                if storage == "q8_0":
                    if not is_on_q8_0_grid(t.numpy()):
                        off_grid.append(name)
                    total_bytes["q8_0"] += t.numel() // 32 * 34
                else:
                    total_bytes["f32"] += t.numel() * 4
                tensors.append({"name": name, "shape": shape, "storage": storage, "file": fname})
    if off_grid:
        raise SystemExit(f"saved tensors not on the Q8_0 grid: {off_grid}")
    shard_sizes = {f: os.path.getsize(os.path.join(out_hf, f)) for f in files}
    return {"files": shard_sizes, "tensors": tensors, "bytes_as_stored_by_sparrow": total_bytes}


def reload_exported(out_hf: str, model_cls, reference_model, torch):
    attempts = [dict(attn_implementation="eager", experts_implementation="eager"), dict(attn_implementation="eager")]
    last = None
    for kw in attempts:
        try:
            model, info = model_cls.from_pretrained(out_hf, dtype=torch.float32, output_loading_info=True, **kw)
            break
        except (TypeError, ValueError) as e:
            last = e
    else:
        raise SystemExit(f"from_pretrained({out_hf}) failed: {last}")
    src = reference_model.state_dict()
    dst = model.state_dict()
    for name, t in src.items():
        if name not in dst or not torch.equal(t.cpu().float(), dst[name].cpu().float()):
            raise SystemExit(f"reloaded {out_hf} differs from the exported weights at {name}")
    set_eager_model(model)
    model.eval()
    problems = {k: v for k, v in (info or {}).items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    return model, problems


def eval_f64(model, stream: np.ndarray, n_bytes: int, device, torch, batch: int) -> dict:
    """Validation nats/bpb in the model's dtype (float64 here) under the common window protocol."""
    wins = eval_windows(len(stream), EVAL_WINDOW)
    full = [w for w in wins if w[1] - w[0] == EVAL_WINDOW + 1]
    rest = [w for w in wins if w[1] - w[0] != EVAL_WINDOW + 1]
    groups = [full[i: i + batch] for i in range(0, len(full), batch)] + [[w] for w in rest]
    extra = {"output_router_logits": False} if getattr(model.config, "num_experts", None) else {}
    nats = 0.0
    eot_nats = 0.0
    count = 0
    t0 = time.time()
    with torch.no_grad():
        for group in groups:
            x = torch.from_numpy(np.stack([stream[s:e] for s, e in group]).astype(np.int64)).to(device)
            logits = model(input_ids=x[:, :-1], use_cache=False, **extra).logits
            logp = torch.log_softmax(logits.double(), dim=-1)
            tgt = x[:, 1:]
            nll = -logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
            nats += float(nll.sum())
            eot_nats += float(nll[tgt == EOT_ID].sum())
            count += tgt.numel()
    return {
        "windows": len(wins),
        "tokens_scored": count,
        "bytes": n_bytes,
        "nats": nats,
        "nats_on_eot_targets": eot_nats,
        "loss_per_token": nats / count,
        "bpb": bits_per_byte(nats, n_bytes),
        "seconds": round(time.time() - t0, 1),
    }


def greedy(model, ids: list[int], n: int, device, torch) -> list[int]:
    x = torch.tensor([ids], dtype=torch.long, device=device)
    with torch.no_grad():
        out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=n,
                             min_new_tokens=n, use_cache=True, eos_token_id=EOT_ID, pad_token_id=EOT_ID)
    new = out[0, len(ids):].tolist()
    if len(new) != n:
        raise SystemExit(f"greedy generation returned {len(new)} tokens, expected {n}")
    return new


def train_log_summary(work: str) -> dict:
    path = os.path.join(work, "log.jsonl")
    train_recs, eval_recs = [], []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                rec = json.loads(line)
                if rec.get("kind") == "eval":
                    eval_recs.append(rec)
                elif "train_loss" in rec:
                    train_recs.append(rec)
    out = {}
    if train_recs:
        tail = train_recs[-4:]
        out["final_train_loss"] = sum(r["train_loss"] for r in tail) / len(tail)
        out["final_train_loss_steps"] = [r["step"] for r in tail]
    full_evals = [r for r in eval_recs if "valid_bpb" in r]
    if full_evals:
        last = full_evals[-1]
        out["last_training_eval"] = {k: last[k] for k in ("step", "valid_loss", "valid_bpb") if k in last}
        out["last_training_eval"]["note"] = "bf16 autocast, float32 weights (not Q8_0-rounded)"
    return out


def evaluate_arch(model, config, info, work, stream, n_bytes, device, dtype, torch, batch, label,
                  q8_0_result: dict | None = None) -> dict:
    """bpb of the float32 checkpoint weights and of the Q8_0-rounded weights (unless `q8_0_result`
    already holds that evaluation), both computed in `dtype`."""
    n_params = count_params(model)
    n_active = active_params(model, config)
    res = {
        "arch": info["arch"],
        "model_class": type(model).__name__,
        "params_total": n_params,
        "params_active_per_token": n_active,
        "steps": info.get("step"),
        "max_steps": info.get("max_steps"),
        "tokens_seen": info.get("tokens"),
        "train_wall_time_s": round(info.get("elapsed", 0.0), 1),
        "batch": info["args"].get("batch"),
        "seq": info["args"].get("seq"),
        "peak_lr": info["args"].get("lr"),
    }
    res.update(train_log_summary(work))
    m = model.to(device=device, dtype=dtype)
    set_eager_model(m)
    ev = eval_f64(m, stream, n_bytes, device, torch, batch)
    res["valid_fp32_weights"] = {"loss": ev["loss_per_token"], "bpb": ev["bpb"], "dtype": str(dtype).replace("torch.", "")}
    print(f"[{label}] float32 weights: valid loss {ev['loss_per_token']:.4f} bpb {ev['bpb']:.4f} ({ev['seconds']}s)",
          flush=True)
    if q8_0_result is None:
        m = m.to(dtype=torch.float32).cpu()
        round_to_q8_0(m, torch)
        m = m.to(device=device, dtype=dtype)
        ev = eval_f64(m, stream, n_bytes, device, torch, batch)
    else:
        ev = q8_0_result
    res["valid_q8_0_weights"] = {"loss": ev["loss_per_token"], "bpb": ev["bpb"], "dtype": str(dtype).replace("torch.", "")}
    print(f"[{label}] Q8_0 weights:    valid loss {ev['loss_per_token']:.4f} bpb {ev['bpb']:.4f} ({ev['seconds']}s)",
          flush=True)
    res["decode_cost"] = decode_cost(config, info["arch"], n_params, n_active)
    del m
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, help="hybrid training directory (ckpt.pt, log.jsonl)")
    ap.add_argument("--tok", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--baseline-work", default=None, help="llama baseline training directory")
    ap.add_argument("--device", default=None)
    ap.add_argument("--eval-batch", type=int, default=16)
    ap.add_argument("--sample-seed", type=int, default=20241129)
    args = ap.parse_args()

    import torch
    import transformers
    from tokenizers import Tokenizer

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    os.makedirs(args.out, exist_ok=True)
    out_hf = os.path.join(args.out, "hf")
    tokenizer = Tokenizer.from_file(os.path.join(args.tok, "tokenizer.json"))
    tok_hash = sha256_file(os.path.join(args.tok, "tokenizer.json"))

    _, valid_file = corpus_files(args.corpus)
    valid_text = read_text(valid_file)
    docs = split_documents(valid_text)
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    stream = token_stream(tokenizer, docs)
    roundtrip = all(tokenizer.decode(tokenizer.encode(d, add_special_tokens=False).ids) == d for d in docs)
    print(f"valid: {len(docs)} docs, {n_bytes:,} bytes, {len(stream):,} tokens, round trip {roundtrip}", flush=True)

    # ---------------- export the hybrid ----------------
    model, config, info = load_checkpoint_model(args.work, torch, transformers)
    if info["arch"] != "hybrid":
        raise SystemExit(f"{args.work} holds a {info['arch']} checkpoint; the exported model is the hybrid")
    if info.get("step") != info.get("max_steps"):
        print(f"warning: checkpoint at step {info.get('step')} of {info.get('max_steps')} (schedule not finished)")
    _, model_cls = model_classes("hybrid", transformers)
    fp32_state = {k: v.clone() for k, v in model.state_dict().items()}
    rounding = round_to_q8_0(model, torch)
    print(f"Q8_0: {len(rounding['rounded'])} tensors rounded, {len(rounding['kept_f32'])} kept float32, "
          f"fixed point after {rounding['max_fixed_point_passes']} pass(es)", flush=True)
    save_hf(model, out_hf, args.tok, transformers)
    audit = audit_saved(out_hf, torch)
    write_json(os.path.join(args.out, "quant.json"), {
        "rule": is_q8_0_tensor.__doc__,
        "rounding": "q8_0.py q8_0_quantize (gguf-py arithmetic), applied until a fixed point",
        **audit,
    })
    print("saved", out_hf, audit["files"], flush=True)

    ref, load_problems = reload_exported(out_hf, model_cls, model, torch)
    if load_problems:
        print(f"note: from_pretrained loading info: {load_problems}")
    ref = ref.to(device=device, dtype=torch.float64)
    set_eager_model(ref)

    # (a) bpb of the exported weights
    ev = eval_f64(ref, stream, n_bytes, device, torch, args.eval_batch)
    bpb = {
        "protocol": EVAL_PROTOCOL,
        "window": EVAL_WINDOW,
        "weights": "OUT/hf as exported (Q8_0 tensors on the Q8_0 grid, stored float32)",
        "dtype": "float64",
        "attn_implementation": "eager",
        "valid_file": os.path.basename(valid_file),
        "valid_text_sha256": hashlib.sha256(valid_text.encode("utf-8")).hexdigest(),
        "documents": len(docs),
        "stream_tokens": int(len(stream)),
        "tokenizer_sha256": tok_hash,
        "tokenizer_round_trip_exact": roundtrip,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "device": str(device),
        **ev,
    }
    write_json(os.path.join(args.out, "bpb.json"), bpb)
    print(f"exported model: valid loss {ev['loss_per_token']:.4f}, bpb {ev['bpb']:.4f} "
          f"({ev['tokens_scored']:,} tokens, {ev['seconds']}s)", flush=True)

    # (b) parity fixture
    story = next((d for d in docs if d.startswith("Once upon a time")), docs[0])
    story_ids = tokenizer.encode(story, add_special_tokens=False).ids
    if len(story_ids) < FIXTURE_TOKENS:
        story_ids = [int(t) for t in stream[1: 1 + FIXTURE_TOKENS]]
    input_ids = story_ids[:FIXTURE_TOKENS]
    x = torch.tensor([input_ids], dtype=torch.long, device=device)
    with torch.no_grad():
        logits = ref(input_ids=x, attention_mask=torch.ones_like(x), use_cache=False,
                     output_router_logits=False).logits[0]
    if not torch.isfinite(logits).all():
        raise SystemExit("non-finite logits in the fixture forward pass")
    fx_dir = os.path.join(args.out, "fixture")
    os.makedirs(fx_dir, exist_ok=True)
    logits.to(torch.float32).cpu().numpy().astype("<f4").tofile(os.path.join(fx_dir, "reference_logits.f32"))
    g_prompt = input_ids[:FIXTURE_GREEDY_PROMPT]
    g_tokens = greedy(ref, g_prompt, FIXTURE_GREEDY_NEW, device, torch)
    write_json(os.path.join(fx_dir, "reference.json"), {
        "family": "qwen3_next",
        "model_type": ref.config.model_type,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "seed": info["args"].get("seed"),
        "reference_dtype": "float64",
        "input_ids": input_ids,
        "logits_shape": [len(input_ids), ref.config.vocab_size],
        "greedy_prompt": g_prompt,
        "greedy_tokens": g_tokens,
        "eos_token_id": EOT_ID,
        "model_dir": "../hf",
        "config_notes": "the shipped default model (Q8_0-rounded weights, stored float32); input: first "
                        f"{FIXTURE_TOKENS} tokens of the first valid.txt story starting 'Once upon a time'",
        "notes": {"prompt_text": tokenizer.decode(input_ids), "attn_implementation": "eager",
                  "experts_implementation": "eager", "reference_device": str(device)},
    })

    # (c) greedy continuation of the fixed prompt
    p_ids = tokenizer.encode(GREEDY_PROMPT, add_special_tokens=False).ids
    new = greedy(ref, p_ids, GREEDY_NEW, device, torch)
    write_json(os.path.join(args.out, "greedy.json"), {
        "prompt": GREEDY_PROMPT,
        "prompt_ids": p_ids,
        "new_tokens": new,
        "new_text": tokenizer.decode(new, skip_special_tokens=False),
        "text": tokenizer.decode(p_ids + new, skip_special_tokens=False),
        "max_new_tokens": GREEDY_NEW,
        "min_new_tokens": GREEDY_NEW,
        "eos_token_id": EOT_ID,
        "note": "do_sample=False, use_cache=True, float64, eager; EOS masked for all 48 steps (min_new_tokens)",
    })
    print("greedy:", repr(tokenizer.decode(p_ids + new)), flush=True)

    # (d) samples for the model card
    samples = []
    for pi, prompt in enumerate(SAMPLE_PROMPTS):
        ids = tokenizer.encode(prompt, add_special_tokens=False).ids
        for si in range(SAMPLES_PER_PROMPT):
            seed = args.sample_seed + 1000 * pi + si
            torch.manual_seed(seed)
            xx = torch.tensor([ids], dtype=torch.long, device=device)
            with torch.no_grad():
                out = ref.generate(input_ids=xx, attention_mask=torch.ones_like(xx), max_new_tokens=SAMPLE_NEW,
                                   use_cache=True, eos_token_id=EOT_ID, pad_token_id=EOT_ID, **SAMPLING)
            new_ids = out[0, len(ids):].tolist()
            samples.append({"prompt": prompt, "seed": seed, "new_tokens": new_ids,
                            "text": prompt + tokenizer.decode(new_ids, skip_special_tokens=True)})
    write_json(os.path.join(args.out, "samples.json"), {"sampling": SAMPLING, "max_new_tokens": SAMPLE_NEW,
                                                        "dtype": "float64", "device": str(device),
                                                        "samples": samples})
    del ref

    # (e) model card facts: hybrid and llama baseline, same protocol
    model.load_state_dict(fp32_state)
    card = {
        "eval_protocol": EVAL_PROTOCOL,
        "eval_dtype": "float64",
        "q8_0_rule": is_q8_0_tensor.__doc__,
        "tokenizer": {"vocab_size": tokenizer.get_vocab_size(), "valid_bytes_per_token": n_bytes / (len(stream) - 1)},
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "exported_bpb": ev["bpb"],
        "hf_shards": audit["files"],
        "sparrow_weight_bytes": audit["bytes_as_stored_by_sparrow"],
    }
    card["hybrid"] = evaluate_arch(model, config, info, args.work, stream, n_bytes, device, torch.float64, torch,
                                   args.eval_batch, "hybrid", q8_0_result=ev)
    del model
    if args.baseline_work:
        b_model, b_config, b_info = load_checkpoint_model(args.baseline_work, torch, transformers)
        card["llama"] = evaluate_arch(b_model, b_config, b_info, args.baseline_work, stream, n_bytes, device,
                                      torch.float64, torch, args.eval_batch, "llama")
        del b_model
    h = card["hybrid"]["decode_cost"]
    if "llama" in card:
        l_ = card["llama"]["decode_cost"]
        card["comparison"] = {
            ctx: {
                "flops_per_token_hybrid_over_llama": h["by_context"][ctx]["flops_per_token"]
                / l_["by_context"][ctx]["flops_per_token"],
                "state_bytes_fp32_hybrid_over_llama": h["by_context"][ctx]["state_bytes_fp32"]
                / l_["by_context"][ctx]["state_bytes_fp32"],
            }
            for ctx in h["by_context"]
        }
        card["comparison"]["bpb_q8_0_hybrid_minus_llama"] = (card["hybrid"]["valid_q8_0_weights"]["bpb"]
                                                             - card["llama"]["valid_q8_0_weights"]["bpb"])
    write_json(os.path.join(args.out, "card.json"), card)
    print("wrote", ", ".join(os.path.join(args.out, f) for f in
                             ("hf/", "quant.json", "bpb.json", "fixture/", "greedy.json", "samples.json", "card.json")))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""sparrow-mini: the embedded default model — tokenizer, training, export.

Runs on a CUDA machine with PyTorch, transformers 5.17 and tokenizers, without network.

  python3 tools/train/mini.py tok    --corpus C --out W/tok
  python3 tools/train/mini.py train  --corpus C --tok W/tok --work W/hybrid --arch hybrid --max-steps S --minutes M
  python3 tools/train/mini.py train  --corpus C --tok W/tok --work W/llama  --arch llama  --max-steps S --minutes M
  python3 tools/train/mini.py export --corpus C --tok W/tok --work W/hybrid --baseline-work W/llama --out W/export

`train` is resumable: it continues from <work>/ckpt.pt, and the learning-rate schedule depends only
on --max-steps, so a run cut into several calls equals one uninterrupted run of the same steps.
The corpus directory holds train-*.txt and valid.txt (plain or .gz); documents end with a line
`<|endoftext|>`.
"""
import argparse
import glob
import gzip
import json
import math
import os
import shutil
import time

import numpy as np
import torch

EOT = "<|endoftext|>"
SPECIALS = [EOT, "<|im_start|>", "<|im_end|>"]
SEQ = 512
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def read_text(path):
    if path.endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return f.read()
    with open(path, encoding="utf-8") as f:
        return f.read()


def corpus_files(corpus, split):
    pats = ["train-*.txt", "train-*.txt.gz"] if split == "train" else ["valid.txt", "valid.txt.gz"]
    files = sorted({p for pat in pats for p in glob.glob(os.path.join(corpus, pat))})
    if not files:
        raise SystemExit(f"no {split} files in {corpus}")
    return files


def documents(corpus, split):
    docs = []
    for f in corpus_files(corpus, split):
        for d in read_text(f).split(f"\n{EOT}\n"):
            d = d.strip("\n")
            if d and d != EOT:
                docs.append(d)
    return docs


# ---- tokenizer --------------------------------------------------------------------------------

def cmd_tok(a):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    docs = documents(a.corpus, "train")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=a.vocab, min_frequency=2, special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)

    def chunks():
        for d in docs:
            for i in range(0, len(d), 1 << 16):
                yield d[i:i + (1 << 16)]

    tok.train_from_iterator(chunks(), trainer=trainer)
    os.makedirs(a.out, exist_ok=True)
    tok.save(os.path.join(a.out, "tokenizer.json"))
    ids = {s: tok.token_to_id(s) for s in SPECIALS}
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": EOT,
        "pad_token": EOT,
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 2048,
        "chat_template": CHAT_TEMPLATE,
        "added_tokens_decoder": {str(i): {"content": s, "special": True, "lstrip": False, "rstrip": False,
                                          "normalized": False, "single_word": False} for s, i in ids.items()},
    }
    with open(os.path.join(a.out, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    from transformers import AutoTokenizer
    t = AutoTokenizer.from_pretrained(a.out)
    sample = "Once upon a time, a fox said: “Héllo!” 🦊\n\nThe end."
    assert t.decode(t.encode(sample, add_special_tokens=False)) == sample, "tokenizer round trip"
    print(json.dumps({"vocab": tok.get_vocab_size(), "specials": ids}))


def load_tok(tok_dir):
    from tokenizers import Tokenizer
    return Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json"))


def token_array(corpus, tok_dir, split, cache):
    if os.path.exists(cache):
        return np.load(cache)
    tok = load_tok(tok_dir)
    eot = tok.token_to_id(EOT)
    out = []
    docs = documents(corpus, split)
    for i in range(0, len(docs), 64):
        for enc in tok.encode_batch(docs[i:i + 64], add_special_tokens=False):
            out.extend(enc.ids)
            out.append(eot)
    arr = np.asarray(out, dtype=np.uint16)
    np.save(cache, arr)
    return arr


def token_bytes(tok_dir):
    """UTF-8 byte length of each token id (specials count 0): the denominator of bits per byte."""
    tok = load_tok(tok_dir)
    vocab = tok.get_vocab()
    byte_dec = {}
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    byte_dec = {chr(c): b for b, c in zip(bs, cs)}
    lens = np.zeros(tok.get_vocab_size(), dtype=np.int64)
    for s, i in vocab.items():
        lens[i] = 0 if s in SPECIALS else len(s) if all(ch in byte_dec for ch in s) else len(s.encode("utf-8"))
    return lens


# ---- models -----------------------------------------------------------------------------------

def build_config(arch, vocab, eot):
    if arch == "hybrid":
        from transformers import Qwen3NextConfig
        n = 8
        return Qwen3NextConfig(
            vocab_size=vocab, hidden_size=256, intermediate_size=512, num_hidden_layers=n,
            num_attention_heads=4, num_key_value_heads=2, head_dim=64, hidden_act="silu",
            max_position_embeddings=2048, rms_norm_eps=1e-6, tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            linear_conv_kernel_dim=4, linear_key_head_dim=32, linear_value_head_dim=32,
            linear_num_key_heads=4, linear_num_value_heads=8,
            decoder_sparse_step=1, moe_intermediate_size=128, shared_expert_intermediate_size=256,
            num_experts_per_tok=2, num_experts=8, norm_topk_prob=True, mlp_only_layers=[],
            output_router_logits=True, router_aux_loss_coef=0.01,
            layer_types=["full_attention" if (i + 1) % 4 == 0 else "linear_attention" for i in range(n)],
            bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
        )
    from transformers import LlamaConfig
    return LlamaConfig(
        vocab_size=vocab, hidden_size=256, intermediate_size=1280, num_hidden_layers=8,
        num_attention_heads=4, num_key_value_heads=4, head_dim=64, hidden_act="silu",
        max_position_embeddings=2048, rms_norm_eps=1e-6, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
    )


def build_model(arch, vocab, eot):
    from transformers import AutoModelForCausalLM
    cfg = build_config(arch, vocab, eot)
    torch.manual_seed(1234)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")


def lr_at(step, max_steps, peak, warmup):
    if step < warmup:
        return peak * (step + 1) / warmup
    p = (step - warmup) / max(1, max_steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


@torch.no_grad()
def eval_bpb(model, valid, lens, device, dtype, max_windows=None, batch=16):
    """Bits per byte over non-overlapping SEQ-token windows of the validation tokens: every token
    but the first of each window is predicted; bytes are the UTF-8 bytes of the predicted tokens."""
    was_training = model.training
    model.eval()
    n = (len(valid) // SEQ) * SEQ
    wins = torch.from_numpy(valid[:n].astype(np.int64)).view(-1, SEQ)
    if max_windows:
        wins = wins[:max_windows]
    lens_t = torch.from_numpy(lens)
    nats = 0.0
    nbytes = 0
    ntok = 0
    for i in range(0, len(wins), batch):
        x = wins[i:i + batch].to(device)
        if dtype == torch.bfloat16:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = model(input_ids=x).logits
        else:
            logits = model(input_ids=x).logits
        lp = torch.log_softmax(logits[:, :-1].to(torch.float64), dim=-1)
        tgt = x[:, 1:]
        nats -= lp.gather(-1, tgt.unsqueeze(-1)).sum().item()
        nbytes += int(lens_t[tgt.cpu()].sum())
        ntok += tgt.numel()
    model.train(was_training)
    return {"nats": nats, "bytes": nbytes, "tokens": ntok, "windows": len(wins),
            "loss": nats / ntok, "bpb": nats / math.log(2) / nbytes}


def cmd_train(a):
    dev = "cuda"
    os.makedirs(a.work, exist_ok=True)
    tok = load_tok(a.tok)
    vocab, eot = tok.get_vocab_size(), tok.token_to_id(EOT)
    train = token_array(a.corpus, a.tok, "train", os.path.join(a.work, "train.npy"))
    valid = token_array(a.corpus, a.tok, "valid", os.path.join(a.work, "valid.npy"))
    lens = token_bytes(a.tok)
    model = build_model(a.arch, vocab, eot).to(dev)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    step, tokens_seen, train_time = 0, 0, 0.0
    ck = os.path.join(a.work, "ckpt.pt")
    if os.path.exists(ck):
        s = torch.load(ck, map_location=dev, weights_only=False)
        model.load_state_dict(s["model"])
        opt.load_state_dict(s["opt"])
        step, tokens_seen, train_time = s["step"], s["tokens"], s["train_time"]
    elif a.init and os.path.exists(a.init):
        model.load_state_dict(torch.load(a.init, map_location=dev, weights_only=False))
    log = open(os.path.join(a.work, "log.jsonl"), "a")
    print(json.dumps({"arch": a.arch, "params": params, "train_tokens": len(train), "valid_tokens": len(valid), "resume_step": step}), flush=True)
    model.train()
    t0 = time.time()
    n = len(train) - SEQ - 1
    while step < a.max_steps and (time.time() - t0) < a.minutes * 60:
        rng = np.random.default_rng(10_000 + step)
        starts = rng.integers(0, n, size=a.batch)
        x = torch.from_numpy(np.stack([train[s:s + SEQ + 1] for s in starts]).astype(np.int64)).to(dev, non_blocking=True)
        lr = lr_at(step, a.max_steps, a.lr, a.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(input_ids=x[:, :-1], **({"output_router_logits": True} if a.arch == "hybrid" else {}))
        loss = torch.nn.functional.cross_entropy(out.logits.float().reshape(-1, vocab), x[:, 1:].reshape(-1))
        aux = getattr(out, "aux_loss", None)
        total = loss + model.config.router_aux_loss_coef * aux if aux is not None else loss
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tokens_seen += a.batch * SEQ
        if step % 50 == 0 or step == 1:
            torch.cuda.synchronize()
            el = time.time() - t0
            rec = {"step": step, "tokens": tokens_seen, "train_loss": round(loss.item(), 4), "lr": lr,
                   "elapsed": round(train_time + el, 1), "steps_per_s": round(step / max(el, 1e-9), 3) if step else 0}
            print(json.dumps(rec), flush=True)
            log.write(json.dumps(rec) + "\n")
        if step % a.eval_every == 0:
            ev = eval_bpb(model, valid, lens, dev, torch.bfloat16, max_windows=64)
            rec = {"step": step, "valid_loss": round(ev["loss"], 4), "valid_bpb": round(ev["bpb"], 4)}
            print(json.dumps(rec), flush=True)
            log.write(json.dumps(rec) + "\n")
    train_time += time.time() - t0
    ev = eval_bpb(model, valid, lens, dev, torch.bfloat16, max_windows=128)
    rec = {"step": step, "valid_loss": round(ev["loss"], 4), "valid_bpb": round(ev["bpb"], 4), "final_chunk": True}
    print(json.dumps(rec), flush=True)
    log.write(json.dumps(rec) + "\n")
    log.close()
    tmp = ck + ".tmp"
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "tokens": tokens_seen,
                "train_time": train_time, "params": params, "arch": a.arch}, tmp)
    os.replace(tmp, ck)
    if a.weights_out:
        torch.save({k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}, a.weights_out)
    with open(os.path.join(a.work, "state.json"), "w") as f:
        json.dump({"step": step, "tokens": tokens_seen, "train_time": train_time, "params": params, "arch": a.arch,
                   "batch": a.batch, "seq": SEQ, "max_steps": a.max_steps, "lr": a.lr}, f)


# ---- export -----------------------------------------------------------------------------------

KEEP_F32 = (".mlp.gate.weight", ".router.weight", ".router.layer.weight", "block_sparse_moe.gate.weight",
            "shared_expert_gate", "conv1d", ".conv.weight")


def stored_as_q8_0(name, t):
    """sparrow's quantization rule (src/formats/dtype.ts quantPolicy): tensors with ≥ 2 dims whose
    last dim is a multiple of 32 are Q8_0, except MoE routers, shared-expert gates and conv kernels."""
    return t.dim() >= 2 and t.shape[-1] % 32 == 0 and not any(s in name for s in KEEP_F32)


def round_q8_0(t):
    """Rounds to the Q8_0 grid as ggml quantizes: blocks of 32 along the last dim, d = amax/127,
    q = round-half-away(x/d), value = q · f32(f16(d))."""
    x = t.detach().to(torch.float64).reshape(-1, 32)
    amax = x.abs().amax(dim=1, keepdim=True)
    d = (amax / 127.0).to(torch.float32)
    idv = torch.where(d != 0, 1.0 / d, torch.zeros_like(d))
    v = x.to(torch.float32) * idv
    q = torch.sign(v) * torch.floor(v.abs() + 0.5)
    dh = d.to(torch.float16).to(torch.float32)
    return (q * dh).reshape(t.shape).to(t.dtype)


def load_trained(a, work, vocab, eot):
    s = torch.load(os.path.join(work, "ckpt.pt"), map_location="cpu", weights_only=False)
    model = build_model(s["arch"], vocab, eot)
    model.load_state_dict(s["model"])
    return model, s


def cmd_export(a):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    dev = "cuda"
    tok = load_tok(a.tok)
    vocab, eot = tok.get_vocab_size(), tok.token_to_id(EOT)
    lens = token_bytes(a.tok)
    valid = token_array(a.corpus, a.tok, "valid", os.path.join(a.work, "valid.npy"))
    os.makedirs(a.out, exist_ok=True)
    model, st = load_trained(a, a.work, vocab, eot)
    model.config.output_router_logits = False
    rounded = []
    with torch.no_grad():
        for name, p in model.named_parameters():
            if stored_as_q8_0(name, p):
                p.copy_(round_q8_0(p))
                rounded.append(name)
    hf = os.path.join(a.out, "hf")
    model.save_pretrained(hf, safe_serialization=True, max_shard_size="14MB")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(a.tok, f), os.path.join(hf, f))
    gc = GenerationConfig(bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, do_sample=True,
                          temperature=0.8, top_k=40, top_p=0.95, repetition_penalty=1.1, max_new_tokens=200)
    gc.save_pretrained(hf)

    # float64 reference on the rounded weights (the gated delta rule itself runs in float32 in HF)
    ref = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float64, attn_implementation="eager",
                                               experts_implementation="eager").to(dev).eval()
    report = {"hybrid": {"params": st["params"], "steps": st["step"], "tokens": st["tokens"],
                         "train_time_s": st["train_time"], "q8_0_tensors": len(rounded)}}
    report["hybrid"]["valid"] = eval_bpb(ref, valid, lens, dev, torch.float64, batch=16)
    print(json.dumps(report), flush=True)
    hft = AutoTokenizer.from_pretrained(hf)

    # parity fixture of the shipped model
    text = open(os.path.join(a.tok, "fixture_prompt.txt")).read() if os.path.exists(os.path.join(a.tok, "fixture_prompt.txt")) else None
    if text is None:
        vt = documents(a.corpus, "valid")[1]
        text = vt[1000:1600]
    ids = hft.encode(text, add_special_tokens=False)[:80]
    fx = os.path.join(a.out, "fixture")
    os.makedirs(fx, exist_ok=True)
    with torch.no_grad():
        logits = ref(input_ids=torch.tensor([ids], device=dev)).logits[0].to(torch.float32).cpu().numpy()
    logits.astype("<f4").tofile(os.path.join(fx, "reference_logits.f32"))
    gp = ids[:12]
    with torch.no_grad():
        g = ref.generate(torch.tensor([gp], device=dev), do_sample=False, max_new_tokens=16, min_new_tokens=16,
                         use_cache=True, pad_token_id=eot)[0, len(gp):].tolist()
    import transformers
    json.dump({"family": "qwen3_next", "model_type": "qwen3_next", "transformers": transformers.__version__, "seed": 0,
               "reference_dtype": "float64 (gated delta rule in float32, as transformers computes it)",
               "input_ids": ids, "logits_shape": list(logits.shape), "greedy_prompt": gp, "greedy_tokens": g,
               "model_dir": ".."},
              open(os.path.join(fx, "reference.json"), "w"))

    # greedy regression text
    prompt = "Once upon a time"
    pids = hft.encode(prompt, add_special_tokens=False)
    with torch.no_grad():
        out = ref.generate(torch.tensor([pids], device=dev), do_sample=False, max_new_tokens=48, min_new_tokens=48,
                           use_cache=True, pad_token_id=eot)[0, len(pids):].tolist()
    json.dump({"prompt": prompt, "prompt_ids": pids, "tokens": out, "text": hft.decode(out)},
              open(os.path.join(a.out, "greedy.json"), "w"), indent=1)
    samples = []
    ref32 = ref.to(torch.float32)
    for i, p in enumerate(["Once upon a time", "The old king said", "In the morning, the children"]):
        torch.manual_seed(100 + i)
        pi = hft.encode(p, add_special_tokens=False)
        with torch.no_grad():
            o = ref32.generate(torch.tensor([pi], device=dev), do_sample=True, temperature=0.8, top_k=40, top_p=0.95,
                               max_new_tokens=80, pad_token_id=eot)[0, len(pi):].tolist()
        samples.append({"prompt": p, "text": hft.decode(o)})
    json.dump(samples, open(os.path.join(a.out, "samples.json"), "w"), indent=1)

    if a.baseline_work and os.path.exists(os.path.join(a.baseline_work, "ckpt.pt")):
        base, bst = load_trained(a, a.baseline_work, vocab, eot)
        base = base.to(dev).to(torch.float64).eval()
        report["llama"] = {"params": bst["params"], "steps": bst["step"], "tokens": bst["tokens"],
                           "train_time_s": bst["train_time"],
                           "valid": eval_bpb(base, valid, lens, dev, torch.float64, batch=16)}
    for w, k in ((a.work, "hybrid"), (a.baseline_work, "llama")):
        lp = os.path.join(w or "", "log.jsonl")
        if w and os.path.exists(lp):
            report[k]["log"] = [json.loads(l) for l in open(lp)]
    json.dump(report, open(os.path.join(a.out, "card.json"), "w"), indent=1)
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "log"} for k, v in report.items()}), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["tok", "train", "export"])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--tok")
    ap.add_argument("--out")
    ap.add_argument("--work")
    ap.add_argument("--baseline-work")
    ap.add_argument("--arch", choices=["hybrid", "llama"], default="hybrid")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--max-steps", type=int, default=3000)
    ap.add_argument("--minutes", type=float, default=8.0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--init")
    ap.add_argument("--weights-out")
    a = ap.parse_args()
    {"tok": cmd_tok, "train": cmd_train, "export": cmd_export}[a.cmd](a)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Reference outputs of transformers for a model shipped as a sparrow GGUF (HF tensor names,
config.json as metadata; Q8_0 / F32 tensors), e.g. models/sparrow-mini.

The GGUF is dequantized exactly (q · f32(f16 d)) into a safetensors checkpoint, loaded with
transformers in float64, and the script writes, as JSON: greedy tokens with and without the KV /
recurrent cache, and for every cached step the largest logit difference against a full forward of
the same tokens. --fixture DIR names the fixture whose prompt is used; the output also holds that
fixture's greedy tokens and the largest difference between its stored logits and a fresh forward, so
the fixture can be checked against the full-forward (use_cache=False) generation.

  python3 tools/parity/gguf_reference.py --gguf models/sparrow-mini/model.q8_0.gguf --fixture models/sparrow-mini/parity --out OUT.json
"""
import argparse
import json
import os
import struct
import tempfile

import numpy as np
import torch

GGUF_TYPES = {0: ("f32", 4, 1), 1: ("f16", 2, 1), 8: ("q8_0", 34, 32), 30: ("bf16", 2, 1)}


def read_gguf(path):
    buf = open(path, "rb").read()
    off = 0

    def take(fmt):
        nonlocal off
        v = struct.unpack_from("<" + fmt, buf, off)
        off += struct.calcsize("<" + fmt)
        return v[0]

    def string():
        nonlocal off
        n = take("Q")
        s = buf[off:off + n].decode("utf-8")
        off += n
        return s

    scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}

    def value(t):
        if t in scalar:
            return take(scalar[t])
        if t == 8:
            return string()
        if t == 9:
            et = take("I")
            n = take("Q")
            return [value(et) for _ in range(n)]
        raise ValueError(f"gguf value type {t}")

    assert buf[:4] == b"GGUF"
    off = 4
    take("I")
    nt = take("Q")
    nkv = take("Q")
    meta = {}
    for _ in range(nkv):
        k = string()
        meta[k] = value(take("I"))
    infos = []
    for _ in range(nt):
        name = string()
        nd = take("I")
        dims = [take("Q") for _ in range(nd)]
        t = take("I")
        o = take("Q")
        infos.append((name, dims[::-1], t, o))
    align = meta.get("general.alignment", 32)
    data = (off + align - 1) // align * align
    tensors = {}
    for name, shape, t, o in infos:
        kind, bsz, per = GGUF_TYPES[t]
        n = int(np.prod(shape))
        start = data + o
        if kind == "f32":
            a = np.frombuffer(buf, np.float32, n, start)
        elif kind == "f16":
            a = np.frombuffer(buf, np.float16, n, start).astype(np.float32)
        elif kind == "bf16":
            a = (np.frombuffer(buf, np.uint16, n, start).astype(np.uint32) << 16).view(np.float32)
        else:
            nb = n // 32
            blocks = np.frombuffer(buf, np.uint8, nb * 34, start).reshape(nb, 34)
            d = blocks[:, :2].copy().view(np.float16).astype(np.float32)
            q = blocks[:, 2:].copy().view(np.int8).astype(np.float32)
            a = (q * d).reshape(-1)
        tensors[name] = torch.from_numpy(np.array(a, dtype=np.float32).reshape(shape))
    return meta, tensors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--fixture")
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tokenizer", help="directory with tokenizer.json: also write greedy text for --prompt")
    ap.add_argument("--prompt", default="Once upon a time")
    ap.add_argument("--new-tokens", type=int, default=48)
    a = ap.parse_args()
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM
    meta, tensors = read_gguf(a.gguf)
    cfg = json.loads(meta["sparrow.hf_config"])
    d = tempfile.mkdtemp()
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    save_file(tensors, os.path.join(d, "model.safetensors"))
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float64, attn_implementation="eager",
                                                 experts_implementation="eager").to(a.device).eval()
    ref = json.load(open(os.path.join(a.fixture, "reference.json")))
    eos = cfg.get("eos_token_id")
    prompt = ref["greedy_prompt"]
    n = len(ref["greedy_tokens"])
    x = torch.tensor([prompt], device=a.device)
    with torch.no_grad():
        cached = model.generate(x, do_sample=False, max_new_tokens=n, min_new_tokens=n, use_cache=True, pad_token_id=eos)[0, len(prompt):].tolist()
        full = model.generate(x, do_sample=False, max_new_tokens=n, min_new_tokens=n, use_cache=False, pad_token_id=eos)[0, len(prompt):].tolist()
        seq = prompt + full
        logits_full = model(input_ids=torch.tensor([seq], device=a.device)).logits[0]
        out = model(input_ids=torch.tensor([prompt], device=a.device), use_cache=True)
        cache = out.past_key_values
        diffs = []
        for i, t in enumerate(full):
            step = model(input_ids=torch.tensor([[t]], device=a.device), past_key_values=cache, use_cache=True)
            cache = step.past_key_values
            pos = len(prompt) + i
            diffs.append(float((step.logits[0, -1] - logits_full[pos]).abs().max() / logits_full[pos].abs().max()))
        check = model(input_ids=torch.tensor([ref["input_ids"]], device=a.device)).logits[0].to(torch.float32).cpu().numpy()
        stored = np.fromfile(os.path.join(a.fixture, "reference_logits.f32"), dtype="<f4").reshape(check.shape)
    res = {"cached": cached, "full_forward": full, "fixture_greedy": ref["greedy_tokens"],
           "cached_step_rel_diff": diffs, "fixture_logits_rel_diff": float(np.abs(check - stored).max() / np.abs(stored).max())}
    if a.tokenizer:
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(a.tokenizer)
        pids = tok.encode(a.prompt, add_special_tokens=False)
        with torch.no_grad():
            g = model.generate(torch.tensor([pids], device=a.device), do_sample=False, max_new_tokens=a.new_tokens,
                               min_new_tokens=a.new_tokens, use_cache=True, pad_token_id=eos)[0, len(pids):].tolist()
        res["greedy_text"] = {"prompt": a.prompt, "prompt_ids": pids, "tokens": g, "text": tok.decode(g),
                              "note": "transformers greedy decoding, float64, EOS masked for the first new_tokens steps"}
        samples = []
        m32 = model.to(torch.float32)
        for i, p in enumerate(["Once upon a time", "The old king said", "In the morning, the children"]):
            torch.manual_seed(100 + i)
            pi = tok.encode(p, add_special_tokens=False)
            with torch.no_grad():
                o = m32.generate(torch.tensor([pi], device=a.device), do_sample=True, temperature=0.8, top_k=40,
                                 top_p=0.95, max_new_tokens=80, pad_token_id=eos)[0, len(pi):].tolist()
            samples.append({"prompt": p, "text": tok.decode(o)})
        res["samples"] = samples
    json.dump(res, open(a.out, "w"), indent=1)
    print(json.dumps(res))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Build the tiny random DiffusionGemma parity fixture (model_type "diffusion_gemma",
DiffusionGemmaForBlockDiffusion) with Hugging Face transformers, and record what transformers computes:

  DIR/diffusion-gemma/config.json, model.safetensors, generation_config.json   (save_pretrained, float32)
  DIR/diffusion-gemma/reference.json            (row kind "diffusion", docs/parity-fixtures.md §8)
  DIR/diffusion-gemma/diffusion_logits.f32      (denoiser logits on a fixed canvas, [2, C, V])
  DIR/diffusion-gemma/diffusion_step_logits.f32 (processed logits of every denoising step, [steps, C, V])

(a) Denoiser logits: one encoder pass over a fixed prompt into a DynamicCache, then the decoder over a fixed
canvas, without self-conditioning and with the first result (divided by 0.5) as self-conditioning logits.
(b) The decoding trajectory of transformers' own DiffusionGemmaGenerationMixin.generate, seeded, in argmax
mode: torch.multinomial is replaced by the argmax of the probabilities while generate runs, so the
denoiser's proposal at each position is the most probable token; the random canvases the sampler draws
(initialisation and renoising) are recorded so that a runtime can replay them.

The reference runs in float64 (float32 if float64 fails) on the reloaded checkpoint, eager attention and
experts. A failure prints "FAIL diffusion-gemma: <error>" with the traceback and exits 1.

Usage:
  python3 tools/parity/diffusion_reference.py --out DIR [--seed N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_fixtures as m  # noqa: E402  (stdlib-only at import time)

NAME = "diffusion-gemma"
EOS_ID, BOS_ID, PAD_ID = m.EOS_ID, m.BOS_ID, m.PAD_ID
VOCAB = 131
CANVAS = 8
PROMPT_LEN = 10
MAX_NEW = 24  # three canvases
KNOBS = dict(max_denoising_steps=6, entropy_bound=1.5, t_min=0.1, t_max=0.3, stability_threshold=1,
             confidence_threshold=0.005)
LAYER_TYPES = ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]
LAYER_SCALARS = [0.9, 1.1, 0.95, 1.05]


def text_config(with_global_kv: bool = True) -> dict:
    tc = m.common(
        VOCAB, 48, len(LAYER_TYPES), intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
        head_dim=12, global_head_dim=16, hidden_activation="gelu_pytorch_tanh", max_position_embeddings=512,
        rms_norm_eps=1e-6, tie_word_embeddings=True, sliding_window=6, layer_types=list(LAYER_TYPES),
        attention_bias=False, attention_dropout=0.0, num_experts=4, top_k_experts=2, moe_intermediate_size=24,
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.5, "rope_theta": 1000000.0},
        },
    )
    if with_global_kv:
        tc["num_global_key_value_heads"] = 1
    return tc


TINY_VISION = {"model_type": "gemma4_vision", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
               "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 8, "position_embedding_size": 64}


def build_model(transformers, torch, seed: int):
    cfg_cls = getattr(transformers, "DiffusionGemmaConfig", None)
    model_cls = getattr(transformers, "DiffusionGemmaForBlockDiffusion", None)
    if cfg_cls is None or model_cls is None:
        raise m.FixtureError(f"transformers {transformers.__version__} has no DiffusionGemmaConfig / "
                             "DiffusionGemmaForBlockDiffusion")
    errors = []
    attempts = [
        # transformers 5.17 builds the vision tower unconditionally (AutoModel.from_config(vision_config)).
        ("tiny vision, global kv heads 1", dict(text_config=text_config(True), vision_config=dict(TINY_VISION))),
        ("no vision, global kv heads 1", dict(text_config=text_config(True), vision_config=None)),
        ("no vision, no global kv field", dict(text_config=text_config(False), vision_config=None)),
        ("tiny vision, no global kv field", dict(text_config=text_config(False), vision_config=dict(TINY_VISION))),
    ]
    for label, kw in attempts:
        try:
            torch.manual_seed(seed)
            config = cfg_cls(**kw, canvas_length=CANVAS, tie_word_embeddings=True)
            m.force_eager(config)
            m.force_eager(config.text_config)
            model = model_cls(config)
            print(f"    config variant: {label}")
            return config, model, model_cls, label, kw
        except Exception as e:  # noqa: BLE001
            errors.append(f"{label}: {type(e).__name__}: {e}")
            print(f"    variant '{label}' failed: {type(e).__name__}: {e}")
    raise m.FixtureError(" | ".join(errors))


def describe_shapes(model) -> dict:
    out = {}
    for name, p in model.state_dict().items():
        if ".layers.0." in name or ".layers.1." in name or "embed" in name or "self_conditioning" in name:
            out[name] = list(p.shape)
    return out


def set_layer_scalars(model, torch):
    n = 0
    with torch.no_grad():
        for name, b in model.named_buffers():
            if name.endswith("layer_scalar"):
                idx = int(name.split(".layers.")[1].split(".")[0])
                b.fill_(LAYER_SCALARS[idx % len(LAYER_SCALARS)])
                n += 1
    return n


def generation_classes(model, transformers):
    """(DiffusionGemmaGenerationConfig, EntropyBoundSamplerConfig) of the model's generation module."""
    import importlib

    pkg = type(model).__module__.rsplit(".", 1)[0]
    mods = [sys.modules.get(type(model).__module__)]
    try:
        mods.append(importlib.import_module(pkg + ".generation_diffusion_gemma"))
    except Exception as e:  # noqa: BLE001
        print(f"    note: {pkg}.generation_diffusion_gemma: {type(e).__name__}: {e}")
    mods.append(transformers)
    found = {}
    for name in ("DiffusionGemmaGenerationConfig", "EntropyBoundSamplerConfig"):
        for mod in mods:
            if mod is not None and getattr(mod, name, None) is not None:
                found[name] = getattr(mod, name)
                break
        else:
            raise m.FixtureError(f"{name} not found")
    return found["DiffusionGemmaGenerationConfig"], found["EntropyBoundSamplerConfig"]


def generate_kwargs(sampler_cls) -> dict:
    return dict(max_new_tokens=MAX_NEW, max_denoising_steps=KNOBS["max_denoising_steps"],
                sampler_config=sampler_cls(entropy_bound=float(KNOBS["entropy_bound"])), t_min=KNOBS["t_min"],
                t_max=KNOBS["t_max"], stability_threshold=KNOBS["stability_threshold"],
                confidence_threshold=KNOBS["confidence_threshold"], eos_token_id=EOS_ID, pad_token_id=PAD_ID,
                bos_token_id=BOS_ID)


def setup_generation_config(model, transformers):
    gc_cls, sampler_cls = generation_classes(model, transformers)
    gc = getattr(model, "generation_config", None)
    if not isinstance(gc, gc_cls):
        print(f"    note: model.generation_config is {type(gc).__name__}; using a new {gc_cls.__name__}")
        gc = gc_cls()
        model.generation_config = gc
    gc.max_new_tokens = MAX_NEW
    gc.max_denoising_steps = KNOBS["max_denoising_steps"]
    gc.sampler_config = sampler_cls(entropy_bound=float(KNOBS["entropy_bound"]))
    gc.t_min = KNOBS["t_min"]
    gc.t_max = KNOBS["t_max"]
    gc.stability_threshold = KNOBS["stability_threshold"]
    gc.confidence_threshold = KNOBS["confidence_threshold"]
    gc.eos_token_id = EOS_ID
    gc.bos_token_id = BOS_ID
    gc.pad_token_id = PAD_ID
    gc.validate()
    return sampler_cls


def new_cache(model, transformers):
    from transformers.cache_utils import DynamicCache

    return DynamicCache(config=model.config.get_text_config(decoder=True))


def denoiser_logits(model, transformers, torch, prompt, canvas, device):
    """Logits of the decoder over `canvas` after an encoder pass over `prompt`, generation path (DynamicCache)."""
    P = len(prompt)
    ids = torch.tensor([prompt], dtype=torch.long, device=device)
    cv = torch.tensor([canvas], dtype=torch.long, device=device)
    dpos = torch.arange(P, P + len(canvas), device=device).unsqueeze(0)
    with torch.no_grad():
        out0 = model(input_ids=ids, past_key_values=new_cache(model, transformers), decoder_input_ids=cv,
                     decoder_position_ids=dpos)
        l0 = out0.logits[0].detach()
        sc = (l0 / 0.5).unsqueeze(0).to(model.model.decoder.embed_tokens.weight.dtype)
        out1 = model(input_ids=ids, past_key_values=new_cache(model, transformers), decoder_input_ids=cv,
                     decoder_position_ids=dpos, self_conditioning_logits=sc)
        l1 = out1.logits[0].detach()
    for t in (l0, l1):
        if tuple(t.shape) != (len(canvas), VOCAB):
            raise m.FixtureError(f"denoiser logits shape {tuple(t.shape)} != ({len(canvas)}, {VOCAB})")
        if not torch.isfinite(t).all():
            raise m.FixtureError("non-finite denoiser logits")
    return l0, l1


def record_generate(model, torch, prompt, seed: int, device):
    """transformers' generate with argmax proposals; records noise draws, each step and each block."""
    noise: list[list[int]] = []
    steps: list[dict] = []
    blocks: list[list[int]] = []
    step_logits = []
    state = {"block": 0}

    orig_prepare_sampler = model._prepare_sampler

    def prepare_sampler(generation_config):
        sampler = orig_prepare_sampler(generation_config)
        orig_init = sampler.initialize_canvas

        def initialize_canvas(batch_size, device):
            c = orig_init(batch_size=batch_size, device=device)
            noise.append(c[0].tolist())
            return c

        sampler.initialize_canvas = initialize_canvas
        return sampler

    orig_step = model._denoising_step

    def denoising_step(**kw):
        canvas_in = kw["current_canvas"][0].tolist()
        cur_step = int(kw["cur_step"])
        out = orig_step(**kw)
        new_canvas, argmax, processed, finished = out
        mask = kw["sampler"].accepted_token_mask[0].tolist()
        positions = [i for i, a in enumerate(mask) if a]
        am = argmax[0].tolist()
        steps.append({
            "block": state["block"], "step": cur_step, "canvas_in": canvas_in, "positions": positions,
            "tokens": [am[i] for i in positions], "argmax": am, "canvas_out": new_canvas[0].tolist(),
            "finished": bool(finished[0]),
        })
        step_logits.append(processed[0].detach().to(torch.float64).cpu())
        return out

    orig_finalize = model._finalize_canvas

    def finalize_canvas(**kw):
        ids, fin = orig_finalize(**kw)
        blocks.append(ids[0, -kw["canvas_length"]:].tolist())
        state["block"] += 1
        return ids, fin

    real_multinomial = torch.multinomial

    def argmax_multinomial(probs, num_samples, *a, **k):
        if num_samples != 1:
            raise m.FixtureError(f"multinomial with num_samples={num_samples}")
        return probs.argmax(dim=-1, keepdim=True)

    model._prepare_sampler = prepare_sampler
    model._denoising_step = denoising_step
    model._finalize_canvas = finalize_canvas
    torch.multinomial = argmax_multinomial
    try:
        ids = torch.tensor([prompt], dtype=torch.long, device=device)
        torch.manual_seed(seed)
        _, sampler_cls = generation_classes(model, sys.modules["transformers"])
        with torch.no_grad():
            seq = model.generate(input_ids=ids, **generate_kwargs(sampler_cls))
    finally:
        torch.multinomial = real_multinomial
        del model._prepare_sampler, model._denoising_step, model._finalize_canvas
    if not isinstance(seq, torch.Tensor):
        seq = seq.sequences
    return seq[0].tolist(), noise, steps, blocks, step_logits


def load_reference(model_cls, out_dir: str, dtype, device: str, source, torch):
    """The saved checkpoint reloaded; every tensor must equal the built one (layer_scalar buffers that
    from_pretrained re-initialised are set back to the saved values, and noted)."""
    attempts = [dict(attn_implementation="eager", experts_implementation="eager"), dict(attn_implementation="eager")]
    last = None
    for kw in attempts:
        try:
            model, info = model_cls.from_pretrained(out_dir, dtype=torch.float32, output_loading_info=True, **kw)
            break
        except (TypeError, ValueError) as e:
            last = e
    else:
        raise m.FixtureError(f"from_pretrained failed: {last}")
    notes = {k: list(v) for k, v in (info or {}).items()
             if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    src = source.state_dict()
    dst = model.state_dict()
    fixed = []
    with torch.no_grad():
        for name, t in src.items():
            if name not in dst:
                raise m.FixtureError(f"reloaded model has no tensor {name}")
            u = dst[name]
            if tuple(t.shape) == tuple(u.shape) and torch.equal(t.detach().cpu().float(), u.detach().cpu().float()):
                continue
            if name.endswith("layer_scalar"):
                model.get_buffer(name).copy_(t)
                fixed.append(name)
                continue
            raise m.FixtureError(f"reloaded tensor {name} differs from the one that was saved")
    if fixed:
        notes["layer_scalar_restored"] = fixed
    model = model.to(device=device, dtype=dtype)
    m.set_eager(model)
    model.eval()
    return model, notes


def make(args, transformers, torch) -> dict:
    t0 = time.time()
    out_dir = os.path.join(args.out, NAME)
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)

    config, model, model_cls, variant, kwargs = build_model(transformers, torch, args.seed)
    model.eval()
    m.set_eager(model)
    perturbation = m.perturb_weights(model, args.seed * 7919 + 4242, torch)
    perturbation["layer_scalar"] = set_layer_scalars(model, torch)
    setup_generation_config(model, transformers)
    try:
        m.save_checkpoint(model, out_dir)
    except Exception as e:  # noqa: BLE001
        # The knobs are passed to generate explicitly; a generation config that does not serialise is left out.
        traceback.print_exc()
        print(f"    note: saving with the diffusion generation config failed ({type(e).__name__}: {e}); saving without it")
        gc_cls, _ = generation_classes(model, transformers)
        model.generation_config = gc_cls(eos_token_id=EOS_ID, pad_token_id=PAD_ID, bos_token_id=BOS_ID)
        shutil.rmtree(out_dir)
        os.makedirs(out_dir)
        m.save_checkpoint(model, out_dir)
    shapes = describe_shapes(model)

    gen = torch.Generator().manual_seed(args.seed * 1000 + 4242)
    prompt = torch.randint(m.FIRST_INPUT_ID, VOCAB, (PROMPT_LEN,), generator=gen).tolist()
    canvas = torch.randint(m.FIRST_INPUT_ID, VOCAB, (CANVAS,), generator=gen).tolist()

    notes: list[str] = []
    result = None
    ref_dtype = None
    for dtype_name in ("float64", "float32"):
        dtype = getattr(torch, dtype_name)
        try:
            ref, load_notes = load_reference(model_cls, out_dir, dtype, args.device, model, torch)
            if load_notes:
                notes.append(f"from_pretrained loading info: {load_notes}")
            l0, l1 = denoiser_logits(ref, transformers, torch, prompt, canvas, args.device)
            gen_out = record_generate(ref, torch, prompt, args.seed, args.device)
            result = (l0, l1, gen_out)
            ref_dtype = dtype_name
            del ref
            break
        except m.FixtureError:
            raise
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            notes.append(f"{dtype_name} reference failed: {type(e).__name__}: {e}")
            print(f"    {dtype_name} reference failed: {type(e).__name__}: {e}")
    if result is None:
        raise m.FixtureError("; ".join(notes))
    l0, l1, (sequence, noise, steps, blocks, step_logits) = result

    import numpy as np  # noqa: PLC0415  (torch brings numpy)

    np.stack([l0.to(torch.float32).cpu().numpy(), l1.to(torch.float32).cpu().numpy()]).astype("<f4").tofile(
        os.path.join(out_dir, "diffusion_logits.f32"))
    if step_logits:
        np.stack([t.to(torch.float32).numpy() for t in step_logits]).astype("<f4").tofile(
            os.path.join(out_dir, "diffusion_step_logits.f32"))

    text = config.text_config
    reference = {
        "family": "diffusion_gemma",
        "model_type": config.model_type,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "seed": args.seed,
        "reference_dtype": ref_dtype,
        "eos_token_id": EOS_ID,
        "config_notes": "DiffusionGemmaForBlockDiffusion: encoder (causal, sliding window 6 on layers 0 and 2) fills a KV "
                        "cache, decoder (weights shared) denoises a canvas of 8 with bidirectional attention over cache "
                        "+ canvas and self-conditioning; 4 layers sliding/full (full: head_dim 16, 1 kv head, K=V, "
                        "proportional RoPE 0.5 theta 1e6; sliding: head_dim 12, 2 kv heads, theta 1e4); dense MLP + "
                        "4 experts top-2 per layer; layer_scalar 0.9/1.1/0.95/1.05; final softcap; vocab 131",
        "diffusion": {
            "prompt": prompt,
            "canvas_length": CANVAS,
            "max_new_tokens": MAX_NEW,
            "max_denoising_steps": KNOBS["max_denoising_steps"],
            "entropy_bound": KNOBS["entropy_bound"],
            "t_min": KNOBS["t_min"],
            "t_max": KNOBS["t_max"],
            "stability_threshold": KNOBS["stability_threshold"],
            "confidence_threshold": KNOBS["confidence_threshold"],
            "eos_token_id": EOS_ID,
            "pad_token_id": PAD_ID,
            "proposal": "argmax",
            "noise": noise,
            "trajectory": steps,
            "blocks": blocks,
            "sequence": sequence,
            "step_logits": {"file": "diffusion_step_logits.f32", "shape": [len(step_logits), CANVAS, VOCAB]},
            "denoise": {"prompt": prompt, "canvas": canvas, "self_conditioning_divisor": 0.5,
                        "file": "diffusion_logits.f32", "shape": [2, CANVAS, VOCAB]},
        },
        "notes": {
            "config_variant": variant,
            "config_kwargs": json.loads(json.dumps(kwargs, default=str)),
            "text_config": json.loads(json.dumps(text.to_dict(), default=str)),
            "shapes": shapes,
            "perturbation": perturbation,
            "logits_stats": {"std": float(l0.double().std().item()), "absmax": float(l0.double().abs().max().item()),
                             "argmax_distinct": len(set(l0.argmax(-1).tolist()))},
            "attn_implementation": "eager",
            "experts_implementation": "eager",
            "reference_device": args.device,
            "messages": notes,
        },
    }
    with open(os.path.join(out_dir, "reference.json"), "w") as f:
        json.dump(reference, f, indent=1)
        f.write("\n")
    return {"name": NAME, "status": "ok", "reference_dtype": ref_dtype, "steps": len(steps), "blocks": len(blocks),
            "bytes": m.dir_size(out_dir), "seconds": round(time.time() - t0, 2)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory (the fixture goes to OUT/diffusion-gemma)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    try:
        import torch
        import transformers

        transformers.logging.set_verbosity_warning()
        print(f"transformers {transformers.__version__}, torch {torch.__version__}, device {args.device}")
        os.makedirs(args.out, exist_ok=True)
        print(f"== {NAME} (diffusion_gemma)")
        row = make(args, transformers, torch)
        print(f"OK   {NAME}: dtype={row['reference_dtype']} steps={row['steps']} blocks={row['blocks']} "
              f"{row['bytes'] / 1e3:.0f} kB {row['seconds']}s")
        return 0
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        print(f"FAIL {NAME}: {type(e).__name__}: {e}")
        shutil.rmtree(os.path.join(args.out, NAME), ignore_errors=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())

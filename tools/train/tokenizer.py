#!/usr/bin/env python3
"""Train the byte-level BPE tokenizer of the embedded default model.

  python3 tools/train/tokenizer.py --corpus DIR --out DIR

Trains on the train-*.txt(.gz) files only (documents split on the `<|endoftext|>` lines, which never
reach the trainer). Vocabulary 8192: ids 0..2 are <|endoftext|>, <|im_start|>, <|im_end|>, then the
256 byte symbols, then merges. ByteLevel pre-tokenizer (GPT-2 regex, add_prefix_space=False),
ByteLevel decoder, no normalizer. Writes tokenizer.json and tokenizer_config.json (ChatML template),
then checks that transformers.AutoTokenizer loads the directory when transformers is installed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    CHAT_TEMPLATE,
    EOT,
    SPECIAL_TOKENS,
    VOCAB_SIZE,
    corpus_files,
    read_text,
    split_documents,
    write_json,
)


def tokenizer_config() -> dict:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": EOT,
        "eos_token": EOT,
        "pad_token": EOT,
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 2048,
        "chat_template": CHAT_TEMPLATE,
        "added_tokens_decoder": {
            str(i): {
                "content": t,
                "special": True,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "single_word": False,
            }
            for i, t in enumerate(SPECIAL_TOKENS)
        },
    }


def train(corpus: str, out: str, vocab_size: int, min_frequency: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    train_files, _ = corpus_files(corpus)
    print("train files:", [os.path.basename(p) for p in train_files])
    docs = []
    for p in train_files:
        docs.extend(split_documents(read_text(p)))
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    print(f"{len(docs)} documents, {n_bytes / 1e6:.1f} MB")

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    t0 = time.time()
    tok.train_from_iterator(docs, trainer=trainer, length=len(docs))
    print(f"trained in {time.time() - t0:.1f}s, vocab {tok.get_vocab_size()}")

    for i, t in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(t) != i:
            raise SystemExit(f"special token {t} has id {tok.token_to_id(t)}, expected {i}")
    if tok.get_vocab_size() != vocab_size:
        raise SystemExit(f"vocab size {tok.get_vocab_size()} != {vocab_size}")

    sample = docs[len(docs) // 2][:2000]
    enc = tok.encode(sample, add_special_tokens=False)
    if tok.decode(enc.ids, skip_special_tokens=False) != sample:
        raise SystemExit("decode(encode(text)) != text on a training sample")
    print(f"sample: {len(sample.encode('utf-8')) / len(enc.ids):.2f} bytes/token")

    os.makedirs(out, exist_ok=True)
    tok.save(os.path.join(out, "tokenizer.json"))
    write_json(os.path.join(out, "tokenizer_config.json"), tokenizer_config())
    print("wrote", os.path.join(out, "tokenizer.json"), "and tokenizer_config.json")


def check_with_transformers(out: str) -> None:
    try:
        import transformers
    except ImportError:
        print("transformers not installed: AutoTokenizer check skipped")
        return
    t = transformers.AutoTokenizer.from_pretrained(out)
    text = "Once upon a time, a little fox lived in the woods.\n\nThe end."
    ids = t.encode(text, add_special_tokens=False)
    back = t.decode(ids)
    if back != text:
        raise SystemExit(f"AutoTokenizer round trip failed: {back!r}")
    if t.eos_token_id != 0 or t.convert_tokens_to_ids("<|im_end|>") != 2:
        raise SystemExit(f"unexpected special ids: eos={t.eos_token_id}")
    chat = t.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    if chat != "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n":
        raise SystemExit(f"chat template renders {chat!r}")
    print(f"AutoTokenizer ({type(t).__name__}, transformers {transformers.__version__}): ok, "
          f"{len(ids)} tokens for the check sentence")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--vocab-size", type=int, default=VOCAB_SIZE)
    ap.add_argument("--min-frequency", type=int, default=2)
    args = ap.parse_args()
    train(args.corpus, args.out, args.vocab_size, args.min_frequency)
    check_with_transformers(args.out)


if __name__ == "__main__":
    main()

"""Trains the byte-level BPE tokenizer of tqai's small model on the corpus
of tools/train/extract-corpus, and turns the corpus into token ids.

    tools/train/train-tokenizer [--corpus data/corpus] [--out data/gpu]

Needs the Hugging Face `tokenizers`, `transformers` and `numpy` packages.
Writes to --out (the folder that travels to the GPU machine):

    tokenizer.json, tokenizer_config.json   the tokenizer (transformers)
    train.u16.xz or train.u16               training token ids, uint16 little-endian
    heldout.u16                             held-out token ids, likewise
    tokens.json                             counts and SHA-256 of the id files

The tokenizer: GPT-2's byte-level BPE (the ByteLevel pre-tokenizer with its
regex, no prefix space, no normalizer), so that `tqai convert` recognizes
its pre-tokenizer as "gpt2" and the engine splits text exactly as Hugging
Face does; VOCAB ids: <|endoftext|> (id 0, also BOS and EOS), the 256 byte
symbols, then merges. The post-processor puts <|endoftext|> in front of a
text, so both transformers and tqai (add_bos_token) start a text with it.

Token streams: every document is preceded by <|endoftext|>, exactly as a
prompt is at inference, and documents follow one another.

Training the BPE model is deterministic for a given corpus and tokenizers
version (the merges are ranked by count, ties broken by the pair).
"""

import argparse
import hashlib
import json
import lzma
import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

import numpy as np  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402

VOCAB = 8192
SPECIAL = "<|endoftext|>"
DOC_END = "\n\f\n"
# What may travel to the GPU machine in all (the working tree's limit is 64 MiB).
TRAVEL_LIMIT = 40 << 20


def read_docs(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    docs = text.split(DOC_END)
    if docs and not docs[-1]:
        docs.pop()
    return docs


def train(docs):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, min_frequency=2, special_tokens=[SPECIAL],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(docs, trainer=trainer, length=len(docs))
    eot = tok.token_to_id(SPECIAL)
    assert eot == 0 and tok.get_vocab_size() == VOCAB, (eot, tok.get_vocab_size())
    tok.post_processor = processors.TemplateProcessing(
        single=f"{SPECIAL} $A", pair=f"{SPECIAL} $A {SPECIAL} $B", special_tokens=[(SPECIAL, eot)])
    return tok


def encode(tok, docs, batch=2048):
    """All documents, each preceded by <|endoftext|>, as one uint16 array."""
    eot = tok.token_to_id(SPECIAL)
    parts = []
    for i in range(0, len(docs), batch):
        for enc in tok.encode_batch(docs[i:i + batch], add_special_tokens=False):
            parts.append(np.array([eot] + enc.ids, dtype=np.uint16))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default="data/corpus")
    ap.add_argument("--out", default="data/gpu")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    train_docs = read_docs(os.path.join(args.corpus, "train.txt"))
    held_docs = read_docs(os.path.join(args.corpus, "heldout.txt"))
    print(f"train-tokenizer: {len(train_docs)} training documents, {len(held_docs)} held out",
          file=sys.stderr)
    tok = train(train_docs)

    from transformers import PreTrainedTokenizerFast
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIAL, eos_token=SPECIAL,
                                   model_max_length=1024)
    fast.save_pretrained(args.out)
    for extra in ("special_tokens_map.json", "chat_template.jinja"):
        p = os.path.join(args.out, extra)
        if os.path.exists(p):
            os.remove(p)

    info = {"vocab_size": VOCAB, "eot_id": tok.token_to_id(SPECIAL)}
    for name, docs in (("train", train_docs), ("heldout", held_docs)):
        ids = encode(tok, docs)
        raw = os.path.join(args.out, f"{name}.u16")
        ids.astype("<u2").tofile(raw)
        nbytes = sum(len(d.encode("utf-8")) for d in docs)
        info[name] = {"tokens": int(ids.size), "documents": len(docs), "text_bytes": nbytes,
                      "sha256": sha256(raw)}
        print(f"train-tokenizer: {name}: {ids.size} tokens, {nbytes / max(ids.size, 1):.3f} bytes "
              f"per token", file=sys.stderr)
    # The training ids travel compressed when they must.
    raw = os.path.join(args.out, "train.u16")
    if os.path.getsize(raw) + os.path.getsize(os.path.join(args.out, "heldout.u16")) > TRAVEL_LIMIT:
        with open(raw, "rb") as f:
            data = f.read()
        with open(raw + ".xz", "wb") as f:
            f.write(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))
        os.remove(raw)
        info["train"]["file"] = "train.u16.xz"
        print(f"train-tokenizer: train.u16.xz: {os.path.getsize(raw + '.xz') / 2**20:.1f} MiB",
              file=sys.stderr)
    else:
        info["train"]["file"] = "train.u16"
    info["heldout"]["file"] = "heldout.u16"
    with open(os.path.join(args.out, "tokens.json"), "w") as f:
        json.dump(info, f, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(args.out, n)) for n in os.listdir(args.out))
    print(f"train-tokenizer: {args.out}: {total / 2**20:.1f} MiB in all", file=sys.stderr)
    if total > TRAVEL_LIMIT:
        print(f"train-tokenizer: warning: {args.out} is over {TRAVEL_LIMIT >> 20} MiB and will not "
              "travel to the GPU machine with the working tree", file=sys.stderr)


if __name__ == "__main__":
    main()

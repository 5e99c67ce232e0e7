"""Trains tqai's small Llama-architecture model from scratch, for a fixed
wall-clock budget.

    python3 tools/train/train.py --data data/gpu --out OUT --minutes 8

--data is the folder tools/train/train-tokenizer wrote (tokenizer.json,
tokenizer_config.json, tokens.json, train.u16[.xz], heldout.u16). The model
is transformers' LlamaForCausalLM: grouped-query attention, SwiGLU, RMSNorm,
RoPE, tied input and output embeddings, all of which `tqai convert` and the
engine support.

Time: --minutes counts from the start of this process. Training stops
--reserve seconds before that, which leaves time for the held-out
evaluation, saving and the reference logits. The learning-rate schedule
(linear warm-up, cosine decay to --min-lr-frac of the peak) needs the number
of steps in advance: it is measured, not guessed. The first --probe steps
run in warm-up (torch.compile's compilation happens in the first of them);
the time per step over the last half of them sets the number of steps that
fit in what is left, and the cosine ends there. Everything is fixed by
--seed except that number of steps, which is logged (give --max-steps alone
to fix it too).

Data: the training ids are one stream (every document preceded by
<|endoftext|>). Each epoch cuts it into windows of --ctx + 1 tokens from a
random offset and visits them in a random order (both from --seed and the
epoch number).

Output, flat in --out (at most 8 files, each under 15 MiB, for the GPU
machine's return trip): config.json, the bfloat16 weights as
model-0000i-of-0000n.safetensors shards with model.safetensors.index.json,
train.log, and ref.logits (and ref2.logits when there is room): float32
logits that transformers computes on the CPU with the saved bfloat16 weights
for a fixed text, in the .logits format of tools/fixtures/
make_model_fixtures.py ("TQLG"), so that a test can compare the converted
GGUF against them. The tokenizer files stay in --data; copy them next to
the shards before `tqai convert`.
"""

import time

T0 = time.time()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import lzma  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

MAX_FILE = 15 << 20
SHARD = MAX_FILE - (1 << 19)
MAX_FILES = 8
REF_TEXTS = (
    "The Debian project is an association of individuals who have made common cause to create a free "
    "operating system. When you install a package, the system checks its dependencies and asks you "
    "before it changes anything else.",
    "Once upon a time, in a small village at the edge of the forest, there lived an old woman who "
    "kept a book of stories. Every evening the children came to her door and asked for one more.",
)
REF_TOKENS = 64
SAMPLE_PROMPTS = ("The purpose of this manual is", "Once upon a time", "In the beginning",
                  "To install the package, you")


class Log:
    """Lines to stdout and to train.log, each stamped with the seconds since
    the process started."""

    def __init__(self, path):
        self.f = open(path, "w", encoding="utf-8")

    def __call__(self, msg):
        line = f"[{time.time() - T0:7.1f}s] {msg}"
        print(line, flush=True)
        self.f.write(line + "\n")
        self.f.flush()


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="data/gpu")
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=8.0, help="wall-clock budget of this process")
    ap.add_argument("--reserve", type=float, default=60.0,
                    help="seconds kept at the end for evaluation and saving")
    ap.add_argument("--max-steps", type=int, default=0, help="fixed number of steps (0: by the clock)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--ffn", type=int, default=1408)
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--batch-tokens", type=int, default=262144, help="tokens per optimizer step")
    ap.add_argument("--micro-batch", type=int, default=128, help="sequences per forward pass")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--max-epochs", type=float, default=10.0,
                    help="the clock's schedule never passes this many epochs of the training ids")
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--probe", type=int, default=30, help="steps before the schedule is fixed")
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--eval-every", type=int, default=250, help="steps between quick held-out checks")
    ap.add_argument("--eval-seqs", type=int, default=0,
                    help="held-out windows in the final evaluation (0: all)")
    ap.add_argument("--no-compile", action="store_true", help="do not use torch.compile")
    ap.add_argument("--samples", type=int, default=48, help="new tokens per sample continuation")
    return ap.parse_args()

# ---------------------------------------------------------------- data


def load_ids(data, entry):
    path = os.path.join(data, entry["file"])
    if path.endswith(".xz"):
        with open(path, "rb") as f:
            raw = lzma.decompress(f.read())
    else:
        with open(path, "rb") as f:
            raw = f.read()
    ids = np.frombuffer(raw, dtype="<u2")
    if ids.size != entry["tokens"]:
        raise SystemExit(f"{path}: {ids.size} tokens, tokens.json says {entry['tokens']}")
    return torch.from_numpy(ids.astype(np.int32))


class Batches:
    """Windows of ctx + 1 tokens of the stream, epoch after epoch, each epoch
    from its own random offset and in its own random order."""

    def __init__(self, ids, ctx, seed, device):
        self.ids = ids.to(device)
        self.ctx = ctx
        self.seed = seed
        self.device = device
        self.ar = torch.arange(ctx + 1, device=device)
        self.epoch = -1
        self.order = None
        self.pos = 0
        self._new_epoch()

    def _new_epoch(self):
        self.epoch += 1
        g = torch.Generator().manual_seed(self.seed * 1000003 + self.epoch)
        off = int(torch.randint(0, self.ctx, (1,), generator=g))
        n = (self.ids.numel() - 1 - off) // (self.ctx + 1)
        if n <= 0:
            raise SystemExit("the training stream is shorter than one window")
        starts = off + torch.arange(n) * (self.ctx + 1)
        self.order = starts[torch.randperm(n, generator=g)].to(self.device)
        self.pos = 0

    def next(self, b):
        """(x, y): (b, ctx) int64 inputs and targets."""
        if self.pos + b > self.order.numel():
            self._new_epoch()
        s = self.order[self.pos:self.pos + b]
        self.pos += b
        w = self.ids[s[:, None] + self.ar].long()
        return w[:, :-1], w[:, 1:]

# ---------------------------------------------------------------- model


def build_model(args, vocab, eot):
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=args.hidden, intermediate_size=args.ffn,
                      num_hidden_layers=args.layers, num_attention_heads=args.heads,
                      num_key_value_heads=args.kv_heads, head_dim=args.hidden // args.heads,
                      max_position_embeddings=args.ctx, rms_norm_eps=1e-5, rope_theta=10000.0,
                      hidden_act="silu", tie_word_embeddings=True, bos_token_id=eot,
                      eos_token_id=eot, initializer_range=0.02, attention_bias=False,
                      mlp_bias=False, use_cache=False)
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(cfg)
    if model.get_output_embeddings().weight is not model.get_input_embeddings().weight:
        model.tie_weights()
    return model


def n_params(model):
    seen, n = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n


def lr_at(step, args, total):
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    if total is None:
        return args.lr
    t = min(1.0, (step - args.warmup) / max(1, total - args.warmup))
    return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * t)))


def autocast(device):
    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate(model, ids, ctx, device, max_seqs=None, batch=32):
    """Mean loss (nats per token) over non-overlapping ctx-token windows of
    the held-out stream, every token predicted once."""
    model.eval()
    n = (ids.numel() - 1) // ctx
    if max_seqs:
        n = min(n, max_seqs)
    total, count = 0.0, 0
    for i in range(0, n, batch):
        k = min(batch, n - i)
        starts = (torch.arange(i, i + k) * ctx)[:, None] + torch.arange(ctx + 1)
        w = ids[starts].long().to(device)
        with autocast(device):
            logits = model(input_ids=w[:, :-1]).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), w[:, 1:].reshape(-1),
                               reduction="sum")
        total += float(loss)
        count += w[:, 1:].numel()
    model.train()
    return total / max(count, 1)

# ---------------------------------------------------------------- output


def save_model(model, out, log):
    """config.json, the bfloat16 weights in safetensors shards of at most
    SHARD bytes (packed in state-dict order, which save_pretrained's own
    sharding leaves too many of), and model.safetensors.index.json, which
    transformers' from_pretrained reads. Returns the bfloat16 model."""
    from safetensors.torch import save_file
    model.config.use_cache = True
    bf = model.to(torch.bfloat16)
    bf.config.architectures = [type(bf).__name__]
    bf.config.dtype = torch.bfloat16
    bf.config.save_pretrained(out)
    sd = {k: v.detach().contiguous().cpu() for k, v in bf.state_dict().items()}
    if bf.config.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    shards, cur, size = [], [], 0
    for name, t in sd.items():
        b = t.numel() * t.element_size()
        if cur and size + b > SHARD:
            shards.append(cur)
            cur, size = [], 0
        cur.append(name)
        size += b
    if cur:
        shards.append(cur)
    weight_map = {}
    for i, names in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file({n: sd[n] for n in names}, os.path.join(out, fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in names})
    total = sum(t.numel() * t.element_size() for t in sd.values())
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
        f.write("\n")
    for name in sorted(os.listdir(out)):
        size = os.path.getsize(os.path.join(out, name))
        log(f"saved {name}: {size / 2**20:.2f} MiB")
        if size >= MAX_FILE:
            log(f"warning: {name} is over {MAX_FILE >> 20} MiB")
    return bf


def write_logits(path, text, text_ids, ids, logits, logits_kv16):
    """The "TQLG" file of tools/fixtures/make_model_fixtures.py."""
    tb = text.encode("utf-8")
    pad = (-len(tb)) % 4
    with open(path, "wb") as f:
        f.write(b"TQLG")
        f.write(struct.pack("<5I", 1, logits.shape[1], len(ids), len(text_ids), len(tb)))
        f.write(tb + b"\0" * pad)
        f.write(struct.pack(f"<{len(text_ids)}i", *text_ids))
        f.write(struct.pack(f"<{len(ids)}i", *ids))
        f.write(logits.astype("<f4").tobytes())
        f.write(logits_kv16.astype("<f4").tobytes())


@contextlib.contextmanager
def kv_fp16():
    """Keys (after RoPE) and values rounded to fp16 where the eager attention
    function receives them: what a model computes with an fp16 KV cache."""
    from transformers.models.llama import modeling_llama
    orig = modeling_llama.eager_attention_forward

    def f(module, query, key, value, *a, **kw):
        return orig(module, query, key.half().float(), value.half().float(), *a, **kw)
    modeling_llama.eager_attention_forward = f
    try:
        yield
    finally:
        modeling_llama.eager_attention_forward = orig


def cpu_reference_model(bf_model):
    """A float32 CPU copy of the saved (bfloat16) weights, eager attention."""
    from transformers import LlamaForCausalLM
    cfg = bf_model.config
    cfg._attn_implementation = "eager"
    ref = LlamaForCausalLM(cfg)
    sd = {k: v.detach().to("cpu", torch.float32) for k, v in bf_model.state_dict().items()}
    ref.load_state_dict(sd, strict=False)
    ref.tie_weights()
    return ref.float().eval()


def write_refs(ref, tok, out, n_files, log):
    for i, text in enumerate(REF_TEXTS[:n_files]):
        text_ids = tok(text, add_special_tokens=True)["input_ids"]
        ids = text_ids[:REF_TOKENS]
        with torch.no_grad():
            logits = ref(torch.tensor([ids])).logits[0].float().numpy()
            with kv_fp16():
                logits16 = ref(torch.tensor([ids])).logits[0].float().numpy()
        name = "ref.logits" if i == 0 else f"ref{i + 1}.logits"
        write_logits(os.path.join(out, name), text, text_ids, ids, logits, logits16)
        log(f"{name}: {len(ids)} of {len(text_ids)} tokens, vocab {logits.shape[1]}, max |logit| "
            f"{abs(logits).max():.3f}, fp16 K/V moves them by up to {abs(logits - logits16).max():.2e}")


def samples(ref, tok, n_new, log):
    torch.manual_seed(0)
    for prompt in SAMPLE_PROMPTS:
        ids = tok(prompt, return_tensors="pt", add_special_tokens=True)["input_ids"]
        with torch.no_grad():
            g = ref.generate(ids, max_new_tokens=n_new, do_sample=False, pad_token_id=tok.eos_token_id)
        log(f"greedy: {tok.decode(g[0], skip_special_tokens=True)!r}")
    for prompt in SAMPLE_PROMPTS[:2]:
        ids = tok(prompt, return_tensors="pt", add_special_tokens=True)["input_ids"]
        with torch.no_grad():
            g = ref.generate(ids, max_new_tokens=n_new, do_sample=True, temperature=0.8, top_p=0.95,
                             top_k=0, pad_token_id=tok.eos_token_id)
        log(f"sampled (T 0.8, top-p 0.95): {tok.decode(g[0], skip_special_tokens=True)!r}")


STATE = {"step": 0, "loss": float("nan")}


def loss_of(module, x, y, dev):
    with autocast(dev):
        logits = module(input_ids=x).logits
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))


def train_loop(args, model, fwd, opt, batches, held_ids, accum, step_tokens, deadline,
               n_train, log):
    """Steps until --max-steps or the clock; returns (steps, last train loss)."""
    dev = args.device
    micro = args.micro_batch
    total = args.max_steps if args.max_steps else None
    step, t_probe = 0, None
    loss_acc = torch.zeros((), device=dev)
    n_acc = 0
    t_last, tok_last = time.time(), 0
    train_loss = float("nan")
    while True:
        if total is not None and step >= total:
            break
        if time.time() >= deadline:
            log(f"stopped by the clock at step {step}" + (f" of {total}" if total else ""))
            break
        lr = lr_at(step, args, total)
        for g in opt.param_groups:
            g["lr"] = lr
        for _ in range(accum):
            x, y = batches.next(micro)
            try:
                loss = loss_of(fwd, x, y, dev)
            except Exception as e:  # noqa: BLE001
                if fwd is model:
                    raise
                log(f"torch.compile failed ({type(e).__name__}: {str(e)[:300]}); eager from here")
                fwd = model
                opt.zero_grad(set_to_none=True)
                loss = loss_of(fwd, x, y, dev)
            (loss / accum).backward()
            loss_acc += loss.detach()
            n_acc += 1
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        STATE["step"] = step

        # The schedule's length, from the time per step once compiled.
        if args.max_steps == 0 and total is None:
            if step == args.probe // 2:
                if dev.startswith("cuda"):
                    torch.cuda.synchronize()
                t_probe = time.time()
            elif step == args.probe:
                if dev.startswith("cuda"):
                    torch.cuda.synchronize()
                per_step = (time.time() - t_probe) / (args.probe - args.probe // 2)
                left = deadline - time.time()
                total = step + max(1, int(0.98 * left / per_step))
                cap = math.ceil(args.max_epochs * n_train / step_tokens)
                if total > cap:
                    log(f"schedule: {total} steps would fit; capped at {args.max_epochs:g} epochs")
                    total = cap
                total = max(total, args.warmup + 1, step)
                log(f"schedule: {per_step:.3f}s per step ({step_tokens / per_step / 1e6:.2f}M tokens/s); "
                    f"{total} steps in all, {total * step_tokens / 1e6:.0f}M tokens, "
                    f"{total * step_tokens / n_train:.2f} epochs")

        if step % args.log_every == 0 or step == 1 or (total is not None and step == total):
            train_loss = float(loss_acc) / max(n_acc, 1)
            now = time.time()
            seen = step * step_tokens
            rate = (seen - tok_last) / max(now - t_last, 1e-9)
            t_last, tok_last = now, seen
            log(f"step {step:5d}" + (f"/{total}" if total else "") + f" loss {train_loss:.4f} lr {lr:.2e} "
                f"grad norm {float(gnorm):.3f} tokens {seen / 1e6:.1f}M epoch {batches.epoch} "
                f"{rate / 1e6:.2f}M tok/s")
            STATE["loss"] = train_loss
            loss_acc.zero_()
            n_acc = 0
        if args.eval_every and step % args.eval_every == 0:
            h = evaluate(model, held_ids, args.ctx, dev, max_seqs=64)
            log(f"step {step:5d} held-out loss (first 64 windows) {h:.4f}")

    if n_acc:
        train_loss = float(loss_acc) / n_acc
    return step, train_loss

# ---------------------------------------------------------------- main


def main():
    args = parse_args()
    os.makedirs(args.out, exist_ok=True)
    log = Log(os.path.join(args.out, "train.log"))
    deadline = T0 + args.minutes * 60 - args.reserve
    dev = args.device
    log(f"args: {json.dumps(vars(args), sort_keys=True)}")
    log(f"torch {torch.__version__}, device {dev}"
        + (f" ({torch.cuda.get_device_name(0)})" if dev.startswith("cuda") else ""))
    torch.manual_seed(args.seed)
    np.random.seed(args.seed % 2**32)
    if dev.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    with open(os.path.join(args.data, "tokens.json")) as f:
        info = json.load(f)
    train_ids = load_ids(args.data, info["train"])
    held_ids = load_ids(args.data, info["heldout"])
    vocab, eot = info["vocab_size"], info["eot_id"]
    log(f"data: {train_ids.numel()} training tokens ({info['train']['text_bytes'] / 1e6:.1f} MB of text), "
        f"{held_ids.numel()} held out; vocab {vocab}")

    model = build_model(args, vocab, eot).to(dev)
    model.train()
    cfg = model.config
    log(f"model: {n_params(model) / 1e6:.2f}M parameters (tied embeddings), {cfg.num_hidden_layers} layers, "
        f"width {cfg.hidden_size}, {cfg.num_attention_heads} heads ({cfg.num_key_value_heads} KV) of "
        f"{cfg.head_dim}, ffn {cfg.intermediate_size}, context {args.ctx}")

    micro = args.micro_batch
    accum = max(1, args.batch_tokens // (micro * args.ctx))
    step_tokens = accum * micro * args.ctx
    log(f"batch: {accum} x {micro} sequences of {args.ctx} = {step_tokens} tokens per step")

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": args.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    opt_kw = {"fused": True} if dev.startswith("cuda") else {}
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), eps=1e-8, **opt_kw)

    fwd = model
    if not args.no_compile:
        try:
            fwd = torch.compile(model)
        except Exception as e:  # noqa: BLE001
            log(f"torch.compile unavailable ({e}); eager")
            fwd = model

    batches = Batches(train_ids, args.ctx, args.seed, dev)
    log(f"training until {deadline - T0:.0f}s (of {args.minutes * 60:.0f}s)")
    try:
        step, train_loss = train_loop(args, model, fwd, opt, batches, held_ids, accum,
                                      step_tokens, deadline, train_ids.numel(), log)
    except Exception as e:  # noqa: BLE001
        # Whatever was trained is still saved and evaluated.
        log(f"training failed ({type(e).__name__}: {str(e)[:500]}); saving what there is")
        step, train_loss = STATE["step"], STATE["loss"]
    tokens_seen = step * step_tokens
    log(f"trained {step} steps, {tokens_seen / 1e6:.1f}M tokens "
        f"({tokens_seen / train_ids.numel():.2f} epochs); last train loss {train_loss:.4f}")

    bf = save_model(model, args.out, log)
    h = evaluate(bf, held_ids, args.ctx, dev, max_seqs=args.eval_seqs or None)
    tpb = held_ids.numel() / info["heldout"]["text_bytes"]
    n_eval = min((held_ids.numel() - 1) // args.ctx, args.eval_seqs or 1 << 30) * args.ctx
    log(f"held-out loss {h:.4f} nats/token, perplexity {math.exp(h):.2f}, "
        f"{h * tpb / math.log(2):.4f} bits/byte ({n_eval} tokens, bfloat16 weights)")

    from transformers import PreTrainedTokenizerFast
    tok = PreTrainedTokenizerFast.from_pretrained(args.data)
    ref = cpu_reference_model(bf)
    n_out = len(os.listdir(args.out))  # train.log is among them already
    write_refs(ref, tok, args.out, max(1, min(len(REF_TEXTS), MAX_FILES - n_out)), log)
    samples(ref, tok, args.samples, log)
    files = sorted(os.listdir(args.out))
    log(f"{len(files)} files in {args.out}: {' '.join(files)}")
    if len(files) > MAX_FILES:
        log(f"warning: more than {MAX_FILES} files")
    log(f"SUMMARY steps {step} tokens {tokens_seen} train_loss {train_loss:.4f} heldout_loss {h:.4f} "
        f"heldout_ppl {math.exp(h):.2f} params {n_params(model)} elapsed {time.time() - T0:.0f}s")


if __name__ == "__main__":
    main()

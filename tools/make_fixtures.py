#!/usr/bin/env python3
"""Writes the reference model fixtures (tests/fixtures/models/) for the forward-pass parity tests.

Runs where torch + transformers + tokenizers are installed (the GPU machine; CPU only):

    CUDA_VISIBLE_DEVICES= python3 tools/make_fixtures.py --out tests/fixtures/models

For every row of FIXTURES it builds a tiny randomly initialised checkpoint (seeded,
deterministic), saves it with transformers' own `save_pretrained` (safetensors) together
with a byte-level BPE tokenizer trained here with `tokenizers` on TRAINING_TEXT, and records
transformers' float32 CPU reference for PROMPTS:

  <out>/<name>/config.json, model.safetensors, generation_config.json,
               tokenizer.json, tokenizer_config.json      (what transformers writes)
  <out>/<name>/reference.json                              (prompts, ids, greedy, index)
  <out>/<name>/logits.bin                                  (raw little-endian float32)
  <out>/manifest.json, <out>/README.md                     (one entry / row per fixture)

logits.bin holds, prompt after prompt in reference.json order, the logits of a full
forward over the prompt ids: a row-major [num_tokens, vocab_size] float32 block per
prompt at byte offset `logits_offset_bytes` (no header, no padding).

After saving, every fixture is reloaded with AutoModelForCausalLM.from_pretrained and must
reproduce the recorded logits bit for bit. The script exits 1 if any check failed (the
files are written anyway, with the failure recorded in reference.json and manifest.json).
docs/fixtures.md describes the fixtures and the formats.
"""
import argparse
import copy
import datetime
import hashlib
import json
import os
import platform
import shutil
import struct
import sys
import traceback

# The fixtures: one row per checkpoint (tools/fixture_table.py).
from fixture_table import COMMON_CONFIG, FIXTURES  # noqa: E402

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>"]  # ids 0, 1, 2 (trainer puts them first)
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
TOKENIZER_VOCAB_SIZE = 512
MAX_PROMPT_TOKENS = 40
MAX_NEW_TOKENS = 16
# Seed acceptance (see acceptable()): greedy top1-top2 margin >= this fraction of the step's
# max |logit| (10x the parity tolerance 1e-4 x max |logit|), router k-th/(k+1)-th logit gap.
GREEDY_MIN_RELATIVE_MARGIN = 1e-3
ROUTER_MIN_GAP = 1e-3
SEED_STEP = 1000
MAX_SEED_TRIES = 60

PROMPTS = [
    ("bos_only", "<s>"),  # the special token text: one token, id 1
    ("short", "Hello, world!"),
    ("utf8", "Grüße aus Zürich: 東京は晴れ ☀️, naïve café 🙂"),
    ("long", "In a mixture-of-experts layer, a router picks the top-k experts for every "
             "token; the experts run in parallel and their outputs are combined by the "
             "routing weights, so each token touches only a few of the parameters."),
]

# The tokenizer's training text (deterministic; the tokenizer is trained once and shared).
TRAINING_TEXT = """\
The quick brown fox jumps over the lazy dog. The dog sleeps in the sun.
In a mixture-of-experts layer, a router picks the top-k experts for every token.
The experts run in parallel and their outputs are combined by the routing weights.
Each token touches only a few of the parameters, so a large model stays cheap to run.
A worker holds the attention state of its own sequences and a subset of the experts.
Tokens move between workers with all-to-all collectives, then come back to be combined.
The router tokenizes the prompt, schedules the steps and streams the text to the client.
Hello, world! Hello again, world. Good morning, good evening, good night.
Once upon a time there was a small model with random weights and a tiny vocabulary.
It could not say anything useful, but it was exactly right about its own arithmetic.
The reference is computed in float32 on the CPU, and every position is compared.
Attention uses rotary position embeddings; keys and values are cached in paged blocks.
def forward(self, hidden_states, position_ids):
    residual = hidden_states
    hidden_states = self.input_layernorm(hidden_states)
    hidden_states = self.self_attn(hidden_states, position_ids) + residual
    return hidden_states
for (int i = 0; i < n; ++i) { sum += weights[i] * values[i]; }
if (x > 0 && y < 10) { return x + y; } else { return 0; }
{"model": "tiny", "experts": 8, "top_k": 2, "hidden_size": 64, "layers": 2}
Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 42 64 100 128 256 512 1024 2048 4096 3.14159 2.71828
Dates and times: 2026-11-21 21:15:58, 1999-12-31 23:59:59, 12:00, 07:30 pm.
Prices: $19.99, €5, £3.50, ¥1000, ½ cup of sugar, 3 × 4 = 12, 10 ÷ 2 = 5, 2² = 4.
Grüße aus Zürich! Schöne Grüße, liebe Grüße, viele Grüße aus München und Köln.
Die Straße ist nass, weil es regnet. Äpfel, Öl und Übung machen den Meister.
Le café est très bon. Naïve élève, crème brûlée, déjà vu, où est la gare ?
El niño come una manzana. ¿Dónde está la biblioteca? ¡Qué bueno! Mañana será otro día.
Привет, мир! Как дела? Хорошо, спасибо. Москва, Санкт-Петербург.
Γειά σου κόσμε. Καλημέρα. Αθήνα.
東京は晴れです。今日はいい天気ですね。東京の天気は晴れ、大阪は雨。
北京欢迎你。你好，世界！今天天气很好。我们一起学习。
안녕하세요, 세계! 오늘 날씨가 좋네요.
مرحبا بالعالم. كيف حالك؟
नमस्ते दुनिया। आप कैसे हैं?
Emoji: 🙂 😀 🚀 ☀️ 🌧️ 👍🏽 👨‍👩‍👧 ❤️ ✅ 🔥 — and the weather is sunny ☀️ today 🙂.
Quotes: "double", 'single', «guillemets», „German“, “curly” and ‘curly’.
Whitespace:  two spaces,   three spaces,	a tab, and a new line
    indented line
        more indented line
The end. The end. The end of the text is near, and then it is here.
It's, I'm, you're, we've, they'll, she'd, don't, can't, won't, isn't.
UPPER CASE WORDS AND lower case words And Title Case Words.
Repeat after me: the experts, the experts, the experts; the router, the router.
"""


# --------------------------------------------------------------------------------------


def log(*a):
    print(*a, flush=True)


def resolve_rows(rows):
    by_name = {r["name"]: r for r in rows}
    out = []
    for r in rows:
        r = dict(r)
        if "base" in r:
            b = by_name[r["base"]]
            for k in ("arch", "seed", "config", "rope", "dtype"):
                if k in b and k not in r:
                    r[k] = copy.deepcopy(b[k])
        r.setdefault("dtype", "float32")
        r.setdefault("save_original_format", True)
        out.append(r)
    return out


def construct(cls, kw):
    """cls(**kw), dropping the keyword arguments this version of `tokenizers` does not take."""
    kw = dict(kw)
    while True:
        try:
            return cls(**kw)
        except TypeError as e:
            bad = [k for k in kw if k in str(e)]
            if not bad:
                raise
            kw.pop(bad[0])


def train_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    # The Qwen2/Qwen3 pre-tokenizer: NFC, the Qwen split regex, byte-level without regex.
    pattern = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    byte_level_kw = {"add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        construct(pre_tokenizers.ByteLevel, byte_level_kw),
    ])
    tok.decoder = construct(decoders.ByteLevel, byte_level_kw)
    tok.post_processor = construct(processors.ByteLevel, byte_level_kw)
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = TRAINING_TEXT.splitlines(keepends=True)
    tok.train_from_iterator(lines, trainer=trainer)
    return tok


def make_hf_tokenizer(tok):
    import transformers
    cls = getattr(transformers, "PreTrainedTokenizerFast", None) or getattr(transformers, "TokenizersBackend")
    return cls(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def rope_kwargs(rope, tf_major):
    rope = dict(rope)
    if tf_major >= 5:
        return {"rope_parameters": rope}
    theta = rope.pop("rope_theta")
    kw = {"rope_theta": theta}
    if rope.get("rope_type", "default") != "default":
        kw["rope_scaling"] = rope
    return kw


def build_config(row, vocab_size, tf_major):
    import transformers
    cfg_cls = getattr(transformers, row["arch"].replace("ForCausalLM", "Config"))
    kw = dict(COMMON_CONFIG)
    kw.update(copy.deepcopy(row["config"]))
    kw.update(rope_kwargs(row["rope"], tf_major))
    kw.update({"vocab_size": vocab_size, "bos_token_id": BOS_ID, "eos_token_id": EOS_ID,
               "pad_token_id": PAD_ID, "architectures": [row["arch"]]})
    cfg = cfg_cls(**kw)
    # Mixtral's per-layer module name on v4; harmless elsewhere.
    return cfg


def set_eager(model):
    if hasattr(model, "set_attn_implementation"):
        try:
            model.set_attn_implementation("eager")
        except Exception:
            pass
    if hasattr(model, "set_experts_implementation"):
        try:
            model.set_experts_implementation("eager")
        except Exception as e:  # not an MoE model
            pass
    return model


def init_weights(model, seed, bf16_round):
    """Overwrites every parameter (sorted by name) from one seeded generator, so that norms,
    biases and routers are all non-trivial: a mistake in any of them changes the logits.
      *norm* weights (1-D): uniform [0.5, 1.5)
      biases (1-D):         normal, std 0.2
      embed_tokens:         normal, std 0.5
      router (*.gate.weight with E rows): normal, std 2/sqrt(fan_in)
      other >= 2-D:         normal, std 1/sqrt(fan_in), fan_in = last dimension
    """
    import torch
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            shape = tuple(p.shape)
            if p.ndim == 1:
                if "norm" in name:
                    v = torch.rand(shape, generator=g, dtype=torch.float32) + 0.5
                else:
                    v = torch.randn(shape, generator=g, dtype=torch.float32) * 0.2
            else:
                fan_in = shape[-1]
                std = 1.0 / (fan_in ** 0.5)
                if "embed_tokens" in name:
                    std = 0.5
                elif name.endswith("mlp.gate.weight") or name.endswith("block_sparse_moe.gate.weight"):
                    std = 2.0 / (fan_in ** 0.5)
                v = torch.randn(shape, generator=g, dtype=torch.float32) * std
            if bf16_round:
                v = v.to(torch.bfloat16).to(torch.float32)
            p.copy_(v.to(p.dtype))
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()


def moe_blocks(model):
    out = []
    for name, m in model.named_modules():
        gate = getattr(m, "gate", None)
        w = getattr(gate, "weight", None) if gate is not None else None
        if w is not None and hasattr(m, "experts") and getattr(w, "ndim", 0) == 2:
            out.append((name, m))
    return out


def layer_kinds(model):
    kinds = []
    for layer in model.model.layers:
        mlp = getattr(layer, "mlp", None) or getattr(layer, "block_sparse_moe", None)
        kinds.append("moe" if hasattr(mlp, "experts") else "dense")
    return kinds


class RouterGapRecorder:
    """Smallest gap, over tokens and MoE layers, between the k-th and (k+1)-th router logit
    (recomputed here in float32 from the MoE block's input): how close routing came to a tie."""

    def __init__(self, model, top_k):
        self.top_k = top_k
        self.min_gap = None
        self.handles = []
        for _, m in moe_blocks(model):
            self.handles.append(m.register_forward_hook(self.hook, with_kwargs=True))

    def hook(self, mod, args, kwargs, output):
        import torch
        x = args[0] if args else kwargs.get("hidden_states")
        w = mod.gate.weight.float()
        lg = x.reshape(-1, w.shape[1]).float() @ w.t()
        if lg.shape[1] <= self.top_k:
            return
        s = torch.sort(lg, dim=-1, descending=True).values
        gap = float((s[:, self.top_k - 1] - s[:, self.top_k]).min())
        self.min_gap = gap if self.min_gap is None else min(self.min_gap, gap)

    def reset(self):
        self.min_gap = None

    def close(self):
        for h in self.handles:
            h.remove()


def full_logits(model, ids):
    import torch
    with torch.no_grad():
        x = torch.tensor([ids], dtype=torch.long)
        out = model(input_ids=x, use_cache=False)
        return out.logits[0].to(torch.float32).contiguous()


def greedy_full_recompute(model, ids, n):
    """Greedy without KV cache and without any masking: argmax of a full forward each step
    (torch.argmax: lowest id among equal maxima). EOS does not stop it."""
    import torch
    seq = list(ids)
    toks, margins, rel, eos_steps = [], [], [], []
    for step in range(n):
        row = full_logits(model, seq)[-1]
        top2 = torch.topk(row, 2)
        t = int(torch.argmax(row))
        toks.append(t)
        margins.append(float(top2.values[0] - top2.values[1]))
        rel.append(margins[-1] / float(row.abs().max()))
        if t == EOS_ID:
            eos_steps.append(step)
        seq.append(t)
    return toks, margins, rel, eos_steps


def greedy_generate(model, ids, n):
    import torch
    x = torch.tensor([ids], dtype=torch.long)
    with torch.no_grad():
        out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False,
                             max_new_tokens=n, min_new_tokens=n, pad_token_id=PAD_ID,
                             eos_token_id=EOS_ID)
    return [int(t) for t in out[0, len(ids):]]


def safetensors_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
    hdr.pop("__metadata__", None)
    return hdr


def expert_layout(names):
    import re
    packed = any(n.endswith("experts.gate_up_proj") or n.endswith("experts.down_proj") for n in names)
    per_expert = any(re.search(r"experts\.\d+\.", n) for n in names)
    if packed and per_expert:
        return "mixed"
    if packed:
        return "packed"
    if per_expert:
        return "per-expert"
    return "dense"


# Keys docs/models.md says epserve requires, per architecture (checked, not enforced).
EPSERVE_REQUIRED = {
    "LlamaForCausalLM": ["intermediate_size"],
    "Qwen2ForCausalLM": ["intermediate_size"],
    "Qwen3ForCausalLM": ["intermediate_size"],
    "MixtralForCausalLM": ["num_local_experts", "num_experts_per_tok", "intermediate_size"],
    "Qwen2MoeForCausalLM": ["num_experts", "num_experts_per_tok", "moe_intermediate_size",
                            "shared_expert_intermediate_size"],
    "Qwen3MoeForCausalLM": ["num_experts", "num_experts_per_tok", "moe_intermediate_size"],
    "OlmoeForCausalLM": ["num_experts", "num_experts_per_tok", "intermediate_size"],
}


def check_config_keys(arch, cfg):
    missing = [k for k in ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"]
               + EPSERVE_REQUIRED[arch] if cfg.get(k) is None]
    return missing


def dump_json(obj, path):
    """JSON with one key per line and lists of numbers on one line (diff-friendly, small)."""
    def enc(o, ind):
        pad = " " * ind
        if isinstance(o, dict):
            if not o:
                return "{}"
            items = ["%s %s: %s" % (pad, json.dumps(k, ensure_ascii=False), enc(v, ind + 1))
                     for k, v in o.items()]
            return "{\n" + ",\n".join(items) + "\n" + pad + "}"
        if isinstance(o, list) and any(isinstance(v, (dict, list)) for v in o):
            items = ["%s %s" % (pad, enc(v, ind + 1)) for v in o]
            return "[\n" + ",\n".join(items) + "\n" + pad + "]"
        return json.dumps(o, ensure_ascii=False)
    with open(path, "w", encoding="utf-8") as f:
        f.write(enc(obj, 0) + "\n")


def dir_size(d):
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))


def load_reloaded(d, dtype):
    import torch
    from transformers import AutoModelForCausalLM
    kw = {"attn_implementation": "eager"}
    try:
        m = AutoModelForCausalLM.from_pretrained(d, dtype=dtype, experts_implementation="eager", **kw)
    except Exception:
        try:
            m = AutoModelForCausalLM.from_pretrained(d, dtype=dtype, **kw)
        except TypeError:
            m = AutoModelForCausalLM.from_pretrained(d, torch_dtype=dtype, **kw)
    m = set_eager(m).to(torch.float32).eval()
    return m


def build_model(row, seed, vocab_size, tf_major):
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig
    cfg = build_config(row, vocab_size, tf_major)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    model = set_eager(model).to(torch.float32).eval()
    init_weights(model, seed, bf16_round=(row["dtype"] == "bfloat16"))
    model.generation_config = GenerationConfig(bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    return model


def reference(model, prompt_ids, decode):
    """transformers' float32 reference for every prompt: logits (bytes), greedy, statistics."""
    kinds = layer_kinds(model)
    top_k = getattr(model.config, "num_experts_per_tok", None)
    rec = RouterGapRecorder(model, top_k) if top_k and "moe" in kinds else None
    prompts, blocks, offset = [], [], 0
    for (pname, text), (ids_full, ids) in zip(PROMPTS, prompt_ids):
        if rec:
            rec.reset()
        lg = full_logits(model, ids)
        router_gap = rec.min_gap if rec else None
        toks, margins, rel, eos_steps = greedy_full_recompute(model, ids, MAX_NEW_TOKENS)
        gen = greedy_generate(model, ids, MAX_NEW_TOKENS)
        arr = lg.numpy().astype("<f4")
        blocks.append(arr.tobytes())
        prompts.append({
            "name": pname,
            "text": text,
            "truncated": len(ids_full) > len(ids),
            "text_of_ids": decode(ids),
            "ids": ids,
            "num_tokens": len(ids),
            "logits_offset_bytes": offset,
            "logits_shape": [len(ids), int(arr.shape[1])],
            "max_abs_logit": float(lg.abs().max()),
            "argmax": [int(i) for i in lg.argmax(dim=-1)],
            "router_min_topk_logit_gap": router_gap,
            "greedy": {
                "new_tokens": gen,
                "full_recompute_new_tokens": toks,
                "full_recompute_top1_top2_margins": margins,
                "min_relative_margin": min(rel),
                "eos_argmax_steps_full_recompute": eos_steps,
                "generate_equals_full_recompute": gen == toks,
                "text": decode(gen),
            },
        })
        offset += len(blocks[-1])
    if rec:
        rec.close()
    return kinds, prompts, blocks


def acceptable(prompts):
    """Why this seed's reference is too fragile for a parity test (empty = acceptable)."""
    why = []
    for p in prompts:
        g = p["greedy"]
        if g["eos_argmax_steps_full_recompute"]:
            why.append("%s: EOS is a greedy argmax" % p["name"])
        if not g["generate_equals_full_recompute"]:
            why.append("%s: generate != full-recompute greedy" % p["name"])
        if g["min_relative_margin"] < GREEDY_MIN_RELATIVE_MARGIN:
            why.append("%s: greedy margin %.2g of max|logit|" % (p["name"], g["min_relative_margin"]))
        gap = p["router_min_topk_logit_gap"]
        if gap is not None and gap < ROUTER_MIN_GAP:
            why.append("%s: router top-k gap %.2g" % (p["name"], gap))
    return why


def make_fixture(row, out_dir, hf_tok, vocab_size, versions, tf_major, accepted_seeds):
    import numpy
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    name = row["name"]
    d = os.path.join(out_dir, name)
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    problems = []

    # Prompt ids through the tokenizer that is saved (checked again from the saved files below).
    prompt_ids = []
    for _, text in PROMPTS:
        full = list(hf_tok(text, add_special_tokens=True)["input_ids"])
        prompt_ids.append((full, full[:MAX_PROMPT_TOKENS]))

    # Seed search: the first of seed, seed+1000, ... whose greedy margins and router gaps are
    # not fragile (acceptable()); a variant of another row takes that row's accepted seed.
    if "base" in row:
        candidates = [accepted_seeds[row["base"]]]
    else:
        candidates = [row["seed"] + SEED_STEP * i for i in range(MAX_SEED_TRIES)]
    rejected = []
    for seed in candidates:
        model = build_model(row, seed, vocab_size, tf_major)
        kinds, prompts, blocks = reference(model, prompt_ids, hf_tok.decode)
        why = acceptable(prompts) if "base" not in row else []
        if not why:
            break
        rejected.append({"seed": seed, "why": why})
        log("   seed %d rejected: %s" % (seed, "; ".join(why)))
    else:
        problems.append("no acceptable seed in %d tries; kept the last" % len(candidates))
    accepted_seeds[name] = seed
    ref_logits = [torch.from_numpy(numpy.frombuffer(b, dtype="<f4").copy()) for b in blocks]
    offset = sum(len(b) for b in blocks)

    # Save: tokenizer, then the checkpoint exactly as transformers writes it.
    hf_tok.save_pretrained(d)
    save_kw = {}
    if not row["save_original_format"]:
        save_kw["save_original_format"] = False
    to_save = model
    if row["dtype"] == "bfloat16":
        to_save = copy.deepcopy(model).to(torch.bfloat16)
    try:
        to_save.save_pretrained(d, safe_serialization=True, **save_kw)
    except TypeError as e:
        if "safe_serialization" not in str(e):
            raise
        to_save.save_pretrained(d, **save_kw)
    del to_save

    # The saved tokenizer gives the same ids (transformers and tokenizers alike).
    tok_re = AutoTokenizer.from_pretrained(d)
    raw = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    for (pname, text), (full, _) in zip(PROMPTS, prompt_ids):
        if list(tok_re(text, add_special_tokens=True)["input_ids"]) != full:
            problems.append(f"{pname}: the saved tokenizer (transformers) gives other ids")
        if list(raw.encode(text, add_special_tokens=True).ids) != full:
            problems.append(f"{pname}: the saved tokenizer.json (tokenizers) gives other ids")

    st = os.path.join(d, "model.safetensors")
    hdr = safetensors_header(st)
    names = sorted(hdr)
    layout = expert_layout(names)
    dtypes = sorted({v["dtype"] for v in hdr.values()})
    if not row["save_original_format"] and layout != "packed":
        problems.append(f"asked for the packed layout, transformers wrote '{layout}'")
    with open(os.path.join(d, "config.json")) as f:
        cfg_json = json.load(f)
    written_dtype = cfg_json.get("dtype") or cfg_json.get("torch_dtype")
    if written_dtype != row["dtype"]:
        problems.append(f"config.json dtype is {written_dtype!r}, expected {row['dtype']!r}")
    missing = check_config_keys(row["arch"], cfg_json)
    if missing:
        problems.append(f"config.json lacks keys epserve requires: {missing}")

    # Reload and compare bit for bit.
    re_model = load_reloaded(d, torch.float32)
    reload_max_diff = 0.0
    reload_equal = True
    for p, ref in zip(prompts, ref_logits):
        got = full_logits(re_model, p["ids"]).reshape(-1)
        if not torch.equal(got, ref):
            reload_equal = False
            reload_max_diff = max(reload_max_diff, float((got - ref).abs().max()))
    if not reload_equal:
        problems.append(f"reloaded model differs from the saved one (max abs diff {reload_max_diff})")
    del re_model

    with open(os.path.join(d, "logits.bin"), "wb") as f:
        for b in blocks:
            f.write(b)
    logits_sha = hashlib.sha256(b"".join(blocks)).hexdigest()

    ref = {
        "format": "epserve-reference-v1",
        "fixture": name,
        "architecture": row["arch"],
        "varies": row["varies"],
        "seed": seed,
        "seed_search": {"first_seed": candidates[0], "rejected": rejected,
                        "criteria": {"greedy_min_relative_margin": GREEDY_MIN_RELATIVE_MARGIN,
                                     "router_min_topk_logit_gap": ROUTER_MIN_GAP,
                                     "no_eos_in_greedy": True,
                                     "generate_equals_full_recompute": True}},
        "checkpoint_dtype": row["dtype"],
        "checkpoint_tensor_dtypes": dtypes,
        "expert_layout": layout,
        "num_tensors": len(names),
        "layer_kinds": kinds,
        "vocab_size": int(model.config.vocab_size),
        "logits": {
            "file": "logits.bin",
            "dtype": "float32",
            "byte_order": "little",
            "layout": "per prompt in order: row-major [num_tokens, vocab_size] at logits_offset_bytes",
            "total_bytes": offset,
            "sha256": logits_sha,
        },
        "reference_run": {
            "device": "cpu",
            "compute_dtype": "float32",
            "attn_implementation": "eager",
            "experts_implementation": getattr(model.config, "_experts_implementation", None),
            "torch_num_threads": torch.get_num_threads(),
            "mode": "eval, use_cache=False, full forward over the prompt ids (batch 1, no padding)",
            "bf16_note": ("weights rounded to bfloat16, forward in float32 (the upcast bf16 weights)"
                          if row["dtype"] == "bfloat16" else None),
        },
        "generation": {
            "new_tokens": "model.generate(input_ids, attention_mask=ones, do_sample=False, "
                          f"max_new_tokens={MAX_NEW_TOKENS}, min_new_tokens={MAX_NEW_TOKENS}, "
                          f"eos_token_id={EOS_ID}, pad_token_id={PAD_ID}) with KV cache: greedy, "
                          "EOS logit set to -inf at every step (min_new_tokens), so exactly "
                          f"{MAX_NEW_TOKENS} new tokens",
            "full_recompute_new_tokens": "argmax of a full forward (no cache) over prompt + tokens "
                                         "so far, no masking (EOS allowed, does not stop)",
            "max_new_tokens": MAX_NEW_TOKENS,
            "min_new_tokens": MAX_NEW_TOKENS,
            "eos_token_id": EOS_ID,
        },
        "tokenizer": {
            "add_special_tokens": True,
            "note": "ids = the fixture's tokenizer (AutoTokenizer.from_pretrained(dir)) on `text`, "
                    f"cut to {MAX_PROMPT_TOKENS} tokens; tokenizers.Tokenizer.encode gives the same ids",
        },
        "reload_check": {"bitwise_equal": reload_equal, "max_abs_diff": reload_max_diff},
        "problems": problems,
        "versions": versions,
        "prompts": prompts,
    }
    dump_json(ref, os.path.join(d, "reference.json"))
    files = sorted(os.listdir(d))
    entry = {
        "name": name,
        "architecture": row["arch"],
        "varies": row["varies"],
        "dtype": row["dtype"],
        "expert_layout": layout,
        "layer_kinds": kinds,
        "vocab_size": int(model.config.vocab_size),
        "files": files,
        "bytes": dir_size(d),
        "model_bytes": os.path.getsize(st),
        "reload_bitwise_equal": reload_equal,
        "logits_sha256": logits_sha,
        "problems": problems,
        "config": {k: cfg_json.get(k) for k in sorted(cfg_json)},
        "prompt_tokens": [p["num_tokens"] for p in prompts],
        "seed": seed,
        "seed_tries": len(rejected) + 1,
        "min_greedy_margin": min(m for p in prompts for m in p["greedy"]["full_recompute_top1_top2_margins"]),
        "min_greedy_relative_margin": min(p["greedy"]["min_relative_margin"] for p in prompts),
        "min_router_gap": (min(p["router_min_topk_logit_gap"] for p in prompts)
                           if "moe" in kinds else None),
    }
    return entry


def rope_str(cfg):
    rp = cfg.get("rope_parameters") or {}
    rs = cfg.get("rope_scaling") or {}
    t = rp.get("rope_type") or rs.get("rope_type") or rs.get("type") or "default"
    theta = rp.get("rope_theta", cfg.get("rope_theta"))
    extra = ""
    src = rp if rp else rs
    if t != "default":
        extra = " ×%g" % src.get("factor", 0)
    return "%s%s θ=%g" % (t, extra, theta or 0)


def write_readme(out_dir, entries, versions):
    lines = [
        "# Reference model fixtures",
        "",
        "Generated by `tools/make_fixtures.py` — do not edit by hand; docs/fixtures.md describes",
        "them. Weights are random (seeded); the logits are transformers' float32 CPU forward.",
        "",
        "Versions: " + ", ".join("%s %s" % kv for kv in sorted(versions.items())) + ".",
        "",
        "| fixture | architecture | layers (kinds) | hidden / heads / kv / head_dim | experts / top-k | "
        "norm_topk | tied | rope | dtype | expert layout on disk | bytes |",
        "|---|---|---|---|---|---|---|---|---|---|---:|",
    ]
    for e in entries:
        c = e["config"]
        n_exp = c.get("num_experts") or c.get("num_local_experts")
        hd = c.get("head_dim") or (c["hidden_size"] // c["num_attention_heads"])
        kinds = "".join("M" if k == "moe" else "D" for k in e["layer_kinds"])
        lines.append("| `%s` | %s | %d (%s) | %d / %d / %d / %d | %s | %s | %s | %s | %s | %s | %d |" % (
            e["name"], e["architecture"], c["num_hidden_layers"], kinds, c["hidden_size"],
            c["num_attention_heads"], c.get("num_key_value_heads") or c["num_attention_heads"], hd,
            ("%d / %d" % (n_exp, c["num_experts_per_tok"])) if n_exp else "—",
            c.get("norm_topk_prob", "—") if n_exp else "—",
            c.get("tie_word_embeddings"), rope_str(c), e["dtype"], e["expert_layout"], e["bytes"]))
    lines += ["", "Layer kinds: D dense MLP, M MoE.", "", "What each one varies:", ""]
    for e in entries:
        lines.append("* `%s`: %s." % (e["name"], e["varies"]))
    lines += ["", "Total: %d bytes." % sum(e["bytes"] for e in entries), ""]
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/fixtures/models")
    ap.add_argument("--only", nargs="*", help="fixture names (default: all)")
    args = ap.parse_args()

    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    import numpy
    import tokenizers
    import torch
    import transformers
    torch.set_num_threads(1)
    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "tokenizers": tokenizers.__version__, "numpy": numpy.__version__,
                "python": platform.python_version()}
    try:
        import safetensors
        versions["safetensors"] = safetensors.__version__
    except Exception:
        pass
    tf_major = int(transformers.__version__.split(".")[0])
    log("versions:", versions)

    tok = train_tokenizer()
    tok2 = train_tokenizer()
    if tok.to_str() != tok2.to_str():
        log("WARNING: tokenizer training is not deterministic (two trainings differ)")
    log("tokenizer vocab size:", tok.get_vocab_size())
    hf_tok = make_hf_tokenizer(tok)
    vocab_size = tok.get_vocab_size()

    rows = resolve_rows(FIXTURES)
    if args.only:
        rows = [r for r in rows if r["name"] in args.only]
    os.makedirs(args.out, exist_ok=True)
    entries, failed, accepted_seeds = [], [], {}
    for row in rows:
        log("== %s (%s)" % (row["name"], row["arch"]))
        try:
            e = make_fixture(row, args.out, hf_tok, vocab_size, versions, tf_major, accepted_seeds)
            entries.append(e)
            log("   seed=%d (try %d) layout=%s kinds=%s bytes=%d prompts=%s min_margin=%.3g (rel %.3g) "
                "router_gap=%s" % (e["seed"], e["seed_tries"], e["expert_layout"], e["layer_kinds"],
                                   e["bytes"], e["prompt_tokens"], e["min_greedy_margin"],
                                   e["min_greedy_relative_margin"], e["min_router_gap"]))
            for p in e["problems"]:
                log("   PROBLEM:", p)
            if not e["reload_bitwise_equal"]:
                failed.append(row["name"])
        except Exception:
            traceback.print_exc()
            failed.append(row["name"])
    # A variant saved differently from its base must give the base's logits exactly.
    by_name = {e["name"]: e for e in entries}
    for row in rows:
        if "base" in row and row["name"] in by_name and row["base"] in by_name:
            same = by_name[row["name"]]["logits_sha256"] == by_name[row["base"]]["logits_sha256"]
            by_name[row["name"]]["same_logits_as_base"] = same
            if not same:
                log("FAILED: %s logits differ from %s" % (row["name"], row["base"]))
                failed.append(row["name"])
    manifest = {
        "generated_by": "tools/make_fixtures.py",
        "date": datetime.date.today().isoformat(),
        "versions": versions,
        "tokenizer": {"vocab_size": tok.get_vocab_size(), "special_tokens": SPECIAL_TOKENS,
                      "pad_id": PAD_ID, "bos_id": BOS_ID, "eos_id": EOS_ID},
        "fixtures": entries,
        "failed": failed,
    }
    dump_json(manifest, os.path.join(args.out, "manifest.json"))
    write_readme(args.out, entries, versions)
    log("total bytes:", sum(e["bytes"] for e in entries))
    # Files transformers wrote, per fixture.
    for e in entries:
        log("  %-18s %s" % (e["name"], " ".join(e["files"])))
    if failed:
        log("FAILED:", failed)
        sys.exit(1)


if __name__ == "__main__":
    main()

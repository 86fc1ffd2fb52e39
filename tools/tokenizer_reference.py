#!/usr/bin/env python3
"""Writes the reference fixtures for the C++ tokenizer tests.

Runs where Hugging Face `tokenizers` is installed (the GPU machine):

    python3 tools/tokenizer_reference.py --tokenizers .cache/tokenizers \
        --corpus tests/tokenizer/fixtures/corpus.jsonl --out OUTDIR

For every vocabulary folder (qwen3, llama2, deepseek_v3) it writes OUTDIR/<name>.json
holding, per corpus line, the ids of `Tokenizer.encode` with add_special_tokens False and
True, the ids with `encode_special_tokens = True` (special-token text treated as plain
text), and `Tokenizer.decode` of those ids with skip_special_tokens False / True. The ~1 MB
input (see big_text) is recorded as an id count and an FNV-1a hash only, plus the encode
speed of `tokenizers` on it. `decode_probes` are pseudo-random id sequences with their
decodes (exercise invalid UTF-8 and byte-fallback runs in the decoders).

With --bench it writes no fixtures and only times `tokenizers` (OUTDIR/hf_bench.json):
encode of the ~1 MB text (best of 5) and of every corpus line separately, for
comparison with tools/bench_tokenizer on the same machine.
"""
import argparse
import json
import os
import sys
import time

BIG_TEXT_MIN_BYTES = 1 << 20


def big_text(texts):
    """The ~1 MB input: corpus texts in order, each followed by '\\n', cycled until the
    UTF-8 size is at least BIG_TEXT_MIN_BYTES. The C++ tests build the same string."""
    parts, size = [], 0
    while size < BIG_TEXT_MIN_BYTES:
        for t in texts:
            s = t + "\n"
            parts.append(s)
            size += len(s.encode("utf-8"))
            if size >= BIG_TEXT_MIN_BYTES:
                break
    return "".join(parts)


def fnv1a_ids(ids):
    """64-bit FNV-1a over the ids, each as 4 little-endian bytes; lower-case hex."""
    h = 0xCBF29CE484222325
    for i in ids:
        for k in range(4):
            h ^= (i >> (8 * k)) & 0xFF
            h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def probe_ids(vocab_size, seed, n):
    """Deterministic pseudo-random ids (64-bit LCG); the C++ side never regenerates them."""
    x = seed
    out = []
    for _ in range(n):
        x = (x * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        out.append((x >> 33) % vocab_size)
    return out


def run_one(name, folder, cases, out_dir):
    import tokenizers
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    tok_text = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    has_text_mode = hasattr(tok_text, "encode_special_tokens")
    if has_text_mode:
        tok_text.encode_special_tokens = True
    result = {"name": name, "tokenizers_version": tokenizers.__version__, "cases": []}
    for c in cases:
        text = c["text"]
        plain = tok.encode(text, add_special_tokens=False).ids
        special = tok.encode(text, add_special_tokens=True).ids
        entry = {
            "name": c["name"],
            "ids": plain,
            "ids_special": special,
            "decode": tok.decode(special, skip_special_tokens=False),
            "decode_skip": tok.decode(special, skip_special_tokens=True),
            "decode_plain": tok.decode(plain, skip_special_tokens=False),
        }
        if has_text_mode:
            entry["ids_text_specials"] = tok_text.encode(text, add_special_tokens=False).ids
        result["cases"].append(entry)

    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    probes = []
    for p in range(40):
        ids = probe_ids(vocab_size, 1000 + p, 1 + (p * 7) % 24)
        probes.append({"ids": ids,
                       "decode": tok.decode(ids, skip_special_tokens=False),
                       "decode_skip": tok.decode(ids, skip_special_tokens=True)})
    result["decode_probes"] = probes

    big = big_text([c["text"] for c in cases])
    big_bytes = len(big.encode("utf-8"))
    best = None
    for _ in range(3):
        t0 = time.perf_counter()
        enc = tok.encode(big, add_special_tokens=False)
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    special_big = tok.encode(big, add_special_tokens=True).ids
    result["big"] = {
        "bytes": big_bytes,
        "count": len(enc.ids), "fnv1a": fnv1a_ids(enc.ids),
        "count_special": len(special_big), "fnv1a_special": fnv1a_ids(special_big),
        "hf_encode_seconds": best,
        "hf_encode_mb_per_s": big_bytes / 1e6 / best,
    }

    # transformers' view (tokenizer_config.json applied), for documentation of the
    # add_bos_token rule; optional.
    try:
        from transformers import AutoTokenizer
        hf = AutoTokenizer.from_pretrained(folder)
        result["transformers"] = {
            "version": __import__("transformers").__version__,
            "class": type(hf).__name__,
            "ids_special": [hf(c["text"], add_special_tokens=True)["input_ids"] for c in cases],
        }
    except Exception as e:  # noqa: BLE001 - recorded, not fatal
        result["transformers"] = {"error": repr(e)[:500]}

    with open(os.path.join(out_dir, name + ".json"), "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=True, separators=(",", ":"))
    print(f"{name}: {len(cases)} cases, big {big_bytes} bytes -> {len(enc.ids)} ids, "
          f"hf {big_bytes / 1e6 / best:.2f} MB/s", flush=True)


def bench(folder_root, names, cases, out_dir):
    from tokenizers import Tokenizer
    import tokenizers

    big = big_text([c["text"] for c in cases])
    big_bytes = len(big.encode("utf-8"))
    line_bytes = sum(len(c["text"].encode("utf-8")) for c in cases)
    result = {"tokenizers_version": tokenizers.__version__, "big_bytes": big_bytes,
              "rayon_num_threads": os.environ.get("RAYON_NUM_THREADS", "")}
    for name in names:
        tok = Tokenizer.from_file(os.path.join(folder_root, name, "tokenizer.json"))
        tok.encode(big, add_special_tokens=False)  # warm the word cache
        best = min(_timed(lambda: tok.encode(big, add_special_tokens=False)) for _ in range(5))
        lines = min(_timed(lambda: [tok.encode(c["text"]) for c in cases] * 1)
                    for _ in range(200))
        result[name] = {"big_mb_per_s": big_bytes / 1e6 / best,
                        "lines_mb_per_s": line_bytes / 1e6 / lines}
        print(name, result[name], flush=True)
    with open(os.path.join(out_dir, "hf_bench.json"), "w") as f:
        json.dump(result, f, indent=1)


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizers", default=".cache/tokenizers")
    ap.add_argument("--corpus", default="tests/tokenizer/fixtures/corpus.jsonl")
    ap.add_argument("--out", required=True)
    ap.add_argument("--names", default="qwen3,llama2,deepseek_v3")
    ap.add_argument("--bench", action="store_true", help="only time tokenizers")
    args = ap.parse_args()
    with open(args.corpus, encoding="utf-8") as f:
        cases = [json.loads(line) for line in f if line.strip()]
    os.makedirs(args.out, exist_ok=True)
    if args.bench:
        bench(args.tokenizers, args.names.split(","), cases, args.out)
        return 0
    for name in args.names.split(","):
        run_one(name, os.path.join(args.tokenizers, name), cases, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

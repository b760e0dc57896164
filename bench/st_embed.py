"""Anchor for `docent bench embed`: sentence-transformers (PyTorch CPU) on the
same sentences, batch size and thread count. Prints JSON like docent's bench.

Usage: python st_embed.py MODEL_DIR [--sentences 1000] [--words 40] [--batch 32] [--threads 2] [--runs 3]
MODEL_DIR is a sentence-transformers folder (modules.json, config.json, ...).
"""
import argparse
import json
import statistics
import time

VOCAB = [
    "the", "customer", "reported", "that", "sync", "stopped", "after", "upgrading", "their", "laptop", "to", "a",
    "new", "version", "of", "operating", "system", "and", "support", "asked", "for", "logs", "from", "last",
    "week", "while", "billing", "team", "reviewed", "invoice", "with", "enterprise", "plan", "discount", "policy",
    "employees", "receive", "vacation", "days", "per", "year", "security", "incident", "must", "be", "escalated",
    "within", "minutes", "data", "stored", "in", "frankfurt", "region", "files", "can", "up", "gigabytes", "each",
]
MASK = (1 << 64) - 1


def synthetic_sentences(count, words):
    """The same xorshift sequence as docent's bench::synthetic_sentences."""
    state = 0x9E3779B97F4A7C15
    out = []
    for _ in range(count):
        picked = []
        for _ in range(words):
            state ^= (state << 13) & MASK
            state ^= state >> 7
            state ^= (state << 17) & MASK
            picked.append(VOCAB[state % len(VOCAB)])
        out.append(" ".join(picked) + ".")
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model_dir")
    p.add_argument("--sentences", type=int, default=1000)
    p.add_argument("--words", type=int, default=40)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(a.threads)
    model = SentenceTransformer(a.model_dir, device="cpu")
    model.max_seq_length = 256
    texts = synthetic_sentences(a.sentences, a.words)
    model.encode(texts[: a.batch], batch_size=a.batch)  # warm-up
    rates = []
    for _ in range(a.runs):
        t = time.perf_counter()
        vectors = model.encode(texts, batch_size=a.batch, normalize_embeddings=True)
        rates.append(len(texts) / (time.perf_counter() - t))
        assert len(vectors) == len(texts)
    print(json.dumps({
        "bench": "embed",
        "implementation": f"sentence-transformers (torch {torch.__version__}, CPU)",
        "sentences": a.sentences,
        "words_per_sentence": a.words,
        "batch": a.batch,
        "threads": a.threads,
        "runs_sentences_per_s": rates,
        "median_sentences_per_s": statistics.median(rates),
    }, indent=2))


if __name__ == "__main__":
    main()

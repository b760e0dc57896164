"""Can words alone tell SQuAD 2.0's unanswerable questions from answerable ones?

For every question of a SQuAD 2.0 file, against its own paragraph (what
retrieval finds for nearly all of them), three signals an abstention rule
could threshold without a model:
- the share of the question's content words (lower-cased, stop words
  removed, crude suffix stemming) missing from the paragraph;
- the share of the question's word bigrams missing from the paragraph;
- whether the question contains a negation.
Prints the AUC of each (0.5 = no better than chance) for separating
unanswerable (positive) from answerable questions.

Usage: python3 bench/lexical_abstention_auc.py ../shared/data/squad/squad2-dev.json
"""
import bisect
import json
import re
import sys

STOP = set(
    "a an the of in on at to for by with from and or is are was were be been being what which who whom whose "
    "when where why how did do does that this these those it its as not no than then there their they he she "
    "his her i you we our your can could would should may might will shall has have had into about over under "
    "after before during between among also other such".split()
)


def words(text):
    return re.findall(r"[a-z0-9]+", text.lower())


def stem(w):
    for suffix in ("ing", "ed", "es", "s", "ly"):
        if len(w) > 4 and w.endswith(suffix):
            return w[: -len(suffix)]
    return w


def auc(pairs):
    """Probability that a random positive scores above a random negative (ties count half)."""
    pos = [s for y, s in pairs if y]
    neg = sorted(s for y, s in pairs if not y)
    total = 0.0
    for s in pos:
        lo, hi = bisect.bisect_left(neg, s), bisect.bisect_right(neg, s)
        total += lo + (hi - lo) / 2
    return total / (len(pos) * len(neg))


def main():
    data = json.load(open(sys.argv[1]))
    rows = []
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            context = [stem(w) for w in words(paragraph["context"])]
            unigrams, bigrams = set(context), set(zip(context, context[1:]))
            for qa in paragraph["qas"]:
                q = [stem(w) for w in words(qa["question"])]
                content = [w for w in q if w not in STOP]
                if not content:
                    continue
                missing = sum(w not in unigrams for w in content) / len(content)
                pairs = list(zip(q, q[1:]))
                missing_pairs = sum(p not in bigrams for p in pairs) / max(1, len(pairs))
                negation = float(any(w in ("not", "never", "no") for w in words(qa["question"])))
                rows.append((qa.get("is_impossible", False), missing, missing_pairs, negation))
    print(json.dumps({
        "questions": len(rows),
        "unanswerable": sum(r[0] for r in rows),
        "auc_missing_content_words": round(auc([(r[0], r[1]) for r in rows]), 3),
        "auc_missing_bigrams": round(auc([(r[0], r[2]) for r in rows]), 3),
        "auc_negation": round(auc([(r[0], r[3]) for r in rows]), 3),
    }))


if __name__ == "__main__":
    main()

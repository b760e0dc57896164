"""Drives docent's OpenAI-compatible endpoints with the official `openai` client.

Usage: python client_check.py BASE_URL   (e.g. http://127.0.0.1:8080/v1)
Exits non-zero with a message on the first failed check.
"""
import sys

from openai import OpenAI

base_url = sys.argv[1]
client = OpenAI(base_url=base_url, api_key="test-key")

models = [m.id for m in client.models.list().data]
assert "all-MiniLM-L6-v2" in models, models

emb = client.embeddings.create(model="all-MiniLM-L6-v2", input=["vacation days", "data center"])
assert len(emb.data) == 2, emb
assert len(emb.data[0].embedding) == 384, len(emb.data[0].embedding)
norm = sum(x * x for x in emb.data[0].embedding) ** 0.5
assert abs(norm - 1.0) < 1e-3, norm  # the client decodes base64 itself

question = [{"role": "user", "content": "Where is the EU data center located?"}]
r = client.chat.completions.create(model="docent", messages=question, max_tokens=24, temperature=0)
assert r.object == "chat.completion", r
assert r.choices[0].message.role == "assistant"
assert r.choices[0].message.content, r
assert r.usage.completion_tokens > 0, r.usage
docent = r.model_extra["docent"]
assert docent["citations"][0]["source"] == "faq.md", docent["citations"][0]

stream = client.chat.completions.create(
    model="docent", messages=question, max_tokens=24, temperature=0, stream=True
)
pieces, first_extra, last_extra, finish = [], None, None, None
for chunk in stream:
    extra = (chunk.model_extra or {}).get("docent")
    if extra is not None:
        first_extra = first_extra or extra
        last_extra = extra
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
    if chunk.choices and chunk.choices[0].finish_reason:
        finish = chunk.choices[0].finish_reason
assert len(pieces) >= 2, pieces
assert finish in ("stop", "length"), finish
assert first_extra["citations"][0]["source"] == "faq.md", first_extra
assert "answerable" in last_extra, last_extra
print("openai client checks passed:", "".join(pieces)[:80])

#!/usr/bin/env python3
"""Writes the committed seed inputs of every fuzz target (small, valid or
nearly valid files of each format). Run from anywhere: python3 make_seeds.py"""

import io
import json
import os
import struct
import zipfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    os.makedirs(os.path.join(HERE, target), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(HERE, target, name), "wb") as f:
        f.write(data)


# PDF: objects with a correct cross-reference table.
def pdf(objects, trailer_extra=""):
    out = b"%PDF-1.4\n"
    offsets = []
    for i, obj in enumerate(objects, 1):
        offsets.append(len(out))
        body = obj if isinstance(obj, bytes) else obj.encode("latin-1")
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += ("trailer\n<< /Size %d /Root 1 0 R %s >>\nstartxref\n%d\n%%%%EOF\n"
            % (len(objects) + 1, trailer_extra, xref)).encode()
    return out


def stream(ops, compress=False):
    data = ops.encode("latin-1")
    if compress:
        data = zlib.compress(data)
        return b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(data) + data + b"\nendstream"
    return b"<< /Length %d >>\nstream\n" % len(data) + data + b"\nendstream"


def pages_pdf(texts, title=None, compress=False):
    n = len(texts)
    font = 3 + 2 * n
    kids = " ".join("%d 0 R" % (3 + 2 * i) for i in range(n))
    objs = ["<< /Type /Catalog /Pages 2 0 R >>", "<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, n)]
    for i, text in enumerate(texts):
        objs.append("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                    "/Resources << /Font << /F1 %d 0 R >> >> /Contents %d 0 R >>" % (font, 4 + 2 * i))
        ops = "BT /F1 11 Tf 14 TL 72 740 Td\n" + "".join("(%s) Tj T*\n" % l for l in text.split("\n")) + "ET"
        objs.append(stream(ops, compress))
    objs.append("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    extra = ""
    if title:
        objs.append("<< /Title (%s) >>" % title)
        extra = "/Info %d 0 R" % len(objs)
    return pdf(objs, extra)


put("extract_pdf", "one_page", pages_pdf(["Visitors park in Lot C.\nThe gate opens at 7."], "Parking"))
put("extract_pdf", "two_pages_flate", pages_pdf(["Rail tickets are booked ahead.", "Refunds take 5 days."], compress=True))
put("extract_pdf", "no_text", pages_pdf([""]))

# HTML
put("extract_html", "page.html", """<!doctype html><html><head><title>Handbook</title>
<style>p{}</style><script>var x = "<p>";</script></head><body><nav>Home | About</nav>
<h1>Parking</h1><p>Visitors park in <b>Lot C</b>.</p><h2>Hours</h2><ul><li>Mon&ndash;Fri</li><li>Sat</li></ul>
<table><tr><th>Day</th><td>7&amp;8</td></tr></table><pre>  keep   spaces
  here</pre><footer>(c)</footer></body></html>""")
put("extract_html", "nested.html", "<div>" * 40 + "deep text" + "</div>" * 40 + "<p>after<br>line<hr>")
put("extract_html", "latin1.html", "<html><body><h3>Caf\xe9</h3><p>na\u00efve \u201cquoted\u201d</p></body></html>".encode("cp1252"))

# Markdown
put("extract_markdown", "front_matter.md", "---\ntitle: \"Travel policy\"\ntags: rail, air\ndate: 2024-01-02\n---\n# Travel\n\n## Rail\n\nBook ahead.\n\n```\n# not a heading\n```\n")
put("extract_markdown", "utf16.md", "\ufeff# Heading\r\n\r\nText \u00e9\r\n".encode("utf-16-le"))
put("extract_markdown", "plain.md", "Just a paragraph without headings.\n\n- item\n- item two\n")

# DOCX
def docx(body, title=None):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>')
        z.writestr("word/document.xml", '<?xml version="1.0" encoding="UTF-8"?>'
                   '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>'
                   + body + "</w:body></w:document>")
        if title:
            z.writestr("docProps/core.xml", '<?xml version="1.0"?><cp:coreProperties '
                       'xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties" '
                       'xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>%s</dc:title></cp:coreProperties>' % title)
    return buf.getvalue()


def para(text, style=None):
    ppr = '<w:pPr><w:pStyle w:val="%s"/></w:pPr>' % style if style else ""
    return "<w:p>%s<w:r><w:t>%s</w:t></w:r></w:p>" % (ppr, text)


put("extract_docx", "headings.docx", docx(para("Handbook", "Title") + para("Parking", "Heading1")
                                           + para("Visitors park in Lot C &amp; D.") + para("Hours", "heading 2")
                                           + "<w:p><w:r><w:t>a</w:t><w:tab/><w:t>b</w:t><w:br/><w:t>c &#233;</w:t></w:r></w:p>",
                                           title="Staff handbook"))
put("extract_docx", "plain.docx", docx(para("One paragraph.")))

# Text decoding
put("extract_text", "utf8.txt", "Plain text, caf\u00e9, \u65e5\u672c\u8a9e.\nSecond line.\n")
put("extract_text", "utf8_bom_crlf.txt", b"\xef\xbb\xbfline one\r\nline two\r\n")
put("extract_text", "utf16le_nobom.txt", "Text in UTF-16 without a byte order mark.\n".encode("utf-16-le"))
put("extract_text", "utf16be_bom.txt", b"\xfe\xff" + "BOM big-endian\n".encode("utf-16-be"))
put("extract_text", "cp1252.txt", "na\u00efve caf\u00e9 \u201cquotes\u201d \u20ac5\n".encode("cp1252"))
put("extract_text", "shift_jis.txt", "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3002\n".encode("shift_jis"))

# Chunker: first byte even = Markdown, odd = plain text.
md = "# Billing\nintro\n\n## Refunds\n" + "Refunds are paid within five working days. " * 12 + "\n```\n# not a heading\n```\n## Invoices ##\nmore\n# Other\nx\n"
put("chunker", "markdown", b"\x00" + md.encode())
put("chunker", "plain", b"\x01" + ("Rail tickets are booked ahead. " * 40 + "\n\n" + "Zoë’s café — naïve 日本語. " * 10).encode())
put("chunker", "stacked_headings", b"\x00# Travel\n\n## Rail\n\nTickets are booked ahead.\n   # indented\n#\n####### seven\n")

# Request bodies: the first byte picks the route (see request_json.rs).
routes = [
    (0, {"question": "Where do visitors park?", "top_k": 3, "filters": {"tags": ["seed"]}, "mode": "hybrid",
         "max_tokens": 64, "temperature": 0.0, "answer_style": "concise",
         "history": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}),
    (1, {"question": "And rail tickets?", "stream": True, "rerank": False}),
    (2, {"query": "parking lot", "top_k": 5, "mode": "keyword", "filters": {"source_prefix": "docs/"}}),
    (3, {"model": "x", "messages": [{"role": "system", "content": "be brief"},
                                     {"role": "user", "content": [{"type": "text", "text": "Where to park?"}]}],
         "max_tokens": 32, "stream": False, "filters": {"document_ids": ["docs/parking.md"]}, "top_k": 2}),
    (3, {"messages": [{"role": "user", "content": "Where to park?"}], "stream": True}),
    (4, {"input": ["one", "two"], "encoding_format": "base64"}),
    (4, {"input": "one"}),
]
for i, (pick, body) in enumerate(routes):
    put("request_json", "route%d_%d" % (pick, i), bytes([pick]) + json.dumps(body).encode())
put("request_json", "documents_get", b"\x05docs/parking.md")
put("request_json", "conversation_get", b"\x06" + b"0" * 32)
put("request_json", "documents_list", b"\x07limit=1&after=docs/a.md")

# Filters
filters = [
    {},
    {"document_ids": ["docs/parking.md", "notes.txt"]},
    {"source": "notes.txt"},
    {"source_prefix": "docs"},
    {"source_prefix": "./docs/travel/"},
    {"tags": ["policy", "\u00e9"]},
    {"metadata": {"lang": "en"}},
    {"metadata": {"author": "Zo\u00eb", "x y": "1 2"}},
    {"metadata": {"owner": "ops", "review.by": "ana"}},
    {"modified_after": 1650000000, "modified_before": 1800000000},
    {"tags": ["site"], "metadata": {"lang": "en"}, "modified_after": 0},
]
for i, f in enumerate(filters):
    put("filter", "filter%d.json" % i, json.dumps(f, ensure_ascii=False))


# GGUF v3: header, metadata, one tensor directory entry (no weights).
def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gval(v):
    kind, x = v
    if kind == "str":
        return struct.pack("<I", 8) + gstr(x)
    if kind == "u32":
        return struct.pack("<I", 4) + struct.pack("<I", x)
    if kind == "strs":
        return struct.pack("<I", 9) + struct.pack("<IQ", 8, len(x)) + b"".join(gstr(s) for s in x)
    if kind == "i32s":
        return struct.pack("<I", 9) + struct.pack("<IQ", 5, len(x)) + b"".join(struct.pack("<i", n) for n in x)
    raise ValueError(kind)


def gguf(meta, tensors=(("token_embd.weight", (4, 8)),)):
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta))
    for k, v in meta:
        out += gstr(k) + gval(v)
    for name, dims in tensors:
        out += gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", 0, 0)
    return out


tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "\u010a", "a", "b", "ab", "s", "y", "t", "e", "m",
          "sy", "st", "em", "\u0120", "\u0120a"]
types = [3, 3, 3] + [1] * (len(tokens) - 3)
base = [
    ("general.architecture", ("str", "qwen2")),
    ("qwen2.context_length", ("u32", 2048)),
    ("tokenizer.ggml.model", ("str", "gpt2")),
    ("tokenizer.ggml.tokens", ("strs", tokens)),
    ("tokenizer.ggml.merges", ("strs", ["a b", "s y", "s t", "e m", "\u0120 a"])),
    ("tokenizer.ggml.eos_token_id", ("u32", 2)),
]
put("gguf_header", "chatml_qwen2.gguf", gguf(base + [
    ("tokenizer.ggml.pre", ("str", "qwen2")),
    ("tokenizer.ggml.token_type", ("i32s", types)),
    ("tokenizer.chat_template", ("str", "{% for m in messages %}<|im_start|>{{m.role}}\n{{m.content}}<|im_end|>{% endfor %}")),
]))
put("gguf_header", "smollm_no_template.gguf", gguf(base + [
    ("tokenizer.ggml.pre", ("str", "smollm")),
    ("tokenizer.ggml.token_type", ("i32s", types)),
    ("general.alignment", ("u32", 64)),
]))
put("gguf_header", "llama3_no_types.gguf", gguf(base + [("tokenizer.ggml.pre", ("str", "llama-bpe"))], tensors=()))

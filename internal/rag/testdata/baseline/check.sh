#!/bin/sh
# Checks the baseline RAG evaluation dataset: valid JSONL, the fields of every line, unique
# ids, labels that name existing documents, document lengths, counts and language balance.
# Usage: internal/rag/testdata/baseline/check.sh   (exit status 0 when every check passes)
set -eu
cd "$(dirname "$0")"
exec python3 - corpus.jsonl queries.jsonl <<'PY'
import json, re, sys

corpus_path, queries_path = sys.argv[1], sys.argv[2]
problems = []

def lines(path):
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                problems.append(f"{path}:{n}: empty line")
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(f"{path}:{n}: invalid JSON: {e}")

def english_words(text):
    return len(re.findall(r"[A-Za-z0-9_./:{}<>`'-]+", text))

docs = {}
for n, d in lines(corpus_path):
    where = f"{corpus_path}:{n}"
    if set(d) != {"id", "lang", "title", "text", "metadata"}:
        problems.append(f"{where}: fields {sorted(d)}")
        continue
    if not re.fullmatch(r"(en|zh)-\d{4}", d["id"]) or d["id"][:2] != d["lang"]:
        problems.append(f"{where}: id {d['id']!r} does not match lang {d['lang']!r}")
    if d["id"] in docs:
        problems.append(f"{where}: duplicate id {d['id']}")
    m = d["metadata"]
    if not isinstance(m, dict) or not m.get("product") or not m.get("topic"):
        problems.append(f"{where}: metadata needs product and topic")
    if not d["title"].strip():
        problems.append(f"{where}: empty title")
    if d["lang"] == "en":
        w = english_words(d["text"])
        if not 80 <= w <= 400:
            problems.append(f"{where}: {d['id']} has {w} words (80-400)")
    else:
        c = len(d["text"])
        if not 150 <= c <= 700:
            problems.append(f"{where}: {d['id']} has {c} characters (150-700)")
    docs[d["id"]] = d

queries = {}
texts = set()
for n, q in lines(queries_path):
    where = f"{queries_path}:{n}"
    if set(q) != {"id", "lang", "query", "relevant", "hard_negatives", "answer"}:
        problems.append(f"{where}: fields {sorted(q)}")
        continue
    if not re.fullmatch(r"q-\d{4}", q["id"]):
        problems.append(f"{where}: bad id {q['id']!r}")
    if q["id"] in queries:
        problems.append(f"{where}: duplicate id {q['id']}")
    if q["lang"] not in ("en", "zh"):
        problems.append(f"{where}: lang {q['lang']!r}")
    if q["query"] in texts:
        problems.append(f"{where}: duplicate query text")
    texts.add(q["query"])
    if not q["relevant"]:
        problems.append(f"{where}: no relevant document")
    for i in q["relevant"] + q["hard_negatives"]:
        if i not in docs:
            problems.append(f"{where}: unknown document {i}")
    if set(q["relevant"]) & set(q["hard_negatives"]):
        problems.append(f"{where}: a document is both relevant and a hard negative")
    if not q["answer"].strip():
        problems.append(f"{where}: empty answer")
    queries[q["id"]] = q

def count(items, lang):
    return sum(1 for x in items.values() if x["lang"] == lang)

de, dz = count(docs, "en"), count(docs, "zh")
qe, qz = count(queries, "en"), count(queries, "zh")
if len(docs) < 300:
    problems.append(f"corpus: {len(docs)} documents, at least 300 wanted")
if len(queries) < 200:
    problems.append(f"queries: {len(queries)} queries, at least 200 wanted")
for name, a, b in (("corpus", de, dz), ("queries", qe, qz)):
    if a + b and not 0.4 <= a / (a + b) <= 0.6:
        problems.append(f"{name}: language balance en {a} / zh {b} is outside 40-60 %")
cited = {i for q in queries.values() for i in q["relevant"]}
with_neg = sum(1 for q in queries.values() if q["hard_negatives"])
multi = sum(1 for q in queries.values() if len(q["relevant"]) > 1)
products = sorted({d["metadata"]["product"] for d in docs.values()})

print(f"documents: {len(docs)} (en {de}, zh {dz}); products: {', '.join(products)}")
print(f"queries:   {len(queries)} (en {qe}, zh {qz}); with hard negatives {with_neg}; "
      f"with several relevant documents {multi}")
print(f"documents relevant to at least one query: {len(cited)}")
for p in problems:
    print("FAIL", p)
print("ok" if not problems else f"{len(problems)} problem(s)")
sys.exit(1 if problems else 0)
PY

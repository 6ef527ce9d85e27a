#!/bin/sh
# Checks the baseline RAG evaluation dataset: valid JSONL, the fields of every line, unique
# ids, labels that name existing documents, document lengths, counts and language balance.
# With --bm25 it also scores a plain BM25 retriever (English words, Chinese character bigrams)
# on the dataset: a reference point for the full-text retriever, not the committed baseline.
# Usage: internal/rag/testdata/baseline/check.sh [--bm25]   (exit status 0 when every check passes)
set -eu
cd "$(dirname "$0")"
exec python3 - corpus.jsonl queries.jsonl "$@" <<'PY'
import collections, json, math, re, sys

corpus_path, queries_path = sys.argv[1], sys.argv[2]
bm25 = "--bm25" in sys.argv[3:]
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
        elif docs[i]["lang"] != q["lang"]:
            problems.append(f"{where}: {i} is not in the query's language")
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
def bm25_report():
    def tokens(text):
        text = text.lower()
        out = re.findall(r"[a-z0-9_]+", text)
        for run in re.findall(r"[\u4e00-\u9fff]+", text):
            out += [run[i:i + 2] for i in range(len(run) - 1)] or [run]
        return out
    ids = list(docs)
    tf = [collections.Counter(tokens(docs[i]["title"] + " " + docs[i]["text"])) for i in ids]
    lengths = [sum(c.values()) for c in tf]
    avg = sum(lengths) / len(lengths)
    df = collections.Counter(w for c in tf for w in c)
    n = len(ids)
    idf = {w: math.log(1 + (n - f + 0.5) / (f + 0.5)) for w, f in df.items()}
    per = collections.defaultdict(lambda: [0, 0.0, 0.0, 0.0, 0])
    for q in queries.values():
        words = set(tokens(q["query"]))
        scores = []
        for j, c in enumerate(tf):
            s = 0.0
            for w in words:
                f = c.get(w)
                if f:
                    s += idf[w] * f * 2.2 / (f + 1.2 * (0.25 + 0.75 * lengths[j] / avg))
            scores.append(s)
        ranking = [ids[j] for j in sorted(range(n), key=lambda j: -scores[j])]
        rel = set(q["relevant"])
        first = next(k for k, d in enumerate(ranking, 1) if d in rel)
        top = ranking[:10]
        dcg = sum(1 / math.log2(k + 1) for k, d in enumerate(top, 1) if d in rel)
        ideal = sum(1 / math.log2(k + 1) for k in range(1, min(len(rel), 10) + 1))
        neg_first = any(ranking.index(h) < first - 1 for h in q["hard_negatives"])
        for key in (q["lang"], "all"):
            m = per[key]
            m[0] += 1
            m[1] += 1 / first
            m[2] += len(rel & set(top)) / len(rel)
            m[3] += dcg / ideal
            m[4] += neg_first
    for key in ("en", "zh", "all"):
        c, mrr, rec, ndcg, neg = per[key]
        print(f"bm25 {key:3}: MRR {mrr / c:.3f}  recall@10 {rec / c:.3f}  nDCG@10 {ndcg / c:.3f}  "
              f"a hard negative above every relevant document in {neg} of {c} queries")

if bm25 and not problems:
    bm25_report()
for p in problems:
    print("FAIL", p)
print("ok" if not problems else f"{len(problems)} problem(s)")
sys.exit(1 if problems else 0)
PY

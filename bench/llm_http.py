"""Streams chat completions from an OpenAI-compatible server and reports, as one JSON line:
time to first token for a ~200-token prompt (median of 3), decode tokens/s at batch 1, and total
tokens/s with 8 concurrent streams. Standard library only.

    python3 bench/llm_http.py NAME BASE_URL API_KEY MODEL

API_KEY `signup` signs a new user up on maas and uses a platform API key of theirs.

Every prompt starts with its own line, so no server can reuse a cached prefix; temperature 0,
128 new tokens; tokens are the server's own usage count (its last chunk).
"""

import json
import statistics
import sys
import threading
import time
import urllib.request

NAME, BASE, KEY, MODEL = sys.argv[1:5]
MAX_TOKENS = 128
BODY = (
    "You are reviewing a long technical design document about a distributed storage system. "
    "It describes replication across three data centres, a write-ahead log, snapshots taken "
    "every hour, a compaction process that merges small files, and a metadata service that "
    "tracks which node holds which shard. Clients talk to a gateway that routes each request "
    "to the right shard and retries on failure with exponential backoff. The document also "
    "covers monitoring: latency histograms, error counters, and alerts when a replica falls "
    "behind. Finally it lists open questions about cross-region consistency, the cost of "
    "keeping three full copies, and how to roll out schema changes without downtime. "
    "Write a detailed review of this design, section by section, with concrete suggestions."
)
counter = iter(range(10**6))


def stream(tag):
    """One streamed chat: (seconds to the first token, seconds to the last, completion tokens)."""
    prompt = f"Request {tag}-{next(counter)} at {time.time_ns()}.\n{BODY}"
    body = json.dumps(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": MAX_TOKENS,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ).encode()
    req = urllib.request.Request(
        BASE + "/v1/chat/completions",
        data=body,
        headers={"content-type": "application/json", "authorization": "Bearer " + KEY},
    )
    start = time.perf_counter()
    first = last = None
    chunks = 0
    usage = None
    with urllib.request.urlopen(req, timeout=600) as resp:
        for raw in resp:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    chunks += 1
    tokens = usage["completion_tokens"] if usage else chunks
    return first - start, last - start, tokens


def signup():
    """A platform API key of a freshly signed-up maas user."""

    def api(path, body, token=None):
        req = urllib.request.Request(BASE + path, json.dumps(body).encode(), {"content-type": "application/json"})
        if token:
            req.add_header("authorization", "Bearer " + token)
        return json.load(urllib.request.urlopen(req))["data"]

    name = "bench" + str(time.time_ns())
    password = "Sturdy-Passw0rd!"
    api("/api/v1/auth/register", {"username": name, "email": name + "@example.com", "password": password})
    token = api("/api/v1/auth/login", {"email": name + "@example.com", "password": password})["access_token"]
    return api("/api/v1/users/me/api-keys", {"name": "bench", "permissions": ["inference:create"]}, token)["key"]


def main():
    global KEY
    if KEY == "signup":
        KEY = signup()
    stream("warm-up")
    ttfts = [stream("ttft")[0] for _ in range(3)]
    first, last, tokens = stream("decode")
    decode = (tokens - 1) / (last - first)
    results = []

    def one(i):
        results.append(stream(f"eight-{i}"))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    total = sum(r[2] for r in results)
    print(
        json.dumps(
            {
                "server": NAME,
                "ttft_ms": round(statistics.median(ttfts) * 1000, 1),
                "decode_tok_s": round(decode, 1),
                "eight_streams_tok_s": round(total / wall, 1),
                "eight_streams_tokens": total,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()

"""Load generator for benches/serve.sh: C concurrent clients, each sending R streamed
/v1/completions requests one after another (greedy, fixed answer length with ignore_eos, which
llama-server and our server both take). Every prompt is the given text plus the client's and
round's numbers, so prompts share everything but their end. Prints one JSON line: aggregate
generated tokens/s over the wall time, p50/p99 time to first token, and the prompt positions the
server says it took from its cache (our `usage.prompt_tokens_details.cached_tokens`,
llama-server's `timings.cache_n`) over all prompt positions. Standard library only."""
import http.client
import json
import sys
import threading
import time


def one_request(host, port, prompt, max_tokens):
    conn = http.client.HTTPConnection(host, port, timeout=600)
    body = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, "stream": True,
                       "stream_options": {"include_usage": True}})
    start = time.perf_counter()
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"status {resp.status}: {resp.read()[:200]}")
    first = None
    prompt_tokens, cached = 0, 0
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        event = json.loads(line[6:])
        if event.get("choices") and event["choices"][0].get("text") and first is None:
            first = time.perf_counter() - start
        usage = event.get("usage") or {}
        if usage.get("prompt_tokens"):
            prompt_tokens = usage["prompt_tokens"]
            cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", cached)
        timings = event.get("timings") or {}
        if "cache_n" in timings:
            cached = timings["cache_n"]
            prompt_tokens = timings["cache_n"] + timings.get("prompt_n", 0)
    conn.close()
    return (first if first is not None else time.perf_counter() - start), prompt_tokens, cached


def main():
    host, port, clients, rounds, max_tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    prompt = sys.argv[6]
    ttfts = []
    positions = [0, 0]
    errors = []
    lock = threading.Lock()

    def client(i):
        for r in range(rounds):
            try:
                t, n, c = one_request(host, port, f"{prompt} ({i}.{r})", max_tokens)
                with lock:
                    ttfts.append(t)
                    positions[0] += n
                    positions[1] += c
            except Exception as e:  # noqa: BLE001 - reported below
                with lock:
                    errors.append(str(e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ttfts.sort()
    n = len(ttfts)
    q = lambda p: ttfts[min(n - 1, int(p * n))] if n else None
    print(json.dumps({"clients": clients, "requests": n, "errors": len(errors), "first_error": errors[0] if errors else None,
                      "tokens_per_s": n * max_tokens / wall, "wall_s": wall, "ttft_p50_s": q(0.5), "ttft_p99_s": q(0.99),
                      "prompt_tokens": positions[0], "cached_tokens": positions[1]}))


main()

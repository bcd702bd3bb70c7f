"""Load generator for benches/serve.sh: C concurrent clients, each sending R streamed
/v1/completions requests one after another (greedy, fixed answer length with ignore_eos, which
llama-server and our server both take). Prints one JSON line: aggregate generated tokens/s over
the wall time, and p50/p99 time to first token. Standard library only."""
import http.client
import json
import sys
import threading
import time


def one_request(host, port, prompt, max_tokens):
    conn = http.client.HTTPConnection(host, port, timeout=600)
    body = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, "stream": True})
    start = time.perf_counter()
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"status {resp.status}: {resp.read()[:200]}")
    first = None
    pieces = 0
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        event = json.loads(line[6:])
        if event.get("choices") and event["choices"][0].get("text"):
            pieces += 1
            if first is None:
                first = time.perf_counter() - start
    conn.close()
    return first if first is not None else time.perf_counter() - start


def main():
    host, port, clients, rounds, max_tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    prompt = sys.argv[6]
    ttfts = []
    errors = []
    lock = threading.Lock()

    def client(i):
        for r in range(rounds):
            try:
                t = one_request(host, port, f"{prompt} ({i}.{r})", max_tokens)
                with lock:
                    ttfts.append(t)
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
                      "tokens_per_s": n * max_tokens / wall, "wall_s": wall, "ttft_p50_s": q(0.5), "ttft_p99_s": q(0.99)}))


main()

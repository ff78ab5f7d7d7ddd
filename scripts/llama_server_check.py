"""A real llama-server behind a worker, as a GPU owner runs it (issue 14's proof).

Usage: python3 scripts/llama_server_check.py COCOON LLAMA_SERVER GGUF OPENAI_SDK_DIR [--bench]

1. llama-server serves the GGUF; `cocoon engine check` finds it fit.
2. `cocoon up --engine-url` puts it behind a worker; the official OpenAI SDK gets "Paris"
   through client -> proxy -> worker -> llama-server, streamed and not, with the usage
   llama-server itself reports for the same request.
3. An app that hangs up mid-stream stops the generation in llama-server (its /slots go idle
   long before the answer would have ended).
4. llama-server killed: the worker withdraws and requests are refused cleanly (503);
   restarted: the worker rejoins and requests succeed.
5. With --bench: completion tokens/s through the network vs llama-server directly, at
   concurrency 1 and 8 (printed as JSON; a report, not a pass/fail).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

cocoon, llama_server, gguf, sdk = sys.argv[1:5]
bench = "--bench" in sys.argv[5:]
sys.path.insert(0, sdk)
from openai import OpenAI  # noqa: E402

MODEL = "SmolLM2-135M-Instruct-Q4_1"
# Without a system message SmolLM2's own chat template (as llama-server applies it) adds a long
# default one, after which the tiny model wanders; with this one it answers.
MESSAGES = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France?"}]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def eventually(what, limit, check):
    """Polls check() until it returns a true value; fails naming what and the last value."""
    deadline = time.time() + limit
    last = None
    while time.time() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - reported below
            last = e
        time.sleep(0.1)
    raise SystemExit(f"{what}: still not so after {limit} s; last seen: {last!r}")


def http_json(url, body=None, timeout=120):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


port = free_port()
engine_url = f"http://127.0.0.1:{port}"


def start_llama_server():
    p = subprocess.Popen(
        [llama_server, "-m", gguf, "--host", "127.0.0.1", "--port", str(port), "--alias", MODEL,
         "-np", "8", "-c", "8192", "-t", str(os.cpu_count() or 2)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    eventually("llama-server answers", 120, lambda: http_json(f"{engine_url}/v1/models", timeout=2))
    return p


llama = start_llama_server()
work = tempfile.mkdtemp()
up = None
try:
    # 1. The owner's check.
    report = json.loads(subprocess.run([cocoon, "engine", "check", engine_url, "--json"],
                                       check=True, capture_output=True, text=True).stdout)
    print(f"cocoon engine check: fit={report['fit']} usage={report['usage']} "
          f"first token {report['first_token_ms']} ms, {report['tokens_per_s']} tok/s, "
          f"cached reported={report['reports_cached_tokens']}, optional={[(f['field'], f['accepted']) for f in report['optional_fields']]}")
    assert report["fit"], report

    # 2. Behind a worker.
    up = subprocess.Popen(
        [cocoon, "up", "--dir", work, "--engine-url", engine_url, "--model", "smollm2",
         "--parallel", "8", "--listen", "127.0.0.1:0", "--chain-listen", "127.0.0.1:0",
         "--proxy-worker-listen", "127.0.0.1:0", "--proxy-client-listen", "127.0.0.1:0"],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "up.log"), "w"))
    net = eventually("cocoon up writes network.json", 240,
                     lambda: json.load(open(os.path.join(work, "network.json"))))
    client = OpenAI(base_url=net["base_url"], api_key=net["api_key"])
    direct = OpenAI(base_url=f"{engine_url}/v1", api_key="none")

    r = client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=0, max_tokens=32)
    d = direct.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=0, max_tokens=32)
    text, u, du = r.choices[0].message.content, r.usage, d.usage
    print(f"through the network: {text!r} usage={u.prompt_tokens}+{u.completion_tokens}; "
          f"llama-server directly: usage={du.prompt_tokens}+{du.completion_tokens}")
    assert "Paris" in text, text
    assert (u.prompt_tokens, u.completion_tokens) == (du.prompt_tokens, du.completion_tokens), (u, du)

    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=0, max_tokens=32,
                                            stream=True, stream_options={"include_usage": True})
    parts, su = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
        if chunk.usage:
            su = chunk.usage
    print(f"streamed in {len(parts)} parts: {''.join(parts)!r} usage={su.prompt_tokens}+{su.completion_tokens}")
    assert "Paris" in "".join(parts) and len(parts) > 1, parts
    assert (su.prompt_tokens, su.completion_tokens) == (du.prompt_tokens, du.completion_tokens), (su, du)

    # 3. A hang-up stops the generation in llama-server.
    long_ask = [{"role": "user", "content": "Write a very long story about a lighthouse keeper."}]
    stream = client.chat.completions.create(model=MODEL, messages=long_ask, max_tokens=4000,
                                            temperature=0.8, stream=True)
    seen = 0
    for chunk in stream:
        seen += 1
        if seen >= 3:
            break
    busy = [s for s in http_json(f"{engine_url}/slots") if s.get("is_processing")]
    stream.close()  # the app hangs up
    hung_up = time.time()
    eventually("llama-server's slots go idle after the hang-up", 10,
               lambda: not any(s.get("is_processing") for s in http_json(f"{engine_url}/slots")))
    print(f"hang-up: {len(busy)} slot(s) busy before, all idle {time.time() - hung_up:.1f} s after")
    assert busy, "the long answer was not running in llama-server"

    # 4. llama-server dies: the worker withdraws; back: it rejoins.
    def worker_enabled():
        stats = http_json(f"http://{net['proxy_http']}/jsonstats")
        return stats["tables"]["workers"][0]["enabled"]

    llama.send_signal(signal.SIGKILL)
    llama.wait()
    eventually("the worker withdraws", 30, lambda: worker_enabled() is False)
    try:
        client.with_options(max_retries=0).chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8)
        raise SystemExit("a request succeeded with llama-server down")
    except Exception as e:  # openai.APIStatusError
        assert "503" in str(e) and "switched off" in str(e), e
    print("llama-server killed: the worker withdrew, requests get 503")
    llama = start_llama_server()
    eventually("the worker rejoins", 30, lambda: worker_enabled() is True)
    r = client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=0, max_tokens=32)
    assert "Paris" in r.choices[0].message.content
    print("llama-server restarted: the worker rejoined, requests succeed")

    # 5. Throughput through the network vs direct.
    if bench:
        def rate(c, concurrency, n):
            tokens = [0]
            lock = threading.Lock()

            def one():
                for _ in range(n):
                    # Greedy and long: both sides generate the same 64 tokens per request.
                    r = c.chat.completions.create(
                        model=MODEL, max_tokens=64, temperature=0,
                        messages=[{"role": "user", "content": "Write a long story about the sea."}])
                    with lock:
                        tokens[0] += r.usage.completion_tokens

            threads = [threading.Thread(target=one) for _ in range(concurrency)]
            t = time.time()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            return tokens[0] / (time.time() - t)

        out = {"bench": "llama-server through the network vs direct", "model": MODEL, "max_tokens": 64}
        for conc in (1, 8):
            n = 8 if conc == 1 else 4
            rate(direct, conc, 1)  # warm up
            dr, nr = rate(direct, conc, n), rate(client, conc, n)
            out[f"concurrency_{conc}"] = {"direct_tok_s": round(dr, 1), "network_tok_s": round(nr, 1),
                                          "ratio": round(nr / dr, 3)}
        print(json.dumps(out, indent=2))
    print("llama-server check passed")
finally:
    if up is not None:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=30)
        except subprocess.TimeoutExpired:
            up.kill()
    llama.kill()

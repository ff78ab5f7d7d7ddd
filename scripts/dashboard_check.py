"""Opens every role's dashboard of a running `cocoon up` in headless Chromium and checks that
the figures it shows are the ones its /jsonstats serves; saves a screenshot of each.

Usage: python3 scripts/dashboard_check.py DIR/network.json OUTDIR
"""

import json
import re
import subprocess
import sys
import urllib.request

net = json.load(open(sys.argv[1]))
out = sys.argv[2]
flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--virtual-time-budget=5000"]
pages = {"client": net["client_http"], "proxy": net["proxy_http"]}
for i, w in enumerate(net.get("worker_http") or []):
    if w:
        pages[f"worker{i}"] = w

for name, addr in pages.items():
    url = f"http://{addr}/stats"
    stats = json.load(urllib.request.urlopen(f"http://{addr}/jsonstats"))
    dom = subprocess.run(["chromium", *flags, "--dump-dom", url], capture_output=True, text=True, timeout=60).stdout
    shown = dict(re.findall(r'data-key="([a-z_]+)">([^<]*)<', dom))
    assert shown, f"{name}: the dashboard showed no figures:\n{dom[:2000]}"
    for key, value in stats["figures"].items():
        want = str(value).lower() if isinstance(value, bool) else str(value)
        assert shown.get(key) == want, f"{name}: {key} shows {shown.get(key)!r}, /jsonstats says {want!r}"
    assert "<script" in dom and "http://" not in dom.split("<script", 1)[1].split("fetch(", 1)[0], "no external resources"
    subprocess.run(["chromium", *flags, "--window-size=1200,900", f"--screenshot={out}/dashboard-{name}.png", url],
                   capture_output=True, timeout=60)
    print(f"{name}: {len(stats['figures'])} figures match /jsonstats ({url}); screenshot {out}/dashboard-{name}.png")
print("dashboard check passed")

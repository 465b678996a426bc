#!/usr/bin/python3
"""The HTTP verdict test's references: Debian's curl and python-requests (the client the
Python checksite used) check the same URLs checksite checks, with the same limits.

Reads a JSON list of cases on stdin:
  [{"name", "url", "method", "regex" (or null), "max_redirects", "timeout_s", "ca"}]
Writes one JSON object: {name: {"curl": verdict, "requests": verdict}}, where a verdict is
{"up": bool, "status": int or null, "error": str or null}. "up" is checksite's rule: an
answer, no error reading it, a status under 400, and (with a regex) a 2xx body it matches.
"""
import json
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

import requests


def judged(status, body, regex, error):
    if error is not None or status is None:
        return {"up": False, "status": status, "error": error}
    up = status < 400
    if regex is not None:
        text = body.decode("utf-8", "replace")
        up = up and 200 <= status < 300 and re.search(regex, text, re.DOTALL) is not None
    return {"up": up, "status": status, "error": None}


def with_curl(case):
    with tempfile.NamedTemporaryFile() as body:
        args = [
            "curl", "-s", "-L", "--max-redirs", str(case["max_redirects"]),
            "--compressed", "-b", "", "--noproxy", "*",
            "--max-time", str(case["timeout_s"]), "--cacert", case["ca"],
            "-o", body.name, "-w", "%{http_code}",
        ]
        if case["method"] == "HEAD":
            args.append("-I")
        elif case["method"] != "GET":
            args += ["-X", case["method"]]
        run = subprocess.run(args + [case["url"]], capture_output=True, timeout=60)
        code = run.stdout.decode().strip()
        status = int(code) if code.isdigit() and code != "000" else None
        error = None if run.returncode == 0 else f"curl exit {run.returncode}"
        return judged(status, body.read(), case["regex"], error)


def with_requests(case):
    session = requests.Session()
    session.trust_env = False
    session.max_redirects = case["max_redirects"]
    try:
        r = session.request(
            case["method"], case["url"], timeout=case["timeout_s"],
            allow_redirects=True, verify=case["ca"],
        )
        body = r.content
    except Exception as e:  # every failure is a verdict: down
        return judged(None, b"", None, type(e).__name__)
    return judged(r.status_code, body, case["regex"], None)


def main():
    cases = json.load(sys.stdin)
    with ThreadPoolExecutor(max_workers=16) as pool:
        curl = list(pool.map(with_curl, cases))
        req = list(pool.map(with_requests, cases))
    out = {c["name"]: {"curl": a, "requests": b} for c, a, b in zip(cases, curl, req)}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()

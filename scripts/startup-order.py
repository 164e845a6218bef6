#!/usr/bin/env python3
"""make startup-order: regenerate crates/mistify-agent/link/order.ld, the code layout
of the agent's binaries, profiled on the release build.

The agent is run under valgrind's callgrind twice over: its start (an existing store
with 10 guests, a readiness probe's connection, then 2 s idle), then a round of the usual requests (guest list and
reads, metrics, an async action and its job, health, Prometheus metrics). Every
function of the agent's executable that ran is written, with its hash wildcarded,
into a linker script that places those functions side by side at the start of the
code, the start-up ones first: the pages the agent touches are then a few hundred
contiguous ones instead of one or two on every 64 KiB of a 9 MB `.text`, which is what
the kernel maps in around each page fault (see "Memory" in docs/agent.md).

    scripts/startup-order.py          build (release), profile, write order.ld
    scripts/startup-order.py check    how many of order.ld's patterns name a function
                                      of target/release/mistify-agent

STARTUP_ORDER_PREBUILT=1 skips the build; STARTUP_ORDER_KEEP=1 keeps the temporary
directory (config, store, callgrind dumps). Needs valgrind.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
AGENT = os.path.join(ROOT, "target/release/mistify-agent")
RPC = os.path.join(ROOT, "target/release/examples/test-rpc-service")
ORDER = os.path.join(ROOT, "crates/mistify-agent/link/order.ld")
GUEST = "00000000-0000-4000-8000-{:012}"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port):
    """Whether a socket listens on 127.0.0.1:port, read from /proc (no connection made,
    so the profile of the start holds no request)."""
    want = "0100007F:%04X" % port
    with open("/proc/net/tcp", encoding="ascii") as f:
        return any(l.split()[1] == want and l.split()[3] == "0A" for l in f.readlines()[1:])


def wait_listening(port, proc, what, seconds=300):
    deadline = time.time() + seconds
    while not listening(port):
        if proc.poll() is not None:
            sys.exit(f"startup-order: {what} exited with {proc.returncode}")
        if time.time() > deadline:
            sys.exit(f"startup-order: {what} not listening after {seconds} s")
        time.sleep(0.2)


def request(port, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def agent_args(config, db, port):
    return [AGENT, "-a", f"127.0.0.1:{port}", "-c", config, "--db-path", db,
            "--log-level", "error"]


def requests(port):
    """The usual round: what controllers and operators ask of an agent all day."""
    for _ in range(3):
        request(port, "GET", "/guests")
        request(port, "GET", "/guests/" + GUEST.format(1))
        for kind in ("cpu", "disk", "nic"):
            request(port, "GET", f"/guests/{GUEST.format(1)}/metrics/{kind}")
        status, headers, _ = request(port, "POST", f"/guests/{GUEST.format(2)}/reboot")
        job = headers.get("X-Guest-Job-ID") if status == 202 else None
        if job:
            request(port, "GET", f"/jobs/{job}?wait=10")
        request(port, "GET", "/jobs")
        request(port, "GET", f"/guests/{GUEST.format(1)}/metadata")
        request(port, "GET", "/guests/" + GUEST.format(999))
        request(port, "GET", "/healthz")
        request(port, "GET", "/metrics")


def defined_functions():
    nm = subprocess.run(["nm", "--defined-only", AGENT], capture_output=True, text=True,
                        check=True).stdout
    return {p[2] for p in map(str.split, nm.splitlines()) if len(p) == 3 and p[1] in "tTwW"}


def functions(dump, defined):
    """Functions of the agent's executable with a cost in one callgrind dump. (Valgrind
    names the object of code outside `.text` "???": a name is taken when the
    executable defines it.)"""
    found, obj = set(), None
    with open(dump, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("ob="):
                obj = os.path.basename(line[3:].strip())
            elif line.startswith("fn=") and obj in ("mistify-agent", "???"):
                name = line[3:].strip()
                if name in defined:
                    found.add(name)
    return found


def pattern(name):
    """A symbol name made independent of the build: the legacy mangling's hash, LTO's
    `.N` suffix and v0's crate hashes and back-references become wildcards."""
    name = re.sub(r"\.\d+$", "", name)
    name = re.sub(r"17h[0-9a-f]{16}E$", "17h*E", name)
    if name.startswith("_R"):
        name = re.sub(r"Cs[0-9A-Za-z]+_", "Cs*_", name)
        name = re.sub(r"B[0-9A-Za-z]*_", "B*_", name)
    if not re.fullmatch(r"[A-Za-z0-9_.$*]+", name):
        return None
    return name


def profile():
    for tool in ("valgrind", "callgrind_control", "nm"):
        if shutil.which(tool) is None:
            sys.exit(f"startup-order: {tool} not found (apt-get install valgrind binutils)")
    if os.environ.get("STARTUP_ORDER_PREBUILT") != "1":
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "mistify-agent",
                        "--bin", "mistify-agent", "-p", "mistify-rpc", "--example",
                        "test-rpc-service"], cwd=ROOT, check=True)
    tmp = tempfile.mkdtemp(prefix="mistify-order-")
    try:
        rpc_port, port = free_port(), free_port()
        with open(os.path.join(ROOT, "tests/fixtures/wire/agent-test-rpc.json"),
                  encoding="utf-8") as f:
            config = json.load(f)
        for service in config["services"].values():
            service["port"] = rpc_port
        config_path, db = os.path.join(tmp, "agent.json"), os.path.join(tmp, "agent.redb")
        with open(config_path, "w", encoding="utf-8") as f:
            json.dump(config, f)
        rpc = subprocess.Popen([RPC, "--port", str(rpc_port), "--log-level", "error"])
        try:
            wait_listening(rpc_port, rpc, "test-rpc-service")
            # A store as the agent finds it on a hypervisor: ten guests.
            agent = subprocess.Popen(agent_args(config_path, db, port))
            wait_listening(port, agent, "mistify-agent")
            for i in range(10):
                guest = {"id": GUEST.format(i), "memory": 512, "cpu": 1,
                         "nics": [{"network": "br0", "model": "virtio"}]}
                request(port, "POST", "/guests", guest)
            time.sleep(1)
            stop(agent)
            out = os.path.join(tmp, "cg.out")
            agent = subprocess.Popen(
                ["valgrind", "--tool=callgrind", "--demangle=no", "--dump-instr=no", "--dump-line=no",
                 "--compress-strings=no", "--compress-pos=no",
                 f"--callgrind-out-file={out}"] + agent_args(config_path, db, port),
                stderr=subprocess.DEVNULL)
            try:
                wait_listening(port, agent, "mistify-agent under valgrind")
                # A readiness probe (the supervisor's, the tests'): connect, close.
                socket.create_connection(("127.0.0.1", port), timeout=60).close()
                time.sleep(2)
                subprocess.run(["callgrind_control", "-d", str(agent.pid)], check=True,
                               stdout=subprocess.DEVNULL)
                requests(port)
                subprocess.run(["callgrind_control", "-d", str(agent.pid)], check=True,
                               stdout=subprocess.DEVNULL)
            finally:
                stop(agent)
            defined = defined_functions()
            start, serve = functions(out + ".1", defined), functions(out + ".2", defined)
        finally:
            stop(rpc)
    finally:
        if not os.environ.get("STARTUP_ORDER_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)
    groups, seen = [], set()
    for names in (start, serve):
        group = sorted({p for p in map(pattern, names) if p and p not in seen})
        seen.update(group)
        groups.append(group)
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    os.makedirs(os.path.dirname(ORDER), exist_ok=True)
    with open(ORDER, "w", encoding="ascii") as f:
        f.write("/* Code layout of the agent's binaries: the functions that run at\n"
                "   start-up, then those that serve requests, side by side ahead of the\n"
                "   rest of .text. Generated by scripts/startup-order.py (make\n"
                f"   startup-order) with {rustc}: {len(groups[0])} start-up and\n"
                f"   {len(groups[1])} request patterns. Do not edit. */\n")
        f.write("SECTIONS\n{\n  .text.mistify_order :\n  {\n")
        for title, group in zip(("start-up", "requests"), groups):
            f.write(f"    /* {title} */\n")
            for p in group:
                # `#[cold]` functions are in `.text.unlikely.NAME`.
                f.write(f"    *(.text.{p} .text.{p}.* .text.unlikely.{p} .text.unlikely.{p}.*)\n")
        f.write("  }\n}\nINSERT BEFORE .text;\n")
    print(f"startup-order: {len(start)} start-up and {len(serve)} request functions ran; "
          f"{len(groups[0])} + {len(groups[1])} patterns written to "
          f"{os.path.relpath(ORDER, ROOT)}")


def glob_regex(p):
    return re.compile("".join(".*" if c == "*" else re.escape(c) for c in p) + "$")


def check():
    with open(ORDER, encoding="ascii") as f:
        pats = re.findall(r"\*\(\.text\.(\S+) ", f.read())
    names = sorted(defined_functions())
    # Every pattern is a literal prefix up to its first wildcard: index by that prefix.
    by_prefix = {}
    for n in names:
        by_prefix.setdefault(n[:12], []).append(n)
    hit = 0
    for p in pats:
        rx = glob_regex(p)
        if any(rx.match(n) for n in by_prefix.get(p[:12], []) if "*" not in p[:12]) or (
                "*" in p[:12] and any(rx.match(n) for n in names)):
            hit += 1
    print(f"startup-order: {hit} of {len(pats)} patterns of "
          f"{os.path.relpath(ORDER, ROOT)} name a function of {os.path.relpath(AGENT, ROOT)}")


if __name__ == "__main__":
    if sys.argv[1:] == ["check"]:
        check()
    elif sys.argv[1:]:
        sys.exit(__doc__)
    else:
        profile()

#!/usr/bin/env python3
"""`/healthz` latency with 500 idle or trickling connections open, and while manifest
bombs are parsed (issue 9, holes 5 and 8).

Usage: bench/idle_connections.py BINARY [BINARY...]

For each binary: starts `corral serve` on a free loopback port (SQLite in a scratch
directory, CORRAL_DEPLOY_ALLOW on it), then
1. measures 50 `/healthz` requests on fresh connections (baseline);
2. opens 500 connections (half silent, half with a request's headers cut short), measures
   50 `/healthz` again, and counts how many of the 500 the server has closed after 15 s;
3. posts two `/deploy --dry-run` of a 200 KB nested manifest and measures five `/healthz`
   (10 s timeout each) while they are parsed.
Prints median and max latency per phase. Loopback only; standard library only.
"""
import json, os, shutil, socket, statistics, subprocess, sys, tempfile, time, urllib.request

TOKEN = "bench-token"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def healthz(port, timeout=60):
    t = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
            c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                b = c.recv(4096)
                if not b:
                    break
                data += b
        ok = b"200 OK" in data
    except OSError:
        ok = False
    return (time.monotonic() - t) * 1000 if ok else None


def phase(port, n=50, pause=0.0, timeout=60):
    lat = []
    for _ in range(n):
        lat.append(healthz(port, timeout))
        time.sleep(pause)
    good = [l for l in lat if l is not None]
    if not good:
        return "no answer"
    return f"median {statistics.median(good):.2f} ms, max {max(good):.2f} ms, failed {len(lat) - len(good)}/{n}"


def closed(sock):
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def bench(binary):
    work = tempfile.mkdtemp(prefix="corral-idle.")
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "CORRAL_LOG": "error",
        "CORRAL_API_TOKEN": TOKEN,
        "CORRAL_DATABASE_URL": "sqlite://corral.db",
        "CORRAL_LISTEN": f"127.0.0.1:{port}",
        "CORRAL_DEPLOY_ALLOW": f"file://{work}/",
    }
    srv = subprocess.Popen([binary, "serve"], cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(400):
            if healthz(port, 1) is not None:
                break
            time.sleep(0.025)
        print(f"## {os.path.basename(binary)}")
        print(f"- fresh: {phase(port)}")
        conns = []
        for i in range(500):
            c = socket.create_connection(("127.0.0.1", port))
            if i % 2:
                c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a")
            conns.append(c)
        print(f"- with 500 idle/trickling connections open: {phase(port)}")
        time.sleep(15)
        print(f"- of the 500, closed by the server after 15 s: {sum(closed(c) for c in conns)}")
        for c in conns:
            c.close()
        m = os.path.join(work, "nested.yml")
        with open(m, "w") as f:
            f.write("commands:\n  pre: " + "[" * 100_000 + "]" * 100_000 + "\n")
        for _ in range(2):
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/v1/commands",
                data=json.dumps({"text": f"deploy file://{m} --dry-run"}).encode(),
                headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            )
            t = time.monotonic()
            try:
                urllib.request.urlopen(req, timeout=120).read()
                ack = f"{(time.monotonic() - t) * 1000:.0f} ms"
            except Exception as e:
                ack = f"failed ({e})"
            print(f"- /deploy --dry-run of the 200 KB nested manifest acknowledged in {ack}")
        print(f"- /healthz while both are parsed (10 s timeout each): {phase(port, 5, 0.1, 10)}")
    finally:
        srv.kill()
        srv.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for b in sys.argv[1:]:
        bench(b)

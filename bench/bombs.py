#!/usr/bin/env python3
"""Archive and manifest bombs against `corral agent` (issue 9, holes 5 and 6).

Usage: bench/bombs.py BINARY [BINARY...]   (e.g. a build of main, then this branch)

For each binary and each bomb, runs `corral agent` with the manifest URL on stdin, in a
scratch directory (TMPDIR there: rsync's staging), and prints: exit code, wall time, peak
RSS of the agent (os.wait4), the largest the staging directory grew (sampled every 5 ms;
allocated bytes and apparent bytes), and the first line of the error. Every archive comes
with a wrong checksum: what it costs is paid before the checksum is known. Python's
standard library only. Each run is killed after --kill seconds (default 120).
"""
import gzip, io, os, shutil, signal, subprocess, sys, tarfile, tempfile, time

KILL = 120
if "--kill" in sys.argv:
    i = sys.argv.index("--kill")
    KILL = float(sys.argv[i + 1])
    del sys.argv[i : i + 2]


def header(name, kind, size, gnu_sparse=None):
    """A raw GNU tar header block."""
    h = bytearray(512)
    h[0 : len(name)] = name.encode()
    h[100:108] = b"0000644\0"
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    if size < 8**11:
        h[124:136] = (b"%011o" % size) + b"\0"
    else:
        h[124:136] = b"\x80" + size.to_bytes(11, "big")
    h[136:148] = b"00000000000\0"
    h[156] = ord(kind)
    h[257:265] = b"ustar  \0"
    if gnu_sparse:
        offset, numbytes, realsize = gnu_sparse
        h[386:398] = b"\x80" + offset.to_bytes(11, "big")
        h[398:410] = b"\x80" + numbytes.to_bytes(11, "big")
        h[483:495] = b"\x80" + realsize.to_bytes(11, "big")
    h[148:156] = b" " * 8
    h[148:156] = (b"%06o" % sum(h)) + b"\0 "
    return bytes(h)


def gz(data):
    return gzip.compress(data, 9)


def bombs(d):
    mib_zero = gz(b"\0" * (1 << 20))
    mib_a = gz(b"a" * (1 << 20))
    out = {}
    out["gzip bomb (1 GiB of zeros, ~1 MB)"] = gz(header("zeros", "0", 1 << 30)) + mib_zero * 1024
    out["PAX header of 1 GiB (~1 MB)"] = gz(header("pax", "x", 1 << 30)) + mib_a * 1024
    out["sparse header declaring 10 GiB"] = (
        header("sparse", "S", 512, ((10 << 30) - 512, 512, 10 << 30)) + b"x" * 512 + b"\0" * 1024
    )
    files = {}
    for name, data in out.items():
        p = os.path.join(d, name.split()[0] + ".bin")
        with open(p, "wb") as f:
            f.write(data)
        files[name] = (p, len(data))
    return files


def manifests(d):
    nested = "commands:\n  pre: " + "[" * 100_000 + "]" * 100_000 + "\n"
    alias = 'x: &x "' + "A" * 60_000 + '"\nchecksum: [' + ",".join(["*x"] * 16_000) + "]\n"
    return {
        "manifest: 200 KB of flow nesting": nested,
        "manifest: 124 KB of aliases (~1 GB expanded)": alias,
    }


def tree_bytes(path):
    alloc = apparent = 0
    for root, dirs, files in os.walk(path):
        for f in files + dirs:
            try:
                st = os.lstat(os.path.join(root, f))
            except OSError:
                continue
            alloc += st.st_blocks * 512
            apparent += st.st_size
    return alloc, apparent


def run(binary, work, manifest_text):
    scratch = os.path.join(work, "scratch")
    shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(os.path.join(scratch, "tmp"))
    m = os.path.join(work, "manifest.yml")
    with open(m, "w") as f:
        f.write(manifest_text)
    env = dict(os.environ, TMPDIR=os.path.join(scratch, "tmp"), CORRAL_AGENT_STATE=os.path.join(scratch, "state"))
    for k in ("CONSUL_INDEX", "SERF_USER_EVENT", "CORRAL_REPORT_URL"):
        env.pop(k, None)
    err = open(os.path.join(work, "stderr"), "w+")
    started = time.monotonic()
    p = subprocess.Popen([binary, "agent"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=scratch)
    p.stdin.write(("file://" + m + "\n").encode())
    p.stdin.close()
    peak_alloc = peak_apparent = 0
    killed = False
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid == p.pid:
            break
        a, b = tree_bytes(os.path.join(scratch, "tmp"))
        peak_alloc, peak_apparent = max(peak_alloc, a), max(peak_apparent, b)
        if time.monotonic() - started > KILL and not killed:
            os.kill(p.pid, signal.SIGKILL)
            killed = True
        time.sleep(0.005)
    p.returncode = 0  # reaped by wait4
    elapsed = time.monotonic() - started
    err.seek(0)
    lines = [l for l in err.read().splitlines() if "failed" in l or "refused" in l or "unreadable" in l]
    why = (lines[0][20:160] if lines else "") if not killed else f"killed after {KILL:.0f}s"
    code = os.waitstatus_to_exitcode(status)
    return code, elapsed, ru.ru_maxrss, peak_alloc, peak_apparent, why


def main():
    binaries = sys.argv[1:]
    if not binaries:
        sys.exit(__doc__)
    work = tempfile.mkdtemp(prefix="corral-bombs.")
    try:
        cases = []
        for name, (path, size) in bombs(work).items():
            dest = os.path.join(work, "dest")
            text = f"src: file://{path}\nchecksum: {'0' * 64}\ndest: {dest}\n"
            cases.append((f"{name}, {size / 1e6:.2f} MB", text))
        for name, text in manifests(work).items():
            cases.append((f"{name}, {len(text) / 1e3:.0f} KB", text))
        print("| bomb | binary | exit | wall s | peak RSS MiB | staging peak MiB (allocated / apparent) | error |")
        print("|---|---|---|---|---|---|---|")
        for name, text in cases:
            for b in binaries:
                code, t, rss, alloc, apparent, why = run(b, work, text)
                print(f"| {name} | {os.path.basename(b)} | {code} | {t:.2f} | {rss / 1024:.1f} | "
                      f"{alloc / 2**20:.1f} / {apparent / 2**20:.1f} | {why.replace('|', '/')} |", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

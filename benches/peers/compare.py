#!/usr/bin/env python3
"""Routing throughput, latency and memory of augmentos-edge against its peers, in one run.

Builds augmentos-edge, edge-load and the peers of benches/peers/ in release, runs edge-load
against each with the same parameters (server pinned to one core and the load generator to
another when there are two), prints the ratios and regenerates BENCHMARKS.md with a
latency-versus-load chart (benches/peers/latency-vs-load.svg, written here as SVG text).

    python3 benches/peers/compare.py            # the full run, a few minutes
    python3 benches/peers/compare.py --quick    # fewer points, shorter runs (~1 minute)

Options: --no-pin, --no-build, --servers edge,tokio,node,raw, --out FILE, --svg FILE.
Only the Python standard library is used. Everything listens on 127.0.0.1.
"""

import argparse
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEERS = os.path.join(ROOT, "benches", "peers")
TOKIO = os.path.join(PEERS, "rust-tokio")
NODE = os.path.join(PEERS, "node-ws")
EDGE_LOAD = os.path.join(ROOT, "target", "release", "edge-load")
NOTES_MARK = "<!-- Everything below this line is kept by benches/peers/compare.py. -->"

SERVERS = {
    # name: (label, how edge-load reaches it)
    "edge": ("augmentos-edge", None),
    "tokio": ("tokio-tungstenite", "--peer"),
    "node": ("Node ws", "--peer"),
    "raw": ("raw TCP forwarder", "--raw"),
}
# display_event/s sent by the first app of each session in the offered-load runs.
DISPLAY_RATE = 20
COLORS = {"edge": "#d62728", "tokio": "#1f77b4", "node": "#2ca02c", "raw": "#7f7f7f"}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def sh(cmd, cwd=ROOT):
    log("$ " + " ".join(cmd))
    subprocess.run(cmd, cwd=cwd, check=True)


def build(servers):
    sh(["cargo", "build", "--release", "--bin", "augmentos-edge", "--bin", "edge-load"])
    if {"tokio", "raw"} & set(servers):
        sh(["cargo", "build", "--release", "--locked"], cwd=TOKIO)
    if "node" in servers and not os.path.isdir(os.path.join(NODE, "node_modules")):
        sh(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, limit=20.0):
    end = time.time() + limit
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def peer_command(name, port):
    if name == "tokio":
        return [os.path.join(TOKIO, "target", "release", "tokio-relay"), str(port)]
    if name == "raw":
        return [os.path.join(TOKIO, "target", "release", "raw-forward"), str(port)]
    if name == "node":
        return ["node", os.path.join(NODE, "relay.mjs"), str(port)]
    raise ValueError(name)


def run_group(args, timeout):
    """Run `args` in a process group of its own; on time-out the whole group is killed (the
    server edge-load started goes with it)."""
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, 9)
        p.communicate()
        raise
    return subprocess.CompletedProcess(args, p.returncode, out, err)


class Runner:
    def __init__(self, pin):
        self.pin = pin  # (server cpu, generator cpu) or None

    def route(self, name, sessions, apps, seconds, rate=None, display_rate=None, extra=()):
        """One edge-load route run; its JSON report, or {"error": …}."""
        fd, out = tempfile.mkstemp(suffix=".json", prefix="edge-compare-")
        os.close(fd)
        # Flat out, at most about 16 k messages in flight in all (a window per glasses).
        window = max(64, 16384 // sessions)
        args = [EDGE_LOAD, "route", "--sessions", str(sessions), "--apps", str(apps),
                "--seconds", str(seconds), "--window", str(window), "--json", out]
        args += list(extra)
        if rate:
            args += ["--rate", f"{rate:.3f}"]
        if display_rate and name != "raw":
            args += ["--display-rate", str(display_rate)]
        if self.pin:
            args += ["--pin-load", self.pin[1]]
        proc = None
        try:
            if SERVERS[name][1] is None:
                if self.pin:
                    args += ["--pin-server", self.pin[0]]
            else:
                port = free_port()
                cmd = peer_command(name, port)
                if self.pin:
                    cmd = ["taskset", "-c", self.pin[0]] + cmd
                proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                wait_port(port, proc)
                args += [SERVERS[name][1], str(port), "--server-pid", str(proc.pid)]
            what = f"{SERVERS[name][0]}{''.join(' ' + x for x in extra)}: {sessions} sessions × {apps} apps, " + (
                f"{rate * sessions * apps:.0f} deliveries/s offered" if rate else "flat out")
            log(f"--- {what}")
            r = run_group(args, seconds + 180)
            summary = [l for l in r.stdout.splitlines() if l.strip()]
            for line in summary[1:8]:
                log(line)
            if r.returncode != 0 or not os.path.getsize(out):
                tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
                log(f"    failed: {tail}")
                return {"error": tail}
            with open(out) as f:
                return json.load(f)
        except (RuntimeError, subprocess.TimeoutExpired, OSError, json.JSONDecodeError) as e:
            log(f"    failed: {e}")
            return {"error": str(e)}
        finally:
            if proc:
                proc.kill()
                proc.wait()
            os.unlink(out)

    def idle(self, name, conns, sessions):
        """Bytes of server RSS per idle connection (or glasses session)."""
        port = free_port()
        args = [EDGE_LOAD, "idle", "--conns", str(conns), "--port", str(port)]
        if name == "edge":
            if sessions:
                args.append("--sessions")
        else:
            args += ["--url", "/app-ws", "--server"] + peer_command(name, port)
        try:
            r = run_group(args, 300)
        except subprocess.TimeoutExpired:
            return None
        m = re.search(r": (\d+) in .*base RSS (\d+) KiB.* ([\d.]+) bytes each", r.stdout)
        if not m:
            return None
        return {"conns": int(m.group(1)), "baseKiB": int(m.group(2)), "bytes": float(m.group(3))}


def nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in (1 << 20, 262144, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
            return want
        except (ValueError, OSError):
            continue
    return soft


def machine():
    info = {}
    try:
        out = subprocess.run(["lscpu"], stdout=subprocess.PIPE, text=True).stdout
        for line in out.splitlines():
            k, _, v = line.partition(":")
            info[k.strip()] = v.strip()
    except OSError:
        pass
    model = info.get("Model name", "unknown CPU")
    cpus = info.get("CPU(s)", str(os.cpu_count()))
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{model}, {cpus} CPUs, {mem:.0f} GiB, Linux {os.uname().release}"


# ---- report -------------------------------------------------------------------------------

def fmt_rate(v):
    if v >= 1e6:
        return f"{v / 1e6:.2f} M"
    if v >= 1e3:
        return f"{v / 1e3:.1f} k"
    return f"{v:.0f}"


def fmt_us(v):
    if v >= 1e6:
        return f"{v / 1e6:g} s"
    if v >= 1e3:
        return f"{v / 1e3:g} ms"
    return f"{v:g} µs"


def row(name, r, base):
    label = SERVERS[name][0]
    if "error" in r:
        return f"| {label} | failed: {r['error'][:80]} | | | | | | |"
    lat = r["latencyUs"]
    cpu = r["serverCpuUsPerDelivered"]
    ratio = ""
    if base and "error" not in base and name != "edge" and base["serverCpuUsPerDelivered"] > 0:
        ratio = f"{cpu / base['serverCpuUsPerDelivered']:.1f}×"
    lost = r["lost"] + r["gaps"]
    return (f"| {label} | {fmt_rate(r['deliveredPerSecond'])} | {lost} | {lat['p50']} | "
            f"{lat['p99']} | {cpu:.3f} | {ratio} | {r['serverRssKiB']['peak'] / 1024:.1f} |")


HEAD = ("| server | delivered msgs/s | lost | p50 µs | p99 µs | server CPU µs/msg | "
        "CPU/msg vs ours | peak RSS MiB |\n|---|---|---|---|---|---|---|---|")


def table(title, results, order):
    lines = [title, "", HEAD]
    for name in order:
        if name in results:
            lines.append(row(name, results[name], results.get("edge")))
    return "\n".join(lines) + "\n"


def svg_chart(series, path):
    """p99 latency against offered deliveries/s, log-log, one line per server."""
    W, H, L, R, T, B = 720, 420, 70, 170, 30, 50
    pts = [(x, y) for s in series.values() for x, y in s if y > 0]
    if not pts:
        return
    import math
    x0 = 10 ** math.floor(math.log10(min(x for x, _ in pts)))
    x1 = 10 ** math.ceil(math.log10(max(x for x, _ in pts)))
    y0 = 10 ** math.floor(math.log10(min(min(y for _, y in pts), 150)))
    y1 = 10 ** math.ceil(math.log10(max(y for _, y in pts)))

    def px(x):
        return L + (math.log10(x) - math.log10(x0)) / (math.log10(x1) - math.log10(x0)) * (W - L - R)

    def py(y):
        return H - B - (math.log10(y) - math.log10(y0)) / (math.log10(y1) - math.log10(y0)) * (H - T - B)

    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
         f'font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{L}" y="18" font-size="14">p99 latency glasses → app against offered '
         f'load (log-log)</text>']
    d = x0
    while d <= x1:
        o.append(f'<line x1="{px(d):.1f}" y1="{T}" x2="{px(d):.1f}" y2="{H - B}" stroke="#ddd"/>')
        o.append(f'<text x="{px(d):.1f}" y="{H - B + 16}" text-anchor="middle">'
                 f'{fmt_rate(d).replace(".0 ", " ").replace(".00 ", " ")}</text>')
        d *= 10
    d = y0
    while d <= y1:
        o.append(f'<line x1="{L}" y1="{py(d):.1f}" x2="{W - R}" y2="{py(d):.1f}" stroke="#ddd"/>')
        o.append(f'<text x="{L - 6}" y="{py(d) + 4:.1f}" text-anchor="end">{fmt_us(d)}</text>')
        d *= 10
    o.append(f'<line x1="{L}" y1="{py(150):.1f}" x2="{W - R}" y2="{py(150):.1f}" '
             f'stroke="#999" stroke-dasharray="4 3"/>')
    o.append(f'<text x="{W - R - 4}" y="{py(150) - 4:.1f}" text-anchor="end" fill="#666">'
             f'bar: 150 µs at 40 k/s</text>')
    o.append(f'<text x="{(L + W - R) / 2}" y="{H - 12}" text-anchor="middle">'
             f'offered deliveries/s</text>')
    for i, (name, s) in enumerate(series.items()):
        s = [(x, y) for x, y in s if y > 0]
        c = COLORS.get(name, "#000")
        if s:
            d = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in s)
            o.append(f'<polyline points="{d}" fill="none" stroke="{c}" stroke-width="2"/>')
            for x, y in s:
                o.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{c}"/>')
        ly = T + 20 + i * 20
        o.append(f'<line x1="{W - R + 15}" y1="{ly}" x2="{W - R + 40}" y2="{ly}" stroke="{c}" '
                 f'stroke-width="2"/>')
        o.append(f'<text x="{W - R + 46}" y="{ly + 4}">{SERVERS[name][0]}</text>')
    o.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(o) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer points, shorter runs")
    ap.add_argument("--no-pin", action="store_true", help="do not pin server and generator")
    ap.add_argument("--no-build", action="store_true", help="use the binaries as built")
    ap.add_argument("--servers", default="edge,tokio,node,raw")
    ap.add_argument("--out", default=os.path.join(ROOT, "BENCHMARKS.md"))
    ap.add_argument("--svg", default=os.path.join(PEERS, "latency-vs-load.svg"))
    a = ap.parse_args()
    servers = [s for s in a.servers.split(",") if s in SERVERS]
    if "node" in servers and not shutil.which("node"):
        log("node not found: the Node ws peer is left out")
        servers.remove("node")
    if not a.no_build:
        build(servers)
    limit = nofile()
    cpus = len(os.sched_getaffinity(0))
    pin = None if a.no_pin or cpus < 2 or not shutil.which("taskset") else ("0", "1")
    run = Runner(pin)
    secs = 1.5 if a.quick else 3
    started = time.time()
    load_before = os.getloadavg()

    fanout = {}
    for apps in (1, 4, 16):
        fanout[apps] = {n: run.route(n, 4, apps, secs) for n in servers}

    # Ours only: the same fan-out over TLS, and transcripts through a publishing system app
    # (the peers implement neither).
    ours = {}
    if "edge" in servers:
        ours = {"tls": run.route("edge", 4, 4, secs, extra=("--tls",)),
                "transcripts": run.route("edge", 4, 4, secs, extra=("--transcripts",))}

    session_counts = [1, 100, 1000] if a.quick else [1, 100, 1000, 10000]
    sess_apps = 2
    notes = []
    sessions = {}
    for n_sess in session_counts:
        # Each process holds sessions × (apps + 1) sockets, plus a few.
        fit = (limit - 200) // (sess_apps + 1)
        count = n_sess
        if n_sess > fit:
            count = fit // 1000 * 1000
            notes.append(f"{n_sess} sessions need {n_sess * (sess_apps + 1)} descriptors per "
                         f"process; RLIMIT_NOFILE here is {limit} and cannot be raised, so "
                         f"{count} sessions were run instead")
        sessions[count] = {n: run.route(n, count, sess_apps, secs) for n in servers}

    offered = [10_000, 40_000, 200_000] if a.quick else [10_000, 40_000, 100_000, 200_000, 400_000]
    lat_sessions, lat_apps = 4, 4
    latency = {}
    for total in offered:
        rate = total / (lat_sessions * lat_apps)
        latency[total] = {n: run.route(n, lat_sessions, lat_apps, secs, rate, DISPLAY_RATE)
                          for n in servers}

    idle_conns = 1000 if a.quick else 5000
    idle = {n: run.idle(n, idle_conns, False) for n in servers if n != "raw"}
    idle_sessions = run.idle("edge", idle_conns, True) if "edge" in servers else None
    elapsed = time.time() - started

    # ---- print ratios and write the report
    order = servers
    out = []
    out.append("# Benchmarks: routing throughput, latency and memory against peers\n")
    out.append("Regenerated by `python3 benches/peers/compare.py" + (" --quick" if a.quick else "")
               + f"` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} in {elapsed:.0f} s. "
               "Do not edit above the notes mark; edit the notes below it.\n")
    others = [r["machine"]["otherProcessesCpuSeconds"] / max(r["windowSeconds"], 1e-9)
              for grp in (fanout, sessions, latency) for d in grp.values() for r in d.values()
              if "error" not in r]
    avg_others = sum(others) / len(others) * 100 if others else 0
    out.append(f"- Machine: {machine()}.")
    out.append(f"- Pinning: " + (f"server on CPU {pin[0]}, load generator on CPU {pin[1]} (taskset)."
                                 if pin else "none (fewer than 2 CPUs, no taskset, or --no-pin)."))
    out.append(f"- Load average before the run {load_before[0]:.1f}; other processes used on "
               f"average {avg_others:.0f} % of one core during the measured windows"
               + (" — **the machine was busy with other work, so absolute numbers are disturbed; "
                  "compare the ratios**." if avg_others > 10 else "."))
    out.append(f"- RLIMIT_NOFILE {limit}. Runs {secs} s each, flat out unless an offered load is "
               "given; the load generator counts every message per app by sequence number.")
    out.append("- Servers: augmentos-edge (release, started by edge-load on a scratch config, "
               "webhooks answered as SDK 2.1.29 does), and the peers of `benches/peers/` "
               "(protocol in `benches/peers/README.md`): tokio + tokio-tungstenite with batched "
               "writes and bounded queues, Node.js `ws`, and a raw TCP byte forwarder on tokio "
               "(the floor: no WebSocket, no JSON).")
    out.append("- `CPU/msg vs ours` is the peer's server CPU per delivered message divided by "
               "ours (above 1×: we use less). Under flat-out load p50/p99 are queueing delay in "
               "the socket buffers, not service latency; see the offered-load table for latency.")
    for n in notes:
        out.append(f"- {n}.")
    out.append("")
    out.append("## Fan-out (4 sessions, flat out)\n")
    for apps, res in fanout.items():
        out.append(table(f"### {apps} app{'s' if apps > 1 else ''} per session", res, order))
    if ours:
        out.append("## Ours only: TLS and transcripts (4 sessions × 4 apps, flat out)\n")
        out.append("The peers have neither a TLS listener nor publishing apps. TLS: glasses and "
                   "apps over rustls (TLS 1.3, the `ring` provider) to the server's TLS listener. "
                   "Transcripts: a publishing system app per session sends 3 interims then a "
                   "final `transcription` to the 4 apps; the row counts finals (all must arrive), "
                   "the line below it every transcript delivered and the interims the server "
                   "dropped for apps that were behind (allowed).\n")
        out.append(HEAD.replace("| server |", "| mode |", 1))
        modes = [("TCP (button_press)", fanout[4].get("edge")), ("TLS (button_press)", ours["tls"]),
                 ("transcripts, finals", ours["transcripts"])]
        for label, r in modes:
            if r is not None:
                line = row("edge", r, None)
                out.append(line.replace(f"| {SERVERS['edge'][0]} |", f"| {label} |", 1))
        t = ours["transcripts"].get("transcripts")
        if t:
            out.append("")
            out.append(f"Transcripts, all: {fmt_rate(t['transcriptsDeliveredPerSecond'])} delivered/s, "
                       f"server CPU {t['serverCpuUsPerDeliveredTranscript']:.3f} µs per delivered "
                       f"transcript; interims {t['interimsDelivered']} of {t['interimsExpected']} "
                       f"delivered ({t['interimsDropped']} dropped for apps behind), "
                       f"{t['interimsReordered']} reordered; interim p50 / p99 "
                       f"{t['interimLatencyUs']['p50']} / {t['interimLatencyUs']['p99']} µs.")
        out.append("")
    out.append(f"## Session count ({sess_apps} apps per session, flat out)\n")
    for count, res in sessions.items():
        out.append(table(f"### {count} session{'s' if count > 1 else ''} "
                         f"({count * (sess_apps + 1)} connections)", res,
                         order))
    out.append(f"## Latency against offered load ({lat_sessions} sessions × {lat_apps} apps)\n")
    out.append("![p99 latency against offered load](benches/peers/latency-vs-load.svg)\n")
    out.append(f"Glasses → app latency p50 / p99 / p99.9 in µs; with it, app `display_event` → "
               f"glasses p50 / p99 (the first app of each session sends {DISPLAY_RATE}/s; "
               f"augmentos-edge runs with its display throttle off, the raw forwarder has no "
               f"way back).\n")
    out.append("| offered deliveries/s | " + " | ".join(
        f"{SERVERS[n][0]} p50 / p99 / p99.9 µs" for n in order) + " |")
    out.append("|---|" + "---|" * len(order))
    series = {n: [] for n in order}
    for total, res in latency.items():
        cells = []
        for n in order:
            r = res.get(n, {"error": "not run"})
            if "error" in r:
                cells.append("failed")
                continue
            l = r["latencyUs"]
            lost = r["lost"] + r["gaps"]
            d = r.get("displayLatencyUs") or {}
            shown = (f"; display {d['p50']} / {d['p99']} ({d['received']} of {d['sent']})"
                     if d.get("sent") else "")
            cells.append(f"{l['p50']} / {l['p99']} / {l['p999']}"
                         + (f" ({lost} lost)" if lost else "") + shown)
            series[n].append((total, l["p99"]))
        out.append(f"| {fmt_rate(total)} | " + " | ".join(cells) + " |")
    out.append("")
    svg_chart(series, a.svg)
    out.append(f"## Idle memory ({idle_conns} connections)\n")
    out.append("| server | bytes of RSS per idle connection | base RSS KiB |\n|---|---|---|")
    for n, r in idle.items():
        if r:
            out.append(f"| {SERVERS[n][0]} (connection) | {r['bytes']:.0f} | {r['baseKiB']} |")
    if idle_sessions:
        out.append(f"| augmentos-edge (glasses session: connection + session) | "
                   f"{idle_sessions['bytes']:.0f} | {idle_sessions['baseKiB']} |")
    out.append("")
    report = "\n".join(out)

    notes_text = ""
    if os.path.exists(a.out):
        with open(a.out) as f:
            old = f.read()
        if NOTES_MARK in old:
            notes_text = old[old.index(NOTES_MARK) + len(NOTES_MARK):]
    with open(a.out, "w") as f:
        f.write(report + "\n" + NOTES_MARK + (notes_text or "\n"))
    print(report)
    log(f"wrote {a.out} and {a.svg} in {elapsed:.0f} s")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""How many sessions one process can caption in real time: N streams of real speech arrive in
20 ms frames in real time, each into its own capped backlog (the transcriber's `Backlog`, the
same cap) and its own recogniser thread (one shared model, as in the transcriber); N grows
until some audio is dropped. Pin it to one core to get sessions per core:

    taskset -c 1 python3 capacity.py --engine moonshine --seconds 30 1 2 3 4
    taskset -c 1 python3 capacity.py --engine pocketsphinx --seconds 30 2 4 6 8

Prints one JSON line per N: audio received and dropped, the most backlog, CPU seconds per
second of audio (all streams together), and the process's resident memory.
"""

import argparse
import json
import os
import threading
import time

import evaluate
from recognizer import make_recognizer
from transcriber import Backlog

FRAME = 640


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def trial(engine, n, seconds, stream, max_backlog_ms):
    recognisers = [make_recognizer(engine) for _ in range(n)]
    backlogs = [Backlog(max_backlog_ms * 32) for _ in range(n)]
    conds = [threading.Condition() for _ in range(n)]
    dropped = [0] * n
    done = threading.Event()

    def recognise(k):
        r, b, c = recognisers[k], backlogs[k], conds[k]
        while True:
            with c:
                while not b.chunks and not done.is_set():
                    c.wait()
                if not b.chunks:
                    return
                skip, pcm = b.take()
            if skip:
                r.skip(skip)
            r.feed(pcm)

    threads = [threading.Thread(target=recognise, args=(k,), daemon=True) for k in range(n)]
    for t in threads:
        t.start()
    total = seconds * 32000 // FRAME * FRAME
    cpu0, start = time.process_time(), time.monotonic()
    for i in range(0, total, FRAME):
        delay = start + i / 32000 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        j = i % (len(stream) - FRAME) // FRAME * FRAME
        for k in range(n):
            # Streams offset from each other, so that they do not speak in step.
            at = (j + k * 7 * 32000) % (len(stream) - FRAME) // FRAME * FRAME
            with conds[k]:
                dropped[k] += backlogs[k].push(stream[at:at + FRAME])
                conds[k].notify()
    done.set()
    for c in conds:
        with c:
            c.notify()
    for t in threads:
        t.join(timeout=30)
    cpu = time.process_time() - cpu0
    return {
        "engine": engine,
        "sessions": n,
        "audio_s_each": seconds,
        "dropped_s": round(sum(dropped) / 32000, 2),
        "backlog_max_s": round(max(b.max_seen for b in backlogs) / 32000, 2),
        "cpu_per_audio_s": round(cpu / seconds, 3),
        "rss_mb": round(rss_mb()),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sessions", nargs="+", type=int, help="the numbers of sessions to try")
    p.add_argument("--engine", default="moonshine", choices=["moonshine", "pocketsphinx"])
    p.add_argument("--seconds", type=int, default=30, help="audio per session (default 30)")
    p.add_argument("--max-backlog-ms", type=int, default=2000, help="as the transcriber's")
    p.add_argument("--corpus", default=os.path.join(os.path.dirname(__file__), "samples",
                                                    "librivox"))
    args = p.parse_args()
    _, pcms = evaluate.load_corpus(args.corpus)
    stream, _ = evaluate.layout(pcms)
    for n in args.sessions:
        print(json.dumps(trial(args.engine, n, args.seconds, stream, args.max_backlog_ms)),
              flush=True)


if __name__ == "__main__":
    main()

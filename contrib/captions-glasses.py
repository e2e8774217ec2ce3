#!/usr/bin/env python3
"""A glasses client for trying live captions without glasses: it speaks into the box.

Connects to the box's /glasses-ws with a glasses token, starts the captions app, waits until
the box turns the microphone on, streams audio in real time as 20 ms frames of 16 kHz 16-bit
mono PCM (a WAV file, or text spoken by `espeak-ng`), and prints every caption the glasses are
shown. Exits 0 if at least one caption arrived once the audio started, 1 if none did.

    python3 contrib/captions-glasses.py --token TOKEN --say "Welcome to the conference"
    python3 contrib/captions-glasses.py --token TOKEN --wav talk.wav

Stdlib only (it shares the transcriber's WebSocket client).
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "transcriber"))

import audio  # noqa: E402
from wsclient import WebSocket, WebSocketClosed  # noqa: E402

FRAME = 640  # 20 ms


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8002)
    p.add_argument("--token", required=True, help="a glasses token (augmentos-edge token --user …)")
    p.add_argument("--app", default="com.example.captions", help="the captions app's package")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--say", help="text for espeak-ng to speak")
    src.add_argument("--wav", help="a 16-bit PCM WAV file (any rate; resampled to 16 kHz)")
    p.add_argument("--linger", type=float, default=3.0,
                   help="seconds to keep listening after the audio (default 3)")
    args = p.parse_args()

    if args.say:
        pcm = audio.speak(args.say)
    else:
        with open(args.wav, "rb") as f:
            rate, samples = audio.read_wav(f.read())
        pcm = audio.pcm_bytes(audio.resample(samples, rate))
    pcm = audio.silence(500) + pcm + audio.silence(1500)

    ws = WebSocket((args.host, args.port), "/glasses-ws",
                   headers={"Authorization": f"Bearer {args.token}"})
    ws.send_text(json.dumps({"type": "connection_init"}))
    ws.send_text(json.dumps({"type": "start_app", "packageName": args.app}))
    captions = []  # shown since the audio started
    streaming = False

    def read_for(seconds, until_mic=False):
        """Reads messages for up to `seconds`; True once the microphone is on (if asked)."""
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return False
            ws.sock.settimeout(left)
            try:
                op, payload = ws.recv()
            except TimeoutError:
                return False
            if op != 0x1:
                continue
            msg = json.loads(payload)
            kind = msg.get("type")
            if kind == "display_event":
                text = (msg.get("layout") or {}).get("text")
                if text:
                    if streaming:
                        captions.append(text)
                    print(f"caption: {text!r}", flush=True)
            elif kind == "microphone_state_change":
                on = msg.get("isMicrophoneEnabled") is True
                print(f"microphone {'on' if on else 'off'}", flush=True)
                if on and until_mic:
                    return True
            elif kind == "app_stopped" or kind == "connection_error":
                print(f"box: {payload.decode(errors='replace')}", flush=True)

    try:
        if not read_for(20, until_mic=True):
            print("the microphone was not switched on: is the captions app running?", flush=True)
            return 1
        read_for(0.5)  # the app's subscription settles
        print(f"streaming {len(pcm) / 32000:.1f} s of audio", flush=True)
        start, streaming = time.monotonic(), True
        for i in range(0, len(pcm), FRAME):
            due = start + i / 32000
            read_for(max(0.0, due - time.monotonic()))
            ws.send_binary(pcm[i:i + FRAME])
        read_for(args.linger)
    except (WebSocketClosed, OSError) as e:
        print(f"connection lost: {e}", flush=True)
        return 1
    finally:
        ws.close()
    print(f"{len(captions)} caption(s)", flush=True)
    return 0 if captions else 1


if __name__ == "__main__":
    sys.exit(main())

"""Audio helpers shared by the transcriber's tools and tests (stdlib only).

16 kHz 16-bit little-endian mono PCM is the one format: `read_wav` reads a 16-bit PCM WAV file
(mono, or the first channel), `resample` brings it to 16 kHz, `speak` asks `espeak-ng` for a
sentence at 16 kHz, `words` and `score` compare a transcript with what was said.
"""

import array
import subprocess
import sys

SAMPLE_RATE = 16000


def read_wav(data):
    """A 16-bit PCM WAV (bytes) -> (sample rate, array('h') of the first channel)."""
    if len(data) < 12 or data[0:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a WAV file")
    i, rate, channels = 12, None, 1
    while i + 8 <= len(data):
        chunk, size = data[i:i + 4], int.from_bytes(data[i + 4:i + 8], "little")
        body = data[i + 8:i + 8 + size]
        if chunk == b"fmt ":
            fmt, channels = int.from_bytes(body[0:2], "little"), int.from_bytes(body[2:4], "little")
            rate, bits = int.from_bytes(body[4:8], "little"), int.from_bytes(body[14:16], "little")
            if fmt != 1 or bits != 16:
                raise ValueError("only 16-bit PCM WAV is supported")
        elif chunk == b"data":
            if rate is None:
                raise ValueError("WAV data before its format")
            # espeak-ng writing to a pipe leaves the size unset: the data runs to the end.
            body = data[i + 8:] if size in (0, 0xFFFFFFFF) or size > len(data) else body
            samples = array.array("h")
            samples.frombytes(body[: len(body) // 2 * 2])
            if sys.byteorder == "big":
                samples.byteswap()
            return rate, samples[::channels]
        i += 8 + size + (size & 1)
    raise ValueError("no data chunk in the WAV")


def resample(x, src, dst=SAMPLE_RATE):
    """Linear interpolation after a 3-tap low-pass; good enough for speech."""
    if src == dst or not x:
        return array.array("h", x)
    n = len(x)
    f = [0.25 * x[max(i - 1, 0)] + 0.5 * x[i] + 0.25 * x[min(i + 1, n - 1)] for i in range(n)]
    out = array.array("h")
    step = src / dst
    for j in range(n * dst // src):
        p = j * step
        i = int(p)
        t = p - i
        b = f[i + 1] if i + 1 < n else f[i]
        out.append(max(-32768, min(32767, round(f[i] * (1 - t) + b * t))))
    return out


def pcm_bytes(samples):
    s = array.array("h", samples)
    if sys.byteorder == "big":
        s.byteswap()
    return s.tobytes()


def speak(text, voice="en-us"):
    """`espeak-ng` speaking `text`, as 16 kHz PCM bytes."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "--stdout", text], check=True,
                         capture_output=True).stdout
    rate, samples = read_wav(wav)
    return pcm_bytes(resample(samples, rate))


def silence(ms):
    return bytes(SAMPLE_RATE * 2 * ms // 1000)


# Spoken forms of the abbreviations recognisers write (references spell them out).
SPOKEN = {"mr": "mister", "mrs": "missus", "dr": "doctor", "st": "saint"}


def words(text):
    """The words of `text`, normalised for scoring: lower case, punctuation dropped, hyphenated
    words split ("cold-hearted" is "cold hearted"), abbreviations spoken ("Mr." is "mister")."""
    out = []
    for w in text.replace("-", " ").split():
        w = "".join(c for c in w if c.isalnum() or c == "'").strip("'").lower()
        if w:
            out.append(SPOKEN.get(w, w))
    return out


def edit_distance(a, b):
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a):
        cur = [i + 1]
        for j, y in enumerate(b):
            cur.append(min(prev[j] + (x != y), prev[j + 1] + 1, cur[j] + 1))
        prev = cur
    return prev[-1]


def score(said, heard):
    """(words said that were heard, counted with multiplicity; word edit distance; words said)."""
    said, heard = words(said), words(heard)
    pool = {}
    for w in heard:
        pool[w] = pool.get(w, 0) + 1
    hit = 0
    for w in said:
        if pool.get(w, 0) > 0:
            pool[w] -= 1
            hit += 1
    return hit, edit_distance(said, heard), len(said)

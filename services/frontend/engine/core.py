"""FrontendEngine: segmentation → normalization → G2P, whole-text and incremental."""
from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
import time

from shared.errors import InvalidArgument
from shared.limits import LANGUAGES, MAX_TEXT_CHARS

from . import markup
from .dictionary import ReplaceDictionary, file_stamp, load_dictionary, parse_dictionary
from .english import EnglishG2P
from .g2p import G2P, jieba_tokenizer, language_spans, sync_jieba_words
from .merge import Merger, MergePolicy
from .normalize import normalize
from .normalize import warmup as normalize_warmup
from .segmenter import Schedule, Splitter
from .sourcemap import align, compose
from .textutil import clean, is_cjk, is_latin_letter, is_speakable
from .types import Segment, SourceStretch
from .zh_rules import latin_is_zh_context

log = logging.getLogger("frontend.engine")

# a segment without Chinese characters in a request that has some is read in Chinese up to this many Latin words
ZH_REQUEST_LATIN_WORDS = 2


class FrontendEngine:
    def __init__(self, replace_dict_path: str | None = None, max_segment_chars: int = 60,
                 dict_check_interval_s: float = 1.0, max_text_chars: int = MAX_TEXT_CHARS):
        self.replace_dict_path = replace_dict_path or None
        self.max_segment_chars = max_segment_chars
        self.dict_check_interval_s = dict_check_interval_s
        self.max_text_chars = max_text_chars
        self.g2p = G2P(EnglishG2P())
        self._dict_lock = threading.Lock()
        self.dictionary = ReplaceDictionary()
        self._stamp = None
        self._last_check = 0.0
        self._shared_text: str | None = None    # set when the dictionary comes from the shared store, not the file
        if self.replace_dict_path:
            self.reload_dictionary()

    # -- dictionary --------------------------------------------------------------------------------------------
    def reload_dictionary(self) -> tuple[int, list[tuple[int, str]]]:
        with self._dict_lock:
            stamp = file_stamp(self.replace_dict_path)
            d = load_dictionary(self.replace_dict_path)
            previous = getattr(self, "dictionary", None)
            if d.errors and d.errors[0][0] == 0 and previous is not None and previous.entries:
                # the file is gone or unreadable (being replaced, a bad mount): keep serving the last good readings
                self._stamp, self._last_check = stamp, time.monotonic()
                log.warning("replace dictionary unreadable; keeping the last one loaded",
                            extra={"path": self.replace_dict_path, "error": d.errors[0][1],
                                   "entries": previous.entries})
                return previous.entries, list(d.errors)
            sync_jieba_words(d.words)
            self.dictionary, self._stamp = d, stamp
            self._last_check = time.monotonic()
        log.info("replace dictionary loaded", extra={"path": self.replace_dict_path, "entries": d.entries,
                                                      "errors": len(d.errors)})
        return d.entries, list(d.errors)

    MAX_DICTIONARY_BYTES = 2 * 1024 * 1024

    def write_dictionary(self, content: str) -> tuple[int, list[tuple[int, str]]]:
        """Validate ``content`` (JSONL), then replace the dictionary file with it atomically and load it.

        Any bad line → InvalidArgument naming the first one, and nothing is written.
        """
        if not self.replace_dict_path:
            raise InvalidArgument("content", "this frontend has no replace dictionary file (TTS_FRONTEND_REPLACE_DICT_PATH)")
        data = content.encode("utf-8")
        if len(data) > self.MAX_DICTIONARY_BYTES:
            raise InvalidArgument("content", f"{len(data)} bytes is over the limit of {self.MAX_DICTIONARY_BYTES}")
        folder = os.path.dirname(os.path.abspath(self.replace_dict_path))
        fd, tmp = tempfile.mkstemp(prefix=".replace-dict-", suffix=".jsonl", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            errors = load_dictionary(tmp).errors
            if errors:
                line, msg = errors[0]
                more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
                raise InvalidArgument("content", f"line {line}: {msg}{more}")
            os.replace(tmp, self.replace_dict_path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return self.reload_dictionary()

    def check_dictionary_text(self, content: str) -> None:
        """InvalidArgument naming the first bad line (and the size limit); nothing is changed."""
        data = content.encode("utf-8")
        if len(data) > self.MAX_DICTIONARY_BYTES:
            raise InvalidArgument("content", f"{len(data)} bytes is over the limit of {self.MAX_DICTIONARY_BYTES}")
        errors = parse_dictionary(content).errors
        if errors:
            line, msg = errors[0]
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise InvalidArgument("content", f"line {line}: {msg}{more}")

    def use_dictionary_text(self, content: str) -> tuple[int, list[tuple[int, str]]]:
        """Serve the dictionary given as text (the shared copy); from then on the file is no longer watched."""
        d = parse_dictionary(content)
        with self._dict_lock:
            sync_jieba_words(d.words)
            self.dictionary, self._shared_text = d, content
        log.info("replace dictionary loaded from the shared store", extra={"entries": d.entries,
                                                                           "errors": len(d.errors)})
        return d.entries, list(d.errors)

    def file_dictionary_text(self) -> str | None:
        """The file's content (the seed of the shared copy); None when there is no readable file."""
        if not self.replace_dict_path:
            return None
        try:
            with open(self.replace_dict_path, encoding="utf-8", errors="replace") as f:
                return f.read(self.MAX_DICTIONARY_BYTES)
        except OSError:
            return None

    def dictionary_text(self) -> str:
        if self._shared_text is not None:
            return self._shared_text
        if not self.replace_dict_path:
            return ""
        try:
            with open(self.replace_dict_path, encoding="utf-8", errors="replace") as f:
                return f.read(self.MAX_DICTIONARY_BYTES)
        except OSError:
            return ""

    def maybe_reload(self) -> None:
        if not self.replace_dict_path or self._shared_text is not None:
            return
        now = time.monotonic()
        if now - self._last_check < self.dict_check_interval_s:
            return
        self._last_check = now
        if file_stamp(self.replace_dict_path) != self._stamp:
            self.reload_dictionary()

    # -- public API --------------------------------------------------------------------------------------------
    def warmup(self) -> None:
        self.g2p.warmup()
        normalize_warmup()
        self.analyze("你好，我用iPhone 15打了110。Dr. Smith paid $3.50 on 2026-01-13.")

    def clear_result_caches(self, per_word: bool = False) -> None:
        """Forget every cached result of a text, segment or run (normalization, jieba + phrase table, polyphones), so
        that the next analyze() costs what new text costs. ``per_word``: per-word caches too (see G2P)."""
        normalize.cache_clear()
        self.g2p.clear_result_caches(per_word)

    def analyze(self, text: str, language: str = "", phoneme_mode: bool = False,
                max_segment_chars: int | None = None, decoder_rtf: float = 0.0,
                merge: MergePolicy | None = None) -> list[Segment]:
        if len(text) > self.max_text_chars:
            raise InvalidArgument("text", f"{len(text)} characters is over the limit of {self.max_text_chars}")
        s = self.stream(language, phoneme_mode, max_segment_chars, decoder_rtf, merge=merge, whole_text=True)
        return s.push(text) + s.flush()

    def stream(self, language: str = "", phoneme_mode: bool = False,
               max_segment_chars: int | None = None, decoder_rtf: float = 0.0,
               merge: MergePolicy | None = None, whole_text: bool = False) -> "TextStream":
        """``decoder_rtf``: the decoder's compute seconds per second of audio for this stream (0 = unknown); it sizes
        the segments of streamed text (see segmenter.Schedule). ``whole_text``: the whole text comes at once (unary,
        batch): its segments do not depend on the decoder's load (the same text is cut the same way, so it sounds
        the same), and with ``merge`` the first one is merged like the others. ``merge``: hand segments out merged
        (merge.py)."""
        if language not in LANGUAGES:
            raise InvalidArgument("config.language", f"{language!r} is not one of {', '.join(repr(x) for x in LANGUAGES)}")
        if max_segment_chars is not None and max_segment_chars < 0:
            raise InvalidArgument("config.max_segment_chars", "must be >= 0")
        if decoder_rtf != decoder_rtf or decoder_rtf < 0:
            raise InvalidArgument("config.decoder_rtf", "must be a number >= 0")
        max_units = max_segment_chars or self.max_segment_chars
        rtf = 0.0 if whole_text else decoder_rtf        # a whole text: the default schedule, whatever the load
        stream = TextStream(self, language, phoneme_mode, max_units, Schedule(rtf, max_units=max_units))
        if merge is not None:
            stream.merger = Merger(merge, early_first=not whole_text)
        return stream

    # -- one segment -------------------------------------------------------------------------------------------
    def context_language(self, text: str, language: str, zh_request: bool = False, left: str = "") -> str:
        """zh when the segment has Chinese characters; en for English words (unless only a few of them stand in
        a Chinese request); a piece of units, codes and numbers (25kg, CNY 1.25, 10:04am) is read in Chinese,
        except a piece without letters that goes on an English sentence of a request without Chinese
        ("... on Jan. 5th, | 2024.")."""
        if any(is_cjk(c) for c in text):
            return "zh"
        if language == "en":
            return "en"
        if any(is_latin_letter(c) for c in text):
            if latin_is_zh_context(text):
                return "zh"
            if zh_request and len(re.findall(r"[A-Za-z]+", text)) <= ZH_REQUEST_LATIN_WORDS:
                return "zh"
            return "en"
        if not zh_request and any(is_latin_letter(c) for c in _SENTENCE_END.split(left)[-1]):
            return "en"
        return "zh"

    def build_segment(self, index: int, text: str, start: int, language: str, phoneme_mode: bool,
                      zh_request: bool = False, left: str = "", right: str = "") -> Segment:
        """``left``/``right``: text around the segment known now (the previous segment's end, what is buffered after
        it), used as context only: a code keyword just before it (密码 | 是123456), polyphones at its edges."""
        self.maybe_reload()
        forced_plain: dict[int, str] = {}
        plain = text
        spans = [(start + i, start + i + 1) for i in range(len(text))]    # where each character of plain came from
        if phoneme_mode:
            plain, forced_plain, spans = markup.parse(text, start)
        heading = _MD_HEADING.match(plain)       # "## Title": a markdown heading mark is not read
        if heading:
            cut = heading.end()
            plain, spans = plain[cut:], [(spans[0][0], spans[cut][1])] + spans[cut + 1:]
            forced_plain = {p - cut: r for p, r in forced_plain.items() if p >= cut}
        lang = self.context_language(plain, language, zh_request, left)
        code_left = _SENTENCE_END.split(left)[-1][-CODE_CONTEXT_CHARS:] if lang == "zh" else ""
        # normalized piece by piece: between inline readings (each read character stays as it is), else at once
        pieces: list[tuple[int, int, str]] = []          # (start, end) in plain → its normalization
        forced: dict[int, str] = {}
        pos = 0
        for p in sorted(forced_plain):
            if p > pos:
                pieces.append((pos, p, normalize(plain[pos:p], lang, code_left if pos == 0 else "")))
            forced[sum(len(x[2]) for x in pieces)] = forced_plain[p]
            pieces.append((p, p + 1, plain[p]))
            pos = p + 1
        if pos < len(plain) or not pieces:
            pieces.append((pos, len(plain), normalize(plain[pos:], lang, code_left if pos == 0 else "")))
        normalized, source_map = "", []
        for a, b, out in pieces:
            source_map += [SourceStretch((oa, ob), (sa, sb)) for oa, ob, sa, sb in
                           compose(align(plain[a:b], out), spans[a:b], len(normalized))]
            normalized += out
        words = self.g2p.words(normalized, self.dictionary, forced,
                               context=(context_text(left, True), context_text(right, False)) if lang == "zh" else None,
                               zh=lang == "zh")
        return Segment(index=index, text=text, normalized=normalized, span=(start, start + len(text)), words=words,
                       languages=language_spans(words), source_map=source_map)


COVERBS = set("为给在对把被向与和从往跟替")   # prepositions: a cut never separates one from its object

CONTEXT_CHARS = 12     # characters of context on each side of a segment for its polyphones
CODE_CONTEXT_CHARS = 8  # characters before a segment where a code keyword (验证码, 房间号 …) still applies
_SENTENCE_END = re.compile(r"[。！？!?；;\n]")
_MD_HEADING = re.compile(r"^#{1,6}[ \t]+(?=\S)")


def context_text(text: str, left: bool) -> str:
    """The Chinese characters next to a segment within the same sentence (left: its end; right: its start)."""
    if left:
        parts = _SENTENCE_END.split(text)
        text = parts[-1][-CONTEXT_CHARS:]
        m = re.search(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff，、：]*$", text)
        return m.group() if m else ""
    text = _SENTENCE_END.split(text, maxsplit=1)[0][:CONTEXT_CHARS]
    m = re.match(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff，、：]*", text)
    return m.group() if m else ""


class TextStream:
    """Incremental segmentation for a stream of text pieces (e.g. LLM tokens)."""

    REFINE_LOOKAHEAD = 4   # characters of a CJK run past a size cut that jieba sees (the same in streamed and whole text)

    def __init__(self, engine: FrontendEngine, language: str, phoneme_mode: bool, max_segment_chars: int,
                 schedule: Schedule | None = None):
        self.engine = engine
        self.schedule = schedule or Schedule(max_units=max_segment_chars)
        self.last_audio_s = 0.0  # estimated audio of the segment emitted last
        self.language = language
        self.phoneme_mode = phoneme_mode
        self.max_segment_chars = max_segment_chars
        self.buf = ""
        self.base = 0          # absolute offset of buf[0]
        self.total = 0
        self.index = 0
        self.splitter = Splitter(max_segment_chars, phoneme_mode)
        self.zh_request = False   # Chinese characters seen in this request (or language "zh")
        self.prev_text = ""       # the last segment's text (context for the next one)
        self.merger: Merger | None = None     # set for a decoder that wants merged segments (glmtts)

    def push(self, piece: str) -> list[Segment]:
        if not isinstance(piece, str):
            raise InvalidArgument("text", "must be a string")
        self.total += len(piece)
        if self.total > self.engine.max_text_chars:
            raise InvalidArgument("text", f"{self.total} characters in this request is over the limit of "
                                          f"{self.engine.max_text_chars}")
        piece = clean(piece)
        self.buf += piece
        if not self.zh_request and (self.language == "zh" or any(is_cjk(c) for c in piece)):
            self.zh_request = True
        return self._drain(final=False)

    def flush(self) -> list[Segment]:
        return self._drain(final=True)

    def _refine(self, cut: int, final: bool) -> int | None:
        """Move a size cut that falls between two CJK characters back to a jieba word boundary. jieba sees the run
        up to REFINE_LOOKAHEAD characters past the cut, so streamed and whole text cut alike; None = wait for them."""
        buf = self.buf
        if not (0 < cut < len(buf) and is_cjk(buf[cut - 1]) and is_cjk(buf[cut])):
            return cut
        a = cut
        while a > 0 and is_cjk(buf[a - 1]):
            a -= 1
        b = cut
        stop = cut + self.REFINE_LOOKAHEAD
        while b < len(buf) and b < stop and is_cjk(buf[b]):
            b += 1
        if b == len(buf) and b < stop and not final:
            return None
        best, solid, k, after = None, None, a, None
        for w in jieba_tokenizer().lcut(buf[a:b]):
            k += len(w)
            if k <= cut:
                best = k
                if len(w) > 1 and buf[k - 1] not in COVERBS:
                    solid = k     # not after a one-character word or a preposition (为|每位: its object decides)
            elif after is None:
                after = k         # the end of the word the cut falls in
        best = solid or best
        if best and best > 0:
            return best
        # the cut falls in the run's first word ("24小|时之内": 小时 after a number): cut after that word, when the
        # window shows where it ends, rather than inside it
        return after if after is not None and (after < b or b < len(buf) and not is_cjk(buf[b])) else cut

    def _drain(self, final: bool) -> list[Segment]:
        out: list[Segment] = []
        while self.buf:
            limit = self.schedule.limit(self.index, self.last_audio_s)
            cut = self.splitter.next_cut(self.buf, final, first=self.index == 0, limit=limit)
            if cut is None:
                break
            if cut < len(self.buf) and not self.splitter.overflow:
                cut = self._refine(cut, final)
                if cut is None:
                    break
            self._emit(self.buf[:cut], out)
        if final and self.buf:
            self._emit(self.buf, out)
        if self.merger is not None:
            out.extend(self.merger.idle(final))
        return out

    def _emit(self, piece: str, out: list[Segment]) -> None:
        start = self.base
        self.buf = self.buf[len(piece):]
        self.base += len(piece)
        self.splitter.reset()
        stripped = piece.strip()
        if not stripped or not is_speakable(stripped):
            return
        lead = len(piece) - len(piece.lstrip())
        seg = self.engine.build_segment(self.index, stripped, start + lead, self.language, self.phoneme_mode,
                                        self.zh_request, left=self.prev_text, right=self.buf)
        self.prev_text = stripped
        self.index += 1
        self.last_audio_s = Schedule.audio_s(stripped)
        if self.merger is not None:
            out.extend(self.merger.add(seg, line_end=piece.rstrip(" \t").endswith("\n")))
        else:
            out.append(seg)

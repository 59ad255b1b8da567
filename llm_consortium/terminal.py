"""Text from models and providers, made harmless to print on a terminal.

Member answers, arbiter replies and provider error messages are untrusted: a
reply containing ``ESC ] 52 ; …`` writes the clipboard, ``ESC ] 0 ; …`` sets
the window title, ``ESC [ 2 J`` clears the screen, and the 8-bit C1 forms
(``U+009B`` CSI, ``U+009D`` OSC) do the same on some terminals. Everything
this plugin prints that came from a model, a provider or the database goes
through ``printable`` (text) or ``json_dumps`` (JSON), on a terminal and in a
pipe alike (``output.safe_echo`` also redacts configured keys). The final answer on stdout is the exception: ``llm`` itself
prints model output raw, and so does ``llm consortium run``.

Control characters become visible stand-ins instead of disappearing, so a
reader can still see that they were there: C0 characters and DEL become their
Unicode "control pictures" (``ESC`` → ``␛``, ``BEL`` → ``␇``), C1 characters
become ``<U+009B>``. Newlines and tabs are kept; ``\\r\\n`` becomes ``\\n``
and a lone ``\\r`` (which would let text overwrite the line) becomes ``␍``.

Text that cannot be encoded at all — lone surrogates, from undecodable bytes
on stdin or from a provider's JSON — is repaired once, where it enters a run
(``valid_unicode``), so that it can be sent, stored and printed.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Lone surrogates: from undecodable bytes (stdin read with surrogateescape)
# or from a provider's JSON ("\ud800"); no UTF-8 encoder accepts them.
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# C0 controls except TAB and LF, DEL, and the C1 block.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# What json.dumps leaves raw: DEL and the C1 block (C0 it escapes itself).
_JSON_RAW_CONTROL = re.compile(r"[\x7f-\x9f]")


def _stand_in(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    if code < 0x20:
        return chr(0x2400 + code)
    if code == 0x7F:
        return "\u2421"
    return f"<U+{code:04X}>"


def valid_unicode(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD, so that it can be
    encoded as UTF-8: stored, sent to a provider, printed. Text enters a run
    (the prompt, the history, every model reply and error) through this."""
    if not text or text.isascii():  # isascii is O(1) in CPython: most text is done here
        return text
    try:
        text.encode("utf-8")  # C speed: 40 µs for 37 KB against 230 µs for the regex
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


def printable(text: Any) -> str:
    """``text`` (any value, ``str()``-ed) with control characters made visible."""
    value = valid_unicode(text if isinstance(text, str) else str(text))
    if "\r" in value:
        value = value.replace("\r\n", "\n")
    return _CONTROL.sub(_stand_in, value)


def json_dumps(value: Any, **options: Any) -> str:
    """``json.dumps`` whose output holds no raw control character, even with
    ``ensure_ascii=False`` (DEL and C1 are written as ``\\u`` escapes: the
    decoded data is unchanged)."""
    text = json.dumps(value, **options)
    return _JSON_RAW_CONTROL.sub(lambda match: f"\\u{ord(match.group(0)):04x}", text)

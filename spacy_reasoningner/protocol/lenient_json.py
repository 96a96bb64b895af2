"""A JSON reader that repairs what small models get wrong (quotes, trailing commas, bare
keys, literals) and reads truncated objects as far as they go, within a budget."""

from __future__ import annotations

import re
from typing import Any

# How reading the answer's JSON departed from strict JSON (``ParsedCompletion.issues``).
ISSUE_REPAIRED = "invalid JSON repaired (quotes, trailing commas or literals)"
ISSUE_TRUNCATED = "truncated JSON (unclosed brackets or string)"
ISSUE_TOO_LONG = "answer JSON too long: read up to the reader's budget"
LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # unpaired \\ud800 escapes; not encodable

_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?")
_WORD = re.compile(r"[A-Za-z]+")
_BARE_KEY = re.compile(r"[A-Za-z_][\w ]*")
_SPACE = re.compile(r"[ \t\r\n]*")
_STRING = {
    quote: re.compile(rf"{quote}([^{quote}\\]*(?:\\.[^{quote}\\]*)*){quote}", re.DOTALL)
    for quote in "\"'"
}
_CONTROL = re.compile(r"[\x00-\x1f]")
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "/": "/", "\\": "\\", '"': '"'}
_LITERALS = {"true": True, "false": False, "null": None}
_REPAIRED_LITERALS = {
    "True": True,
    "False": False,
    "None": None,
    "NaN": float("nan"),
    "Infinity": float("inf"),
}
_MAX_INT_DIGITS = 4000  # int() refuses longer digit strings (Python's conversion limit)

# Reader states: what the next token may be.
_VALUE, _VALUE_OR_CLOSE, _KEY_OR_CLOSE, _COLON, _COMMA_OR_CLOSE = range(5)


class LenientJSON:
    """A forgiving JSON reader for model output: single quotes, bare keys, trailing commas,
    Python literals, raw control characters in strings, and text cut off mid-way (complete
    items are kept, the cut one dropped). Iterative, so nesting depth costs memory, not
    stack; every repair is recorded, so text that needs none reads as strict JSON."""

    def __init__(self, text: str, pos: int, tokens: int):
        self.text, self.pos, self.issues = text, pos, set()
        self.tokens_left = tokens
        self.root: Any = None

    def parse(self) -> tuple[Any, int, list[str]]:
        """(value or None, position where reading stopped, issues)."""
        try:
            value = self._read()
        except _Truncated:
            self.issues.add(ISSUE_TRUNCATED if self.tokens_left > 0 else ISSUE_TOO_LONG)
            value = self.root
        except _Invalid:
            value = None
        return value, self.pos, sorted(self.issues)

    def _read(self) -> Any:
        text, size, pos = self.text, len(self.text), self.pos
        skip_space = _SPACE.match
        stack: list[Any] = []  # open containers, innermost last
        keys: list[Any] = []  # per open container: the key awaiting its value (dicts)
        state, after_comma = _VALUE, False
        try:
            while True:
                self.tokens_left -= 1
                if self.tokens_left < 0:
                    raise _Truncated  # over budget: keep what was read, as for a cut text
                if pos < size and text[pos] in " \t\r\n":
                    pos = skip_space(text, pos).end()
                if pos >= size:
                    raise _Truncated
                char = text[pos]
                if state == _COLON:
                    if char != ":":
                        raise _Invalid
                    pos += 1
                    state = _VALUE
                    continue
                top = stack[-1] if stack else None
                if state == _COMMA_OR_CLOSE and char == ",":
                    pos += 1
                    state = _VALUE_OR_CLOSE if top.__class__ is list else _KEY_OR_CLOSE
                    after_comma = True
                    continue
                if state != _VALUE and char == ("]" if top.__class__ is list else "}"):
                    if after_comma:
                        self.issues.add(ISSUE_REPAIRED)  # trailing comma
                    pos += 1
                    stack.pop()
                    keys.pop()
                elif state == _COMMA_OR_CLOSE:
                    raise _Invalid
                elif state == _KEY_OR_CLOSE:
                    keys[-1], pos = self._string(pos) if char in "\"'" else self._bare_key(pos)
                    state, after_comma = _COLON, False
                    continue
                elif char == "{" or char == "[":
                    container: Any = {} if char == "{" else []
                    pos += 1
                    self._attach(top, keys, container)
                    stack.append(container)
                    keys.append(None)
                    state = _KEY_OR_CLOSE if char == "{" else _VALUE_OR_CLOSE
                    after_comma = False
                    continue
                else:
                    value, pos = self._string(pos) if char in "\"'" else self._scalar(pos)
                    self._attach(top, keys, value)
                after_comma = False
                if not stack:
                    return self.root
                state = _COMMA_OR_CLOSE
        finally:
            self.pos = pos

    def _attach(self, top: Any, keys: list[Any], value: Any) -> None:
        # Containers are attached when opened, so a cut one is kept with its complete items.
        if top is None:
            self.root = value
        elif top.__class__ is list:
            top.append(value)
        else:
            top[keys[-1]] = value

    def _string(self, pos: int) -> tuple[str, int]:
        text = self.text
        quote = text[pos]
        close = text.find(quote, pos + 1)
        if close >= 0 and text.find("\\", pos + 1, close) < 0:  # no escapes: the common case
            body, end = text[pos + 1 : close], close + 1
        else:
            match = _STRING[quote].match(text, pos)
            if match is None:
                raise _Truncated  # no closing quote: the text was cut inside the string
            body, end = match.group(1), match.end()
        if quote == "'" or (not body.isprintable() and _CONTROL.search(body)):
            self.issues.add(ISSUE_REPAIRED)
        if "\\" not in body:
            return body, end
        body = _ESCAPE.sub(self._unescape, body)
        if LONE_SURROGATE.search(body):  # join \\ud83d\\ude00-style pairs as json does
            body = body.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
        return body, end

    def _unescape(self, match: re.Match[str]) -> str:
        escaped = match.group(1)
        if len(escaped) == 5:  # uXXXX; surrogate pairs are joined by the caller
            return chr(int(escaped[1:], 16))
        if escaped not in _ESCAPES:
            self.issues.add(ISSUE_REPAIRED)
        return _ESCAPES.get(escaped, escaped)

    def _scalar(self, pos: int) -> tuple[Any, int]:
        number = _NUMBER.match(self.text, pos)
        if number:
            token = number.group()
            if number.group(1) or number.group(2) or len(token) > _MAX_INT_DIGITS:
                return float(token), number.end()
            return int(token), number.end()
        word = _WORD.match(self.text, pos)
        if word is None:
            raise _Invalid
        if word.group() in _LITERALS:
            return _LITERALS[word.group()], word.end()
        if word.group() in _REPAIRED_LITERALS:
            self.issues.add(ISSUE_REPAIRED)
            return _REPAIRED_LITERALS[word.group()], word.end()
        if word.end() >= len(self.text):
            raise _Truncated  # a literal cut mid-word ("tr")
        raise _Invalid

    def _bare_key(self, pos: int) -> tuple[str, int]:
        match = _BARE_KEY.match(self.text, pos)
        if not match:
            raise _Invalid
        self.issues.add(ISSUE_REPAIRED)
        return match.group().strip(), match.end()


class _Truncated(Exception):
    pass


class _Invalid(Exception):
    pass

"""Inputs of a corpus run: which files, in which format, cut into shards, read back per shard.

A shard is the unit of work, of output and of resumption: a run of ``shard_size`` documents
of one input file (a byte range of a text or JSONL file, an index range of a DocBin file).
The plan is deterministic for the same inputs and shard size, so a rerun finds the same
shards under the same ids. Reading never fails on a bad document: a line that is not UTF-8,
not JSON or has no text becomes a ``reject`` item with the reason, and is reported, not lost.
"""

from __future__ import annotations

import glob
import json
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Literal

from spacy.tokens import DocBin
from spacy.vocab import Vocab

Format = Literal["text", "jsonl", "docbin"]
FORMATS: tuple[str, ...] = ("auto", "text", "jsonl", "docbin")
SUFFIX_FORMATS: dict[str, Format] = {
    ".txt": "text",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".spacy": "docbin",
}
BOM = b"\xef\xbb\xbf"
_REJECTED_RAW_CHARS = 200  # the start of a rejected line kept in the rejects file


@dataclass(frozen=True)
class InputFile:
    path: str
    format: Format
    size: int
    mtime_ns: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Shard:
    """Documents ``[start, end)`` of one input: bytes of a text/JSONL file, docs of a DocBin.

    ``first`` is the 1-based line number of the first line (text, JSONL) or the index of the
    first Doc (DocBin); ``docs`` is the number of documents the shard holds.
    """

    id: str
    path: str
    format: Format
    start: int
    end: int
    first: int
    docs: int
    text_field: str = "text"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Shard:
        return cls(**data)


@dataclass
class Item:
    """One document of a shard, or the reason it could not be read (``error``).

    ``location`` is the line number (text, JSONL) or Doc index (DocBin) in ``Shard.path``;
    ``doc_bytes`` holds a DocBin input's Doc (``Doc.to_bytes``), annotations included.
    """

    location: int
    text: str | None = None
    fields: dict[str, Any] | None = None
    doc_bytes: bytes | None = None
    error: str | None = None
    raw: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def resolve_inputs(patterns: list[str], input_format: str = "auto") -> list[InputFile]:
    """Files named by ``patterns`` (files, folders searched recursively, or globs), sorted,
    each once. A pattern that names nothing is an error, not an empty corpus."""
    if input_format not in FORMATS:
        raise ValueError(f"input format {input_format!r} is not one of {FORMATS}")
    if not patterns:
        raise ValueError("no inputs: give files, folders or glob patterns")
    found: dict[Path, None] = {}
    for pattern in patterns:
        path = Path(pattern).expanduser()
        if path.is_dir():
            matches = [
                p
                for p in path.rglob("*")
                if p.is_file() and (input_format != "auto" or p.suffix.lower() in SUFFIX_FORMATS)
            ]
        elif path.is_file():
            matches = [path]
        else:
            matches = [Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file()]
        if not matches:
            kinds = ", ".join(SUFFIX_FORMATS)
            raise ValueError(f"input {pattern!r} names no file (folders are searched for {kinds})")
        found.update((p.resolve(), None) for p in sorted(matches))
    files = []
    for path in found:
        stat = path.stat()
        files.append(
            InputFile(str(path), _format_of(path, input_format), stat.st_size, stat.st_mtime_ns)
        )
    return files


def _format_of(path: Path, input_format: str) -> Format:
    if input_format != "auto":
        return input_format  # type: ignore[return-value]
    fmt = SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"{path}: cannot tell the format from the suffix {path.suffix!r}; name it with "
            f"--format ({', '.join(FORMATS[1:])}) or use one of {', '.join(SUFFIX_FORMATS)}"
        )
    return fmt


def plan_shards(files: list[InputFile], shard_size: int, text_field: str = "text") -> list[Shard]:
    """Cut every input into shards of ``shard_size`` documents, numbered in input order."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1 document, got {shard_size}")
    ranges = []
    for file in files:
        if file.format == "docbin":
            n = len(DocBin().from_disk(file.path))
            ranges += [
                (file, a, min(a + shard_size, n), a, min(shard_size, n - a))
                for a in range(0, n, shard_size)
            ]
        else:
            ranges += [(file, *r) for r in _line_ranges(Path(file.path), shard_size)]
    return [
        Shard(f"{i:05d}", f.path, f.format, start, end, first, docs, text_field)
        for i, (f, start, end, first, docs) in enumerate(ranges)
    ]


def _line_ranges(path: Path, shard_size: int) -> list[tuple[int, int, int, int]]:
    """``(start byte, end byte, first line, documents)`` of runs of ``shard_size`` non-blank
    lines (blank lines are not documents)."""
    ranges = []
    start, first, docs, position = 0, 1, 0, 0
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            if docs == shard_size:
                ranges.append((start, position, first, docs))
                start, first, docs = position, number, 0
            position += len(line)
            docs += not _blank(line, at_file_start=number == 1)
    if docs:
        ranges.append((start, position, first, docs))
    return ranges


def _blank(line: bytes, at_file_start: bool) -> bool:
    if at_file_start and line.startswith(BOM):
        line = line[len(BOM) :]
    return not line.strip()


def read_shard(shard: Shard) -> list[Item]:
    """The shard's documents in input order; unreadable ones as items with an ``error``."""
    if shard.format == "docbin":
        docbin = DocBin(store_user_data=True).from_disk(shard.path)
        docs = islice(docbin.get_docs(Vocab()), shard.start, shard.end)
        return [Item(location=shard.first + i, doc_bytes=d.to_bytes()) for i, d in enumerate(docs)]
    with open(shard.path, "rb") as f:
        f.seek(shard.start)
        data = f.read(shard.end - shard.start)
    items = []
    # Split on "\n" only, as the plan counted lines; a lone "\r" stays inside its line.
    for offset, line in enumerate(data.split(b"\n")):
        number = shard.first + offset
        line = line.removesuffix(b"\r")
        if _blank(line, at_file_start=shard.start == 0 and offset == 0):
            continue
        if shard.start == 0 and offset == 0 and line.startswith(BOM):
            line = line[len(BOM) :]
        items.append(_read_line(line, number, shard))
    return items


def _read_line(line: bytes, number: int, shard: Shard) -> Item:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raw = line[:_REJECTED_RAW_CHARS].decode("utf-8", errors="backslashreplace")
        return Item(number, error=f"not valid UTF-8: {e.reason} at byte {e.start}", raw=raw)
    if shard.format == "text":
        return Item(number, text=text)
    try:
        value, fields = json_document(text, shard.text_field)
    except ValueError as e:
        return _rejected(number, str(e), text)
    return Item(number, text=value, fields=fields)


class TextFieldError(ValueError):
    """A JSONL document whose object has no string in the text field."""


def json_document(line: str, text_field: str = "text") -> tuple[str, dict[str, Any]]:
    """The text and the other fields of one JSONL line; ``ValueError`` naming what is wrong
    (``TextFieldError`` when the object lacks the text field).

    The one reader of a JSONL document, for annotate's shards and the ``run`` command alike.
    """
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON: {e.msg} at column {e.colno}") from None
    except (ValueError, RecursionError) as e:  # numbers too long, nesting too deep
        raise ValueError(f"JSON that cannot be read: {type(e).__name__}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    value = obj.pop(text_field, None)
    if not isinstance(value, str):
        problem = "has no" if value is None else "has a non-string"
        raise TextFieldError(f"the object {problem} {text_field!r} field")
    return value, obj


def _rejected(number: int, reason: str, text: str) -> Item:
    return Item(number, error=reason, raw=text[:_REJECTED_RAW_CHARS])

"""Parse YAML files into plain documents that remember the line and column of every value.

The parser is built on libyaml's event stream (PyYAML's C parser) rather than on PyYAML's
recursive constructor, so that hostile input is refused with one clear finding instead of a
traceback or an exhausted machine: files over `MAX_FILE_BYTES`, nesting deeper than `MAX_DEPTH`,
alias expansion beyond `MAX_NODES` (the "billion laughs"), recursive aliases, duplicate keys and
unknown tags each get their own code.

Values come out as plain dicts, lists and scalars (what JSON Schema and Jinja2 expect); positions
are kept beside them, keyed by the value's path (`("spec", "params", "port")`).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml import events as ev

from reconciler.core.findings import Finding

MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 64
# How libyaml (0.2.5 and later) words its own nesting limit.
_LIBRARY_DEPTH_REFUSAL = re.compile(r"nesting depth", re.IGNORECASE)
MAX_NODES = 100_000

PathKey = tuple[str | int, ...]
Position = tuple[int, int]

_RESOLVER = yaml.resolver.Resolver()
_CONSTRUCTOR = yaml.constructor.SafeConstructor()
_STR_TAG = "tag:yaml.org,2002:str"
_KNOWN_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:timestamp",
    "tag:yaml.org,2002:merge",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
    "!",
}


@dataclass(frozen=True)
class Document:
    """One YAML document of a file, as plain values, with the position of every value and key."""

    path: str
    index: int
    body: dict[str, Any]
    positions: Mapping[PathKey, Position]
    key_positions: Mapping[PathKey, Position] = field(default_factory=dict)
    block_scalars: frozenset[PathKey] = frozenset()  # `|` or `>` strings: their text starts a line below
    origin: str = ""  # "<blob id>:<index>": the same origin means the same content

    def text_line(self, path: PathKey, line_in_text: int) -> int:
        """The file line of line `line_in_text` (1-based) of the string value at `path`."""
        first = self.where(path)[0] + (1 if path in self.block_scalars else 0)
        return first + max(line_in_text, 1) - 1

    @property
    def start(self) -> Position:
        return self.positions.get((), (1, 1))

    def where(self, path: PathKey, *, key: bool = False) -> Position:
        """The position of `path`, or of its nearest ancestor that has one."""
        table = self.key_positions if key else self.positions
        for end in range(len(path), -1, -1):
            found = table.get(path[:end]) or self.positions.get(path[:end])
            if found:
                return found
        return self.start

    @property
    def kind(self) -> str | None:
        kind = self.body.get("kind")
        return kind if isinstance(kind, str) else None

    @property
    def name(self) -> str | None:
        metadata = self.body.get("metadata")
        name = metadata.get("name") if isinstance(metadata, dict) else None
        return name if isinstance(name, str) else None


@dataclass(frozen=True)
class ParsedFile:
    """A file's documents, or the findings that kept them from being read."""

    path: str
    documents: tuple[Document, ...]
    findings: tuple[Finding, ...]


_Built = tuple[Any, dict[PathKey, Position], dict[PathKey, Position], set[PathKey]]


class _Refused(Exception):
    """Raised inside the builder to stop at the first hostile construct of a document."""

    def __init__(self, line: int, column: int, message: str, code: str) -> None:
        super().__init__(message)
        self.line, self.column, self.message, self.code = line, column, message, code


def parse_file(path: str, data: bytes, *, blob_id: str = "") -> ParsedFile:
    """Parse every document of one file; never raises on bad input."""
    if len(data) > MAX_FILE_BYTES:
        limit = MAX_FILE_BYTES // 1024
        message = f"file is {len(data)} bytes, more than the limit of {limit} KiB"
        return ParsedFile(path, (), (Finding(path, 1, 1, "", message, "too-large"),))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return ParsedFile(path, (), (Finding(path, line, 1, "", "file is not valid UTF-8", "encoding"),))
    return _parse_text(path, text, blob_id)


def _parse_text(path: str, text: str, blob_id: str) -> ParsedFile:
    documents: list[Document] = []
    try:
        for index, built in enumerate(_Builder(text).documents()):
            if built is None:
                continue
            body, positions, keys, blocks = built
            if not isinstance(body, dict):
                line, column = positions.get((), (1, 1))
                kind = type(body).__name__ if body is not None else "empty"
                message = f"a document must be a mapping with apiVersion, kind, metadata and spec, not {kind}"
                finding = Finding(path, line, column, "", message, "not-a-mapping")
                return ParsedFile(path, tuple(documents), (finding,))
            origin = f"{blob_id}:{index}"
            documents.append(Document(path, index, body, positions, keys, frozenset(blocks), origin))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        if _LIBRARY_DEPTH_REFUSAL.search(exc.problem or ""):
            # libyaml's own nesting limit can fire before our builder sees level MAX_DEPTH (its scanner
            # reads ahead): the same refusal, said the same way.
            message = f"nesting is deeper than {MAX_DEPTH} levels"
            return ParsedFile(path, tuple(documents), (Finding(path, line, column, "", message, "too-deep"),))
        message = " ".join(part for part in (exc.context, exc.problem) if part) or "malformed YAML"
        return ParsedFile(path, tuple(documents), (Finding(path, line, column, "", message, "yaml"),))
    except yaml.YAMLError as exc:
        return ParsedFile(
            path, tuple(documents), (Finding(path, 1, 1, "", f"malformed YAML: {exc}", "yaml"),)
        )
    except _Refused as refused:
        finding = Finding(path, refused.line, refused.column, "", refused.message, refused.code)
        return ParsedFile(path, tuple(documents), (finding,))
    return ParsedFile(path, tuple(documents), ())


@dataclass
class _Open:
    """A mapping or sequence whose end event has not come yet."""

    value: dict[Any, Any] | list[Any]
    path: PathKey
    anchor: str | None
    pending_key: Any = None
    pending_key_text: str | None = None
    has_key: bool = False
    merges: list[Any] = field(default_factory=list)


class _Builder:
    """Turns libyaml events into values and positions, iteratively (no recursion on nesting)."""

    def __init__(self, text: str) -> None:
        self.events = yaml.parse(text, Loader=yaml.CSafeLoader)

    def documents(self) -> Iterator[_Built | None]:
        for event in self.events:
            if isinstance(event, ev.DocumentStartEvent):
                yield self._document()

    def _document(self) -> _Built | None:
        self.positions: dict[PathKey, Position] = {}
        self.keys: dict[PathKey, Position] = {}
        self.blocks: set[PathKey] = set()
        self.anchors: dict[str, tuple[Any, int]] = {}
        self.open_anchors: set[str] = set()
        self.nodes = 0
        stack: list[_Open] = []
        root: list[Any] = []
        for event in self.events:
            if isinstance(event, ev.DocumentEndEvent):
                if not root or root[0] is None:
                    return None
                return root[0], self.positions, self.keys, self.blocks
            self._feed(event, stack, root)
        return None

    def _feed(self, event: ev.Event, stack: list[_Open], root: list[Any]) -> None:
        position = _position(event)
        if isinstance(event, ev.MappingEndEvent | ev.SequenceEndEvent):
            done = stack.pop()
            if isinstance(done.value, dict) and done.merges:
                _apply_merges(done.value, done.merges)
            self._close_anchor(done.anchor, done.value)
            self._place(done.value, None, stack, root, event)
            return
        if isinstance(event, ev.MappingStartEvent | ev.SequenceStartEvent):
            self._check_tag(event.tag, event)
            if len(stack) >= MAX_DEPTH:
                raise _Refused(*position, f"nesting is deeper than {MAX_DEPTH} levels", "too-deep")
            path = self._child_path(stack)
            self._count(1, position)
            self._record(path, position, stack)
            container: dict[Any, Any] | list[Any] = {} if isinstance(event, ev.MappingStartEvent) else []
            if event.anchor:
                self.open_anchors.add(event.anchor)
            stack.append(_Open(container, path, event.anchor))
            return
        if isinstance(event, ev.ScalarEvent):
            self._scalar(event, stack, root, position)
            return
        if isinstance(event, ev.AliasEvent):
            self._alias(event, stack, root, position)

    def _scalar(self, event: ev.ScalarEvent, stack: list[_Open], root: list[Any], position: Position) -> None:
        self._check_tag(event.tag, event)
        value = _construct_scalar(event)
        self._count(1, position)
        if event.anchor:
            self.anchors[event.anchor] = (value, 1)
        if event.style in ("|", ">") and stack:
            self.blocks.add(self._child_path(stack))
        self._place(value, event.value, stack, root, event)

    def _alias(self, event: ev.AliasEvent, stack: list[_Open], root: list[Any], position: Position) -> None:
        anchor = event.anchor or ""
        if anchor in self.open_anchors:
            raise _Refused(*position, f"alias *{anchor} refers to a node that contains it", "recursive-alias")
        if anchor not in self.anchors:
            raise _Refused(*position, f"alias *{anchor} names no anchor", "yaml")
        value, size = self.anchors[anchor]
        self._count(size, position)
        self._place(copy.deepcopy(value), None, stack, root, event)

    def _close_anchor(self, anchor: str | None, value: Any) -> None:
        if anchor:
            self.open_anchors.discard(anchor)
            self.anchors[anchor] = (value, _size(value))

    def _count(self, size: int, position: Position) -> None:
        self.nodes += size
        if self.nodes > MAX_NODES:
            message = f"document expands to more than {MAX_NODES} values (aliases expanding exponentially?)"
            raise _Refused(*position, message, "too-many-values")

    def _child_path(self, stack: list[_Open]) -> PathKey:
        if not stack:
            return ()
        top = stack[-1]
        if isinstance(top.value, list):
            return (*top.path, len(top.value))
        return (*top.path, top.pending_key)

    def _record(self, path: PathKey, position: Position, stack: list[_Open]) -> None:
        if stack and isinstance(stack[-1].value, dict) and not stack[-1].has_key:
            return  # a complex (mapping or sequence) key: positions are not tracked for it
        self.positions.setdefault(path, position)

    def _place(
        self, value: Any, text: str | None, stack: list[_Open], root: list[Any], event: ev.Event
    ) -> None:
        position = _position(event)
        if not stack:
            root.append(value)
            self.positions.setdefault((), position)
            return
        top = stack[-1]
        if isinstance(top.value, list):
            self.positions.setdefault((*top.path, len(top.value)), position)
            top.value.append(value)
            return
        if not top.has_key:
            self._take_key(top, value, text, position)
            return
        self._set_value(top, value, position)

    def _take_key(self, top: _Open, value: Any, text: str | None, position: Position) -> None:
        if isinstance(value, dict | list):
            raise _Refused(*position, "a mapping key must be a plain scalar", "yaml")
        key = value if isinstance(value, str) or text is None else text
        if key in top.value and key != "<<":
            raise _Refused(*position, f"duplicate key {key!r} in this mapping", "duplicate-key")
        top.pending_key, top.has_key = key, True
        self.keys[(*top.path, key)] = position

    def _set_value(self, top: _Open, value: Any, position: Position) -> None:
        assert isinstance(top.value, dict)
        key = top.pending_key
        top.has_key = False
        if key == "<<":
            top.merges.append(value)
            return
        self.positions.setdefault((*top.path, key), position)
        top.value[key] = value

    def _check_tag(self, tag: str | None, event: ev.Event) -> None:
        if tag and tag not in _KNOWN_TAGS:
            raise _Refused(*_position(event), f"unsupported YAML tag {tag}", "yaml")


def _position(event: ev.Event) -> Position:
    mark = event.start_mark
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


def _construct_scalar(event: ev.ScalarEvent) -> Any:
    tag = event.tag
    if tag is None or tag == "!":
        if event.style or event.implicit == (False, True):
            return event.value  # quoted: always a string
        tag = _RESOLVER.resolve(yaml.ScalarNode, event.value, event.implicit)  # type: ignore[no-untyped-call]
    if tag in (_STR_TAG, "tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:merge"):
        return event.value  # timestamps stay text: JSON has no date type
    return _CONSTRUCTOR.construct_object(yaml.ScalarNode(tag, event.value))


def _apply_merges(mapping: dict[Any, Any], merges: list[Any]) -> None:
    """YAML merge keys (`<<: *base`): keys written in the mapping win over merged ones."""
    for merge in merges:
        for source in merge if isinstance(merge, list) else [merge]:
            if isinstance(source, dict):
                for key, value in source.items():
                    mapping.setdefault(key, value)


def _size(value: Any) -> int:
    """The number of values in `value`, counted iteratively."""
    count, todo = 0, [value]
    while todo:
        item = todo.pop()
        count += 1
        if isinstance(item, dict):
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
    return count

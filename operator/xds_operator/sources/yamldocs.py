"""Reading untrusted YAML documents: values plus where each field is, never an exception.

Documents are composed into node trees first (libyaml), so that every problem can be placed at
its line and column, and a field path as api/fields.py writes it ("spec.rules[0].port") can be
mapped back to the line that holds it. Refused, as kubectl refuses them: a mapping key given
twice, and any value the YAML schema cannot construct (`!!float abc`, the date 2025-02-30).
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

# libyaml's parser when PyYAML has it (the PyPI wheels do): an order of magnitude faster.
if yaml.__with_libyaml__:
    from yaml._yaml import CParser  # what yaml.cyaml re-exports, where its stubs declare it

    class _Composer(CParser, yaml.resolver.Resolver):
        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            yaml.resolver.Resolver.__init__(self)
else:  # pragma: no cover - PyYAML without libyaml
    _Composer = yaml.SafeLoader  # type: ignore[misc, assignment]

STR_TAG = "tag:yaml.org,2002:str"
NULL_TAG = "tag:yaml.org,2002:null"
MAP_TAG = "tag:yaml.org,2002:map"
SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"

Position = tuple[int, int]  # 1-based line and column
MAX_DEPTH = 100  # levels of nested mappings and lists in one document


def position(node: Node) -> Position:
    return node.start_mark.line + 1, node.start_mark.column + 1


class DocumentError(Exception):
    """A document that cannot be read, at `position` (a file-level problem when it is None)."""

    def __init__(self, message: str, position: Position | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.position = position


def compose(text: str) -> list[Node]:
    """The node tree of every document of a YAML stream. Raises DocumentError (with the position
    of the syntax error) when the stream cannot be split into documents."""
    loader = _Composer(text)
    nodes: list[Node] = []
    try:
        while loader.check_node():
            if (node := loader.get_node()) is not None:  # never None after check_node()
                nodes.append(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = f"invalid YAML: {exc.problem or exc.context}"
        if exc.context and exc.problem and exc.context_mark is not None:
            message += f" ({exc.context} at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1})"
        raise DocumentError(message, (mark.line + 1, mark.column + 1) if mark else None) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow, at an index
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        character = f"U+{exc.character:04X}" if isinstance(exc.character, int) else repr(exc.character)
        raise DocumentError(f"invalid YAML: character {character} is not allowed ({exc.reason})",
                            (line, column)) from None
    except Exception as exc:  # whatever else the parser raises: this file is unusable
        raise DocumentError(f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    return nodes


# Directives and document end markers: a stream with these is not split (it is parsed whole).
_UNSPLITTABLE = re.compile(r"^(?:%|\.\.\.(?:[ \t\n]|\Z))", re.MULTILINE)


def split_documents(text: str) -> list[tuple[int, str]] | None:
    """The stream cut before each document start marker ("---" at the start of a line: YAML
    allows one nowhere else at column 0, not in a block scalar, which is indented, nor in a
    quoted one): (0-based line, text) per piece, each piece holding at most one document. None
    when the stream cannot be cut safely (directives, end markers, carriage returns): then it
    is parsed whole."""
    if "\r" in text or (("%" in text or "..." in text) and _UNSPLITTABLE.search(text)):
        return None
    starts = [0]
    at = text.find("\n---")
    while at >= 0:
        after = at + 4
        if after == len(text) or text[after] in " \t\n":
            starts.append(at + 1)
        at = text.find("\n---", after)
    if text.startswith("---") and len(starts) > 1 and starts[1] == 0:
        starts.pop(0)
    pieces = []
    line = 0
    for begin, end in zip(starts, [*starts[1:], len(text)], strict=False):
        if end > begin:
            pieces.append((line, text[begin:end]))
            line += text.count("\n", begin, end)
    return pieces


def compose_at(piece: str, line: int) -> list[Node]:
    """compose() of a piece of a stream that starts at `line`, positions as in the whole stream."""
    return compose("\n" * line + piece)


def construct(node: Node) -> Any:
    """The Python value of one document, as the YAML 1.1 safe schema reads it. Raises
    DocumentError at the value that cannot be built, and at a mapping key given twice."""
    return _Builder().value(node, 0)


class _Builder:
    """Builds values straight from the node tree: strings, mappings and lists here (most of a
    document, and several times faster than PyYAML's generic constructor), every other tag by
    PyYAML's SafeConstructor; each error is placed at its node."""

    def __init__(self) -> None:
        self._collections: dict[int, Any] = {}  # aliases share nodes: build each once
        self._scalars = yaml.constructor.SafeConstructor()

    def value(self, node: Node, depth: int) -> Any:
        if node.tag == STR_TAG and type(node) is ScalarNode:
            return node.value
        if isinstance(node, ScalarNode):
            return self._other(node)
        if depth > MAX_DEPTH:  # Python's recursion limit is not far, and nothing legitimate goes deeper
            raise DocumentError(f"nested more than {MAX_DEPTH} levels deep", position(node))
        built = self._collections.get(id(node), _ABSENT)
        if built is _BUILDING:
            raise DocumentError("an alias refers to the collection that contains it", position(node))
        if built is not _ABSENT:
            return built
        self._collections[id(node)] = _BUILDING
        if isinstance(node, MappingNode) and node.tag == MAP_TAG:
            built = self._mapping(node, depth + 1)
        elif isinstance(node, SequenceNode) and node.tag == SEQ_TAG:
            built = [self.value(item, depth + 1) for item in node.value]
        else:  # !!set, !!omap, !!pairs, or a tag nobody knows (refused)
            built = self._other(node)
        self._collections[id(node)] = built
        return built

    def _mapping(self, node: MappingNode, depth: int) -> dict[Any, Any]:
        mapping: dict[Any, Any] = {}
        merged: list[Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged.append(value_node)
                continue
            key = self.value(key_node, depth)
            try:
                known = key in mapping
            except TypeError:
                raise DocumentError(f"a mapping key must be a scalar, not {type(key).__name__}",
                                    position(key_node)) from None
            if known:
                first = next(k for k, _ in node.value if k.tag != _MERGE_TAG and self.value(k, depth) == key)
                raise DocumentError(f"mapping key {key!r} already defined at line {first.start_mark.line + 1}",
                                    position(key_node))
            mapping[key] = self.value(value_node, depth)
        if merged:  # `<<: *base` or `<<: [*a, *b]`: the mapping's own keys win, then the first source
            sources = [n for m in merged for n in (m.value if isinstance(m, SequenceNode) else [m])]
            combined: dict[Any, Any] = {}
            for source in reversed(sources):
                value = self.value(source, depth)
                if not isinstance(value, dict):
                    raise DocumentError("`<<` merges mappings only", position(source))
                combined.update(value)
            combined.update(mapping)
            mapping = combined
        return mapping

    def _other(self, node: Node) -> Any:
        try:
            return self._scalars.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            raise DocumentError(str(exc.problem), (mark.line + 1, mark.column + 1) if mark else position(node)) from None
        except Exception as exc:  # a constructor's own error (ValueError, OverflowError...)
            shown = node.value if isinstance(node.value, str) else ""
            shown = shown if len(shown) <= 40 else shown[:40] + "..."
            kind = node.tag.rpartition(":")[2] or node.tag
            raise DocumentError(f"{shown!r} cannot be read as a YAML {kind}: {exc}", position(node)) from None
        finally:
            self._scalars.constructed_objects.clear()
            self._scalars.recursive_objects.clear()
            self._scalars.state_generators.clear()


_ABSENT, _BUILDING = object(), object()


def walk(root: Node) -> list[tuple[str, Node]]:
    """(field path, node) of every value in a document, in document order; paths as api/fields.py
    writes them: `spec.rules[0].matches[1].path`. A mapping entry's node is its key's (where the
    field is written); the root's path is ''."""
    out: list[tuple[str, Node]] = []
    seen: set[int] = set()  # aliases share nodes, and may even be recursive
    stack: list[tuple[str, Node, Node]] = [("", root, root)]
    while stack:
        path, node, at = stack.pop()
        out.append((path, at))
        if id(node) in seen:
            continue
        seen.add(id(node))
        children: list[tuple[str, Node, Node]] = []
        if isinstance(node, MappingNode):
            for key, value in node.value:
                if isinstance(key, ScalarNode) and key.tag != _MERGE_TAG:
                    children.append((f"{path}.{key.value}" if path else key.value, value, key))
        elif isinstance(node, SequenceNode):
            children = [(f"{path}[{i}]", item, item) for i, item in enumerate(node.value)]
        stack.extend(reversed(children))
    return out


def positions(root: Node) -> dict[str, Position]:
    """Field path -> where it is written (for placing validation errors)."""
    found: dict[str, Position] = {}
    for path, node in walk(root):
        found.setdefault(path, position(node))
    return found


def place(positions: dict[str, Position], path: str, default: Position) -> Position:
    """Where the field at `path` is, or its nearest written ancestor (for a missing field)."""
    while path:
        if path in positions:
            return positions[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return default


def entry(node: Node, key: str) -> Node | None:
    """The value node of `key` in a mapping node (None if absent or not a mapping)."""
    if isinstance(node, MappingNode):
        pair: tuple[Node, Node]
        for pair in node.value:
            key_node, value = pair
            if isinstance(key_node, ScalarNode) and key_node.value == key and key_node.tag == STR_TAG:
                return value
    return None


def text(node: Node | None) -> str | None:
    """The string of a scalar node that YAML reads as a string (not a number, date or null)."""
    if isinstance(node, ScalarNode) and node.tag == STR_TAG:
        value: str = node.value
        return value
    return None

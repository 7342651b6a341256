"""The file source: Routes and Backends (and the Services, EndpointSlices, Secrets and ConfigMaps they resolve against)
from YAML files, a directory tree of them, or several of either.

Nothing a file contains stops the source: each problem becomes a Finding at its file, line and
column (logged, and shown by /status and `validate`), and everything else keeps being applied.
A file that cannot be read or split into documents keeps its last good objects, and so does a
document that cannot be read but still says which object it is. A file is read again only when
its (mtime, size, inode, mode) changes, so one that stays broken costs nothing per poll.

What is served is a function of the files alone, the same after a restart and in `validate`
(which runs this very source once): when several documents define one object, the first in
path order (then document order) is used and each other one is reported once, naming the one
in effect. Documents of other kinds are skipped with a note. The roots are watched (inotify,
through watchfiles) so that a change is read at once, and file metadata is polled as well, which
also works where no events come (network file systems) and on ConfigMap volumes (which change by
symlink swaps). Re-reading a file re-parses only the documents whose text changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import logging
import os
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from itertools import compress
from operator import is_not
from pathlib import Path
from typing import Any

import watchfiles
from yaml.nodes import MappingNode, Node, ScalarNode

from ..api.fields import FieldError, Fields
from ..api.objects import API_GROUP, API_VERSION, KINDS, ObjectKey, UserObject
from ..collector import collector_paused
from . import yamldocs
from .findings import Finding, Severity
from .kubernetes import (
    InvalidSecretData,
    trimmed_config_map,
    trimmed_endpoint_slice,
    trimmed_secret,
    trimmed_service,
)
from .state import StateStore
from .yamldocs import NULL_TAG, DocumentError, Position

log = logging.getLogger(__name__)

YAML_SUFFIXES = (".yaml", ".yml")
# The Kubernetes kinds endpoint resolution reads, besides this API's own, and their apiVersion.
CORE_KINDS = {"Service": "v1", "EndpointSlice": "discovery.k8s.io/v1", "Secret": "v1", "ConfigMap": "v1"}

Stamp = tuple[int, int, int, int]  # mtime_ns, size, inode, mode (a chmod can make a file readable)
Order = tuple[int, tuple[str, ...]]  # root index, then path components: Path order, without Paths


@dataclass(frozen=True, slots=True)
class Definition:
    """One object as a document defines it. Services and EndpointSlices travel as UserObjects
    too, their spec the trimmed manifest that endpoint resolution reads (sources/kubernetes.py)."""

    obj: UserObject
    path: str
    position: Position  # of the document
    index: int  # the document's number in its file
    positions: dict[str, Position] | None = field(default=None, compare=False, repr=False)

    @property
    def origin(self) -> str:
        return f"{self.path}:{self.position[0]}:{self.position[1]}"

    def finding(self, field_path: str, message: str, severity: Severity = Severity.ERROR) -> Finding:
        """A problem of the field at `field_path` (api/fields.py paths), placed at its line when
        positions were kept, else at the document."""
        line, column = yamldocs.place(self.positions or {}, field_path, self.position)
        return Finding(self.path, line, column, message, severity)


class _Refused(Exception):
    """A document that is not loaded; `key` when it still says which object it is."""

    def __init__(self, message: str, position: Position, severity: Severity = Severity.ERROR,
                 key: ObjectKey | None = None) -> None:
        super().__init__(message)
        self.message, self.position, self.severity, self.key = message, position, severity, key


# -- reading one file --------------------------------------------------------------------------

# The definitions of a file's documents by (document text, first line, document number): after
# an edit, only documents whose text (or place) changed are parsed again.
DocumentCache = dict[tuple[str, int, int], Definition]


def read_file(path: str, previous: Sequence[Definition] = (), *, keep_positions: bool = False
              ) -> tuple[list[Definition], list[Finding]]:
    """The definitions and findings of one file. When the file cannot be read or split into
    documents, `previous` (its last good definitions) stays; so does a broken document's own."""
    definitions, findings, _ = read_documents(path, previous, None, keep_positions=keep_positions)
    return definitions, findings


def read_documents(path: str, previous: Sequence[Definition], cache: DocumentCache | None, *,
                   keep_positions: bool = False) -> tuple[list[Definition], list[Finding], DocumentCache]:
    """read_file, reusing the definitions of `cache` (what the last read returned) for documents
    whose text and place did not change; returns the cache for the next read."""
    def unusable(message: str, line: int = 0, column: int = 0) -> tuple[list[Definition], list[Finding],
                                                                         DocumentCache]:
        if previous:
            message += f"; keeping its last good objects ({len(previous)})"
        return list(previous), [Finding(path, line, column, message)], {}

    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        return unusable(f"cannot be read: {exc.strerror or exc}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        return unusable(f"not UTF-8 text (byte 0x{data[exc.start]:02x}); is it a YAML file?", line, column)
    pieces = yamldocs.split_documents(text)
    nodes: list[_Document] | None = None
    if pieces is not None and cache:
        nodes = _changed_documents(pieces, cache)
    if nodes is None:
        try:
            whole = yamldocs.compose(text)
        except DocumentError as exc:
            return unusable(exc.message, *(exc.position or (0, 0)))
        nodes = _placed(whole, pieces)

    last_good: dict[ObjectKey, Definition] | None = None  # made when a document is refused
    definitions: list[Definition] = []
    findings: list[Finding] = []
    new_cache: DocumentCache = {}
    for index, (node, cache_key) in enumerate(nodes):
        if isinstance(node, Definition):
            definitions.append(node)
            new_cache[cache_key] = node  # type: ignore[index]
            continue
        try:
            definition = _guarded_definition(path, index, node, keep_positions)
        except _Refused as exc:
            message = exc.message
            if last_good is None:
                last_good = {}
                for d in previous:
                    last_good.setdefault(d.obj.key, d)
            kept = last_good.get(exc.key) if exc.key is not None else None
            if kept is not None:
                definitions.append(kept)
                message += "; keeping its last good definition"
            findings.append(Finding(path, *exc.position, message, exc.severity))
            continue
        if definition is not None:
            definitions.append(definition)
            if cache_key is not None:
                new_cache[cache_key] = definition
    return definitions, findings, new_cache


_Document = tuple["Node | Definition", "tuple[str, int, int] | None"]  # and its cache key, if cacheable


def _changed_documents(pieces: list[tuple[int, str]], cache: DocumentCache) -> list[_Document] | None:
    """Per document: the cached definition of an unchanged piece, or the node of a changed one
    (composed alone). None when a changed piece cannot be read alone: then the file is read whole."""
    out: list[_Document] = []
    for line, piece in pieces:
        key = (piece, line, len(out))
        hit = cache.get(key)
        if hit is not None:
            out.append((hit, key))
            continue
        try:
            composed = yamldocs.compose_at(piece, line)
        except DocumentError:
            return None
        if len(composed) > 1:
            return None
        out.extend((node, key) for node in composed)
    return out


def _placed(nodes: list[Node], pieces: list[tuple[int, str]] | None) -> list[_Document]:
    """The nodes of a whole-file parse, each with the cache key of the piece it starts in when
    that piece holds no other document (else None: not cached)."""
    if pieces is None:
        return [(node, None) for node in nodes]
    starts = [line for line, _ in pieces]
    owners = [bisect_right(starts, node.start_mark.line) - 1 for node in nodes]
    counts = Counter(owners)
    return [(node, (pieces[owner][1], pieces[owner][0], index) if owner >= 0 and counts[owner] == 1 else None)
            for index, (node, owner) in enumerate(zip(nodes, owners, strict=False))]


def _guarded_definition(path: str, index: int, node: Node, keep_positions: bool) -> Definition | None:
    """_definition, any failure of its own costing this one document, not the source."""
    try:
        return _definition(path, index, node, keep_positions)
    except _Refused:
        raise
    except Exception as exc:
        log.debug("reading %s failed", path, exc_info=True)
        raise _Refused(f"cannot be read: {type(exc).__name__}: {exc}", yamldocs.position(node)) from None


def _definition(path: str, index: int, node: Node, keep_positions: bool) -> Definition | None:
    start = yamldocs.position(node)
    if isinstance(node, ScalarNode) and node.tag == NULL_TAG:
        return None  # an empty document
    if not isinstance(node, MappingNode):
        raise _Refused("document is not a mapping (a Kubernetes object)", start)
    kind = _kind_of(node, start)
    if kind is None:
        return None
    key = _identity(node, kind, start)
    _check_metadata(yamldocs.entry(node, "metadata"), key)
    try:
        doc = yamldocs.construct(node)
    except DocumentError as exc:
        raise _Refused(f"{key}: {exc.message}", exc.position or start, key=key) from None
    positions = yamldocs.positions(node) if keep_positions else None
    origin = f"{path}:{start[0]}"
    if kind in KINDS:
        obj = UserObject(key, doc.get("spec"), origin=origin)
    else:
        errors = _CORE_ERRORS[kind](doc)
        if errors:
            where = yamldocs.positions(node) if positions is None else positions
            line_column = yamldocs.place(where, errors[0].path, start)
            raise _Refused(f"{key}: {errors[0]}", line_column, key=key)
        try:
            manifest = _CORE_TRIMMED[kind](doc)
        except InvalidSecretData as exc:
            raise _Refused(f"{key}: {exc}", start, key=key) from None
        obj = UserObject(key, manifest, origin=origin)
    return Definition(obj, path, start, index, positions)


def _kind_of(node: MappingNode, start: Position) -> str | None:
    """The kind to load, None for a document of another kind (skipped with a note); refuses what
    claims this API group but is not one of its kinds, as the API server would."""
    api_version_node, kind_node = yamldocs.entry(node, "apiVersion"), yamldocs.entry(node, "kind")
    api_version, kind = yamldocs.text(api_version_node), yamldocs.text(kind_node)
    if api_version_node is None and kind_node is None:
        raise _Refused("skipped: not a Kubernetes object (no apiVersion or kind)", start, Severity.NOTE)
    group = api_version.partition("/")[0] if api_version and "/" in api_version else ""
    if group == API_GROUP:
        if api_version != API_VERSION:
            raise _Refused(f"apiVersion {api_version!r} is not served; {API_GROUP}'s version is "
                           f"{API_VERSION.partition('/')[2]}", _at(api_version_node, start))
        if kind not in KINDS:
            close = difflib.get_close_matches(kind or "", KINDS, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise _Refused(f"kind {kind!r} is not a kind of {API_VERSION} (one of: {', '.join(KINDS)}){hint}",
                           _at(kind_node, start))
        return kind
    if kind in KINDS:
        if api_version_node is None:
            raise _Refused(f"apiVersion is required ({API_VERSION})", start)
        # No core kind is called so; a group one letter off is a typo (OpenShift's Route is not).
        if not group or difflib.SequenceMatcher(None, group, API_GROUP).ratio() > 0.8:
            raise _Refused(f"apiVersion {_raw(api_version_node)!r}: {kind} is in {API_VERSION}",
                           _at(api_version_node, start))
    if kind in CORE_KINDS and api_version == CORE_KINDS[kind]:
        return kind
    what = f"{_raw(api_version_node) or '(no apiVersion)'} {_raw(kind_node) or '(no kind)'}"
    raise _Refused(f"skipped: {what} is not read by xds-operator", start, Severity.NOTE)


def _identity(node: MappingNode, kind: str, start: Position) -> ObjectKey:
    meta = yamldocs.entry(node, "metadata")
    if meta is None:
        raise _Refused("metadata.name is required", start)
    if not isinstance(meta, MappingNode):
        raise _Refused(f"metadata must be an object, not {_what(meta)}", yamldocs.position(meta))
    name_node, namespace_node = yamldocs.entry(meta, "name"), yamldocs.entry(meta, "namespace")
    name = yamldocs.text(name_node)
    if not name:
        raise _Refused("metadata.name is required" if name_node is None or name == "" else
                       f"metadata.name must be a string, not {_what(name_node)}", _at(name_node, yamldocs.position(meta)))
    namespace = yamldocs.text(namespace_node)
    if namespace_node is not None and namespace is None and namespace_node.tag != NULL_TAG:
        raise _Refused(f"metadata.namespace must be a string, not {_what(namespace_node)}",
                       yamldocs.position(namespace_node))
    return ObjectKey(kind, namespace or "default", name)


def _check_metadata(meta: Node | None, key: ObjectKey) -> None:
    """Refuses metadata the API server would refuse by its types. (Files get their generation
    from this source: it counts spec changes.)"""
    for name in ("labels", "annotations"):
        node = yamldocs.entry(meta, name) if meta is not None else None
        if node is None or node.tag == NULL_TAG:
            continue
        if not isinstance(node, MappingNode):
            raise _Refused(f"{key}: metadata.{name} must be a map of strings, not {_what(node)}",
                           yamldocs.position(node), key=key)
        for k, v in node.value:
            if yamldocs.text(k) is None:
                raise _Refused(f"{key}: metadata.{name}: keys must be strings, not {_what(k)}",
                               yamldocs.position(k), key=key)
            if yamldocs.text(v) is None and v.tag != NULL_TAG:
                hint = f' (quote it: {k.value}: "{v.value}")' if isinstance(v, ScalarNode) else ""
                raise _Refused(f"{key}: metadata.{name}.{k.value} must be a string, not {_what(v)}{hint}",
                               yamldocs.position(v), key=key)
    generation = yamldocs.entry(meta, "generation") if meta is not None else None
    if generation is not None and generation.tag not in ("tag:yaml.org,2002:int", NULL_TAG):
        raise _Refused(f"{key}: metadata.generation must be an integer, not {_what(generation)}",
                       yamldocs.position(generation), key=key)


def _what(node: Node) -> str:
    """What YAML reads a node as, for messages: a list, a date '2025-02-30'..."""
    if isinstance(node, ScalarNode):
        kind = {"int": "an integer", "float": "a number", "bool": "a boolean", "null": "null",
                "timestamp": "a date", "str": "a string"}.get(node.tag.rpartition(":")[2], node.tag)
        return f"{kind} ({node.value!r})" if node.value else kind
    return "an object" if isinstance(node, MappingNode) else "a list"


def _raw(node: Node | None) -> str:
    return node.value if isinstance(node, ScalarNode) else ""


def _at(node: Node | None, default: Position) -> Position:
    return yamldocs.position(node) if node is not None else default


def _service_errors(doc: dict[str, Any]) -> list[FieldError]:
    """What endpoint resolution would trip over in a Service (the API server checks more)."""
    f = Fields()
    spec = doc.get("spec")
    if spec is not None and not isinstance(spec, dict):
        f.error("spec", "must be an object")
        return f.errors
    for i, port in enumerate(f.sequence((spec or {}).get("ports"), "spec.ports")):
        if not isinstance(port, dict):
            f.error(f"spec.ports[{i}]", "must be an object")
            continue
        f.integer(port.get("port"), f"spec.ports[{i}].port", minimum=1, maximum=65535, required=True)
        f.string(port.get("name"), f"spec.ports[{i}].name")
    return f.errors


def _endpoint_slice_errors(doc: dict[str, Any]) -> list[FieldError]:
    f = Fields()
    f.enum(doc.get("addressType"), "addressType", ("IPv4", "IPv6", "FQDN"), required=True)
    for i, port in enumerate(f.sequence(doc.get("ports"), "ports")):
        if not isinstance(port, dict):
            f.error(f"ports[{i}]", "must be an object")
            continue
        f.integer(port.get("port"), f"ports[{i}].port", minimum=1, maximum=65535)
        f.string(port.get("name"), f"ports[{i}].name")
    for i, endpoint in enumerate(f.sequence(doc.get("endpoints"), "endpoints")):
        if not isinstance(endpoint, dict):
            f.error(f"endpoints[{i}]", "must be an object")
            continue
        for j, address in enumerate(f.sequence(endpoint.get("addresses"), f"endpoints[{i}].addresses")):
            f.string(address, f"endpoints[{i}].addresses[{j}]", required=True)
        conditions = endpoint.get("conditions")
        if conditions is not None and not isinstance(conditions, dict):
            f.error(f"endpoints[{i}].conditions", "must be an object")
        elif conditions and not isinstance(conditions.get("ready", True), (bool, type(None))):
            f.error(f"endpoints[{i}].conditions.ready", "must be true or false")
    return f.errors


def _string_maps(f: Fields, doc: dict[str, Any], names: tuple[str, ...]) -> list[FieldError]:
    for name in names:
        values = doc.get(name)
        if values is None:
            continue
        if not isinstance(values, dict):
            f.error(name, "must be a map of strings")
            continue
        for k, v in values.items():
            f.string(v, f"{name}.{k}", max_len=1 << 20)
    return f.errors


def _secret_errors(doc: dict[str, Any]) -> list[FieldError]:
    f = Fields()
    f.string(doc.get("type"), "type")
    return _string_maps(f, doc, ("data", "stringData"))


def _config_map_errors(doc: dict[str, Any]) -> list[FieldError]:
    return _string_maps(Fields(), doc, ("data", "binaryData"))


_CORE_ERRORS = {"Service": _service_errors, "EndpointSlice": _endpoint_slice_errors, "Secret": _secret_errors,
                "ConfigMap": _config_map_errors}
_CORE_TRIMMED = {"Service": trimmed_service, "EndpointSlice": trimmed_endpoint_slice, "Secret": trimmed_secret,
                 "ConfigMap": trimmed_config_map}
_PUT = {"Service": StateStore.put_service, "EndpointSlice": StateStore.put_endpoint_slice,
        "Secret": StateStore.put_secret, "ConfigMap": StateStore.put_config_map}


# -- finding the files -------------------------------------------------------------------------

def stamps(roots: Sequence[Path]) -> tuple[dict[str, tuple[Stamp, Order]], list[Finding], list[str]]:
    """Every YAML file under `roots` (each a directory or a file) with its stamp and order, skipping
    hidden files and directories (editor swap files, ConfigMap ..data); the problems (a missing
    root...); and the directories that exist but cannot be listed. One scandir pass, no Path
    objects: this runs every poll."""
    found: dict[str, tuple[Stamp, Order]] = {}
    problems: list[Finding] = []
    unlisted: list[str] = []
    for number, root in enumerate(roots):
        top = str(root)
        try:
            st = os.stat(top)
        except OSError as exc:
            problems.append(Finding(top, message=_os_error(exc)))
            continue
        if not os.path.isdir(top):
            found.setdefault(top, ((st.st_mtime_ns, st.st_size, st.st_ino, st.st_mode), (number, tuple(top.split(os.sep)))))
            continue
        pending = [top]
        while pending:
            directory = pending.pop()
            try:
                with os.scandir(directory) as listing:
                    entries = list(listing)
            except FileNotFoundError:
                continue  # vanished since its parent was listed: gone, like its files
            except OSError as exc:
                problems.append(Finding(directory, message=f"cannot be listed: {_os_error(exc)}"))
                unlisted.append(directory + os.sep)
                continue
            for entry in entries:
                if entry.name[0] == ".":
                    continue
                try:
                    if entry.is_dir():
                        pending.append(entry.path)
                    elif entry.name.endswith(YAML_SUFFIXES) and entry.is_file():
                        st = entry.stat()  # follows symlinks, as ConfigMap volumes need
                        if entry.path not in found:
                            found[entry.path] = ((st.st_mtime_ns, st.st_size, st.st_ino, st.st_mode),
                                                 (number, tuple(entry.path.split(os.sep))))
                except OSError:
                    continue
    return found, problems, unlisted


def _os_error(exc: OSError) -> str:
    return "no such file or directory" if isinstance(exc, FileNotFoundError) else (exc.strerror or str(exc))


# -- the source --------------------------------------------------------------------------------

@dataclass(slots=True)
class _File:
    stamp: Stamp
    order: Order
    definitions: list[Definition]  # in document order, including last good ones kept
    findings: list[Finding]
    documents: DocumentCache = field(default_factory=dict)  # for the next read of this file


@dataclass
class Changes:
    """What one scan found, to apply to the state store (on the event loop)."""

    puts: list[UserObject] = field(default_factory=list)
    deletes: list[ObjectKey] = field(default_factory=list)
    problems: tuple[Finding, ...] | None = None  # None: unchanged


class FileSource:
    """Watches `roots`. Reading, parsing and picking among duplicates happen in a thread
    (`read_changes`); only applying the result to the state store runs on the event loop."""

    def __init__(self, roots: Path | Sequence[Path], state: StateStore, *, interval: float = 0.1,
                 keep_positions: bool = False) -> None:
        self.roots = [roots] if isinstance(roots, Path) else list(roots)
        self.state = state
        self.interval = interval
        self.keep_positions = keep_positions  # for `validate`: the line of every field
        self._files: dict[str, _File] = {}
        self._definers: dict[ObjectKey, dict[str, list[Definition]]] = {}
        self._chosen: dict[ObjectKey, Definition] = {}  # what is in the state store, with its generation
        self._duplicates: dict[ObjectKey, list[Finding]] = {}
        self._listing: list[Finding] = []
        self._problems: tuple[Finding, ...] = ()
        # Files that had objects and were read without any: since when (time.monotonic()).
        self._emptied: dict[str, float] = {}

    def scan(self) -> None:
        """Loads every file that changed since the last scan and forgets deleted ones."""
        self.apply(self.read_changes())

    def definitions(self) -> list[Definition]:
        """The definition in effect for each object, in key order."""
        return [self._chosen[key] for key in sorted(self._chosen)]

    def findings(self) -> list[Finding]:
        """Everything there is to say about the files now, notes included, in file order."""
        found = [*self._listing, *(f for file in self._files.values() for f in file.findings),
                 *(f for dups in self._duplicates.values() for f in dups)]
        return sorted(found, key=Finding.sort_key)

    def read_changes(self) -> Changes:
        with collector_paused(freeze=True):
            return self._read_changes()

    def _read_changes(self) -> Changes:
        current, listing, unlisted = stamps(self.roots)
        if unlisted:  # files in a directory that cannot be listed keep what they had
            for path, file in self._files.items():
                if path.startswith(tuple(unlisted)):
                    current.setdefault(path, (file.stamp, file.order))
        changed = sorted((order, path) for path, (stamp, order) in current.items()
                         if (known := self._files.get(path)) is None or known.stamp != stamp)
        gone = [path for path in self._files if path not in current]
        changes = Changes()
        if not changed and not gone and listing == self._listing:
            return changes
        for finding in listing:
            if finding not in self._listing:
                log.error("%s", finding)
        self._listing = listing
        touched: set[ObjectKey] = set()
        for path in gone:
            self._emptied.pop(path, None)
            touched |= self._set_file(path, None)
            log.info("%s: removed", path)
        for order, path in changed:
            previous = self._files.get(path)
            definitions, findings, documents = read_documents(
                path, previous.definitions if previous else (), previous.documents if previous else None,
                keep_positions=self.keep_positions)
            if not definitions and previous is not None and previous.definitions and self._being_rewritten(path):
                continue  # read again at its next change or poll
            self._emptied.pop(path, None)
            touched |= self._set_file(path, _File(current[path][0], order, definitions, findings, documents))
            for finding in findings:
                log.log(_LOG_LEVELS[finding.severity], "%s", finding)
            if not any(f.severity is Severity.ERROR for f in findings):
                log.info("%s: %d objects loaded", path, len(definitions))
        for key in sorted(touched):
            self._choose(key, changes)
        problems = tuple(f for f in self.findings() if f.severity is not Severity.NOTE)
        if problems != self._problems:
            self._problems = changes.problems = problems
        return changes

    def _being_rewritten(self, path: str) -> bool:
        """For a file that had objects and was just read without any: whether it is, or may
        still be, in the middle of a rewrite in place (see REWRITE_GRACE_S)."""
        now = time.monotonic()
        if now - self._emptied.setdefault(path, now) < REWRITE_GRACE_S:
            return True
        try:
            mtime_ns = os.stat(path).st_mtime_ns
        except OSError:
            return False
        return 0 <= time.time_ns() - mtime_ns < REWRITE_GRACE_S * 1e9

    def _set_file(self, path: str, file: _File | None) -> set[ObjectKey]:
        """Replaces what a file defines; returns the keys whose definitions changed. (A document
        read again from the cache is the same Definition, and its key is not touched.)"""
        old = self._files.pop(path, None)
        if file is not None:
            self._files[path] = file
        if old is not None and file is not None:
            touched = self._replace_changed(path, old.definitions, file.definitions)
            if touched is not None:
                return touched
        old_by_key = _by_key(old.definitions if old else ())
        new_by_key = _by_key(file.definitions if file else ())
        touched = set()
        for key in old_by_key.keys() | new_by_key.keys():
            before, after = old_by_key.get(key, []), new_by_key.get(key, [])
            if len(before) == len(after) and all(a is b for a, b in zip(before, after, strict=False)):
                continue
            touched.add(key)
            by_file = self._definers.setdefault(key, {})
            if after:
                by_file[path] = after
            else:
                by_file.pop(path, None)
                if not by_file:
                    self._definers.pop(key, None)
        return touched

    def _replace_changed(self, path: str, old: list[Definition], new: list[Definition]) -> set[ObjectKey] | None:
        """_set_file for a file read again with as many definitions, each of the same key as
        before (the usual edit): the ones that are not the very same objects (found pairwise,
        in C) replace theirs. None, having changed nothing, for any other change."""
        if len(old) != len(new):
            return None
        changed = list(compress(range(len(new)), map(is_not, old, new)))
        if any(old[i].obj.key != new[i].obj.key for i in changed):
            return None
        replaced = {id(old[i]): new[i] for i in changed}
        touched = {new[i].obj.key for i in changed}
        for key in touched:
            by_file = self._definers[key]
            by_file[path] = [replaced.get(id(d), d) for d in by_file[path]]
        return touched

    def _choose(self, key: ObjectKey, changes: Changes) -> None:
        """Picks the definition in effect for `key`: the first in file order, then document order.
        The rest are reported, once each, naming the one in effect."""
        candidates = sorted((((self._files[path].order, d.index), d)
                             for path, ds in self._definers.get(key, {}).items() for d in ds), key=lambda c: c[0])
        previous = self._chosen.get(key)
        if not candidates:
            self._duplicates.pop(key, None)
            if previous is not None:
                del self._chosen[key]
                changes.deletes.append(key)
            return
        winner = candidates[0][1]
        duplicates = [d.finding("", f"{key} is already defined in {winner.origin}, which is used; this "
                                    "definition is ignored") for _, d in candidates[1:]]
        for finding in duplicates:
            if finding not in self._duplicates.get(key, ()):
                log.error("%s", finding)
        if duplicates:
            self._duplicates[key] = duplicates
        else:
            self._duplicates.pop(key, None)
        # The generation counts spec changes, as the API server's does.
        obj = winner.obj
        generation = 1 if previous is None else previous.obj.generation + (previous.obj.spec != obj.spec)
        if obj.generation != generation:
            winner = replace(winner, obj=replace(obj, generation=generation))
        self._chosen[key] = winner
        if previous is None or previous.obj != winner.obj:
            changes.puts.append(winner.obj)

    def apply(self, changes: Changes) -> None:
        for obj in changes.puts:
            if obj.key.kind in KINDS:
                self.state.put(obj)
            else:
                _PUT[obj.key.kind](self.state, obj.key.namespace, obj.key.name, obj.spec)
        for key in changes.deletes:
            if key.kind in KINDS:
                self.state.delete(key)
            else:
                _PUT[key.kind](self.state, key.namespace, key.name, None)
        if changes.problems is not None:
            self.state.set_problems("files", changes.problems)

    async def run(self) -> None:
        """Scans whenever the file system reports a change under the roots (inotify, through
        watchfiles), and every `interval` seconds whatever it reports: the poll is the fallback
        for file systems that send no events (NFS, some FUSE mounts) and roots that cannot be
        watched (missing at start)."""
        changed = asyncio.Event()
        stop = asyncio.Event()
        watcher = asyncio.create_task(self._watch(changed, stop))
        last_failure = ""
        try:
            while True:
                changed.clear()  # before the scan: a change during it makes the next one at once
                try:
                    self.apply(await asyncio.to_thread(self.read_changes))
                except Exception as exc:  # a bug here must not stop the source
                    if repr(exc) != last_failure:  # one traceback per distinct failure, not one per poll
                        log.exception("scanning %s failed", ", ".join(map(str, self.roots)))
                    last_failure = repr(exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), timeout=self.interval)
        finally:
            stop.set()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _watch(self, changed: asyncio.Event, stop: asyncio.Event) -> None:
        roots = [root for root in self.roots if root.exists()]
        if not roots:
            return
        try:
            async for _ in watchfiles.awatch(*roots, watch_filter=None, debounce=WATCH_DEBOUNCE_MS,
                                             step=WATCH_STEP_MS, stop_event=stop, ignore_permission_denied=True):
                changed.set()
        except Exception as exc:  # no inotify here (or no more watches): the poll goes on
            log.info("not watching %s for changes (%s); polling every %g s",
                     ", ".join(map(str, roots)), exc, self.interval)


# A file that had objects and is read without any is taken to be in the middle of a rewrite in
# place (truncated, then written: what write_text, many editors and `cat >` do) until it has been
# read so for this long and last modified longer ago than this: it keeps its objects until a read
# finds some, or a later poll still finds none (an emptied file), so that a read between a
# truncation and its write never withdraws them from Envoy. (Not by the mtime alone: truncation
# can leave the mtime of the last write.)
REWRITE_GRACE_S = 0.2


# Events are gathered until WATCH_STEP_MS pass without one (at most WATCH_DEBOUNCE_MS): an editor's
# write-rename-chmod is one scan. The controller debounces rebuilds on its own as well.
WATCH_STEP_MS = 10
WATCH_DEBOUNCE_MS = 50


def _by_key(definitions: Sequence[Definition]) -> dict[ObjectKey, list[Definition]]:
    out: dict[ObjectKey, list[Definition]] = {}
    for d in definitions:
        out.setdefault(d.obj.key, []).append(d)
    return out


_LOG_LEVELS = {Severity.ERROR: logging.ERROR, Severity.WARNING: logging.WARNING, Severity.NOTE: logging.INFO}

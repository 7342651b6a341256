"""The file source: Route and Backend documents from a YAML file or a directory of them.

A file that cannot be read or parsed keeps its previously loaded objects (the last good
config stays); a document that parses but is not a Route or Backend is skipped with a log
line. Changes are found by polling file metadata, which also works on bind mounts and on
Kubernetes ConfigMap volumes (where files change by symlink swaps that inotify misses).
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..api.objects import API_VERSION, KINDS, ObjectKey, UserObject
from .state import StateStore

log = logging.getLogger(__name__)

YAML_SUFFIXES = (".yaml", ".yml")
# libyaml's loader when PyYAML has it (the PyPI wheels do): an order of magnitude faster.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class DocumentError:
    origin: str  # path:line
    message: str

    def __str__(self) -> str:
        return f"{self.origin}: {self.message}"


def config_files(path: Path) -> list[Path]:
    return sorted(stamps(path))


def stamps(root: Path) -> dict[Path, tuple[int, int, int]]:
    """(mtime, size, inode) of every YAML file under `root` (or of `root` itself), skipping
    hidden files and directories. One scandir pass: this runs every poll interval."""
    if not root.is_dir():
        try:
            st = root.stat()
        except OSError:
            return {}
        return {root: (st.st_mtime_ns, st.st_size, st.st_ino)}
    found: dict[Path, tuple[int, int, int]] = {}
    pending = [str(root)]
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir():
                    pending.append(entry.path)
                elif entry.name.endswith(YAML_SUFFIXES) and entry.is_file():
                    st = entry.stat()  # follows symlinks, as ConfigMap volumes need
                    found[Path(entry.path)] = (st.st_mtime_ns, st.st_size, st.st_ino)
            except OSError:
                continue
    return found


def parse_file(path: Path) -> tuple[list[UserObject], list[DocumentError]]:
    """The Route/Backend objects in a file and the problems of its documents. Raises OSError
    or yaml.YAMLError when the file as a whole is unusable."""
    text = path.read_text()
    objects: list[UserObject] = []
    errors: list[DocumentError] = []
    loader = _Loader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            origin = f"{path}:{node.start_mark.line + 1}"
            doc = loader.construct_document(node)
            if doc is None:
                continue
            if not isinstance(doc, dict):
                errors.append(DocumentError(origin, "document is not a mapping"))
                continue
            kind, api_version = doc.get("kind"), doc.get("apiVersion")
            if kind not in KINDS or api_version != API_VERSION:
                errors.append(DocumentError(origin, f"skipped: kind {kind!r} of apiVersion {api_version!r} is not "
                                                    f"a Route or Backend of {API_VERSION}"))
                continue
            meta = doc.get("metadata")
            if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
                errors.append(DocumentError(origin, "metadata.name is required"))
                continue
            if not isinstance(meta.get("namespace", ""), str):
                errors.append(DocumentError(origin, "metadata.namespace must be a string"))
                continue
            objects.append(UserObject.from_manifest(doc, origin=origin))
    finally:
        loader.dispose()
    return objects, errors


def load_objects(paths: list[Path]) -> tuple[list[UserObject], list[DocumentError]]:
    """All objects under `paths`, as the server would load them (for `validate`)."""
    objects, errors = [], []
    for root in paths:
        if not root.exists():
            errors.append(DocumentError(str(root), "no such file or directory"))
            continue
        for path in config_files(root):
            try:
                found, problems = parse_file(path)
            except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
                errors.append(DocumentError(str(path), f"unreadable: {exc}"))
                continue
            objects.extend(found)
            errors.extend(problems)
    seen: dict = {}
    for obj in objects:
        if obj.key in seen:
            errors.append(DocumentError(obj.origin, f"{obj.key} is also defined at {seen[obj.key]}"))
        seen.setdefault(obj.key, obj.origin)
    return objects, errors


FileChange = tuple[Path, "list[UserObject] | None", "list[DocumentError] | str"]


class FileSource:
    """Watches `root` (a file or a directory). Reading and parsing happen in a thread; only
    applying the result to the state store runs on the event loop."""

    def __init__(self, root: Path, state: StateStore, *, interval: float = 0.1) -> None:
        self.root = root
        self.state = state
        self.interval = interval
        self._stamps: dict[Path, tuple] = {}
        self._keys: dict[Path, set[ObjectKey]] = {}  # the objects each file defines
        self._file_of: dict[ObjectKey, Path] = {}
        # Every object each file's last good parse defines, including ones skipped because another
        # file defines them first: they take over when that file drops them, as after a restart.
        self._defined: dict[Path, dict[ObjectKey, UserObject]] = {}

    def scan(self) -> None:
        """Loads every file that changed since the last scan and forgets deleted ones."""
        self.apply(self.read_changes())

    def read_changes(self) -> list[FileChange]:
        """(path, objects or None if unreadable, problems) for each file added, changed or gone."""
        current = stamps(self.root)
        changes: list[FileChange] = [(path, [], []) for path in self._stamps.keys() - current.keys()]
        for path, stamp in sorted(current.items()):
            if self._stamps.get(path) != stamp:
                try:
                    objects, errors = parse_file(path)
                    changes.append((path, objects, errors))
                except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
                    changes.append((path, None, str(exc)))
        self._stamps = current
        return changes

    def apply(self, changes: list[FileChange]) -> None:
        released: set[ObjectKey] = set()
        for path, objects, errors in changes:
            if objects is None:
                log.error("%s: cannot be loaded, keeping its last good objects: %s", path, errors)
                continue
            for error in errors:
                log.error("%s", error)
            released |= self._apply_file(path, objects)
        # An object dropped by the file that defined it falls to the next file defining it.
        if orphans := released - self._file_of.keys():
            for path in sorted(self._defined):
                for key in sorted(orphans & self._defined[path].keys() - self._file_of.keys()):
                    obj = self._defined[path][key]
                    self.state.put(obj)
                    self._file_of[key] = path
                    self._keys.setdefault(path, set()).add(key)
                    log.info("%s: %s is now defined here", obj.origin, key)

    def _apply_file(self, path: Path, objects: list[UserObject]) -> set[ObjectKey]:
        """Applies a file's objects; returns the keys it no longer defines."""
        defined: dict[ObjectKey, UserObject] = {}
        for obj in objects:
            if obj.key in defined:
                log.error("%s: %s is defined twice in this file; the later one wins", obj.origin, obj.key)
            defined[obj.key] = obj
        if defined:
            self._defined[path] = defined
        else:
            self._defined.pop(path, None)
        unique: dict[ObjectKey, UserObject] = {}
        for key, obj in defined.items():
            owner = self._file_of.get(key)
            if owner is not None and owner != path:
                log.error("%s: %s is already defined in %s; skipped", obj.origin, key, owner)
                continue
            unique[key] = obj
        released = self._keys.get(path, set()) - unique.keys()
        for key in released:
            self.state.delete(key)
            del self._file_of[key]
        for key, obj in unique.items():
            self.state.put(obj)
            self._file_of[key] = path
        if unique:
            self._keys[path] = set(unique)
            log.info("%s: %d objects loaded", path, len(unique))
        else:
            self._keys.pop(path, None)
            log.info("%s: no objects", path)
        return released

    async def run(self) -> None:
        while True:
            try:
                self.apply(await asyncio.to_thread(self.read_changes))
            except Exception:
                log.exception("scanning %s failed", self.root)
            await asyncio.sleep(self.interval)

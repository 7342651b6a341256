"""The file source: Routes and Backends from a directory (or one file) of multi-document YAML.

Scans are driven by hand (`source.scan()`), so nothing here sleeps on the poll loop, except the
one test of `run()` itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from pathlib import Path

import pytest

from xds_operator.api.objects import API_VERSION, ObjectKey
from xds_operator.sources.files import REWRITE_GRACE_S, FileSource, read_file
from xds_operator.sources.findings import Finding, Severity
from xds_operator.sources.state import StateStore

API = API_VERSION
# Made unreadable by the kernel, root or not: a write-only sysctl, and a directory only its
# owning process may list.
WRITE_ONLY = Path("/proc/sys/vm/compact_memory")
UNLISTABLE = Path("/proc/1/map_files")


def backend(name: str, port: int = 8080, namespace: str = "t") -> str:
    return f"""\
apiVersion: {API}
kind: Backend
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  endpoints: [{{address: 127.0.0.1, port: {port}}}]
"""


def route(name: str, backend_name: str, port: int = 15001, namespace: str = "t") -> str:
    return f"""\
apiVersion: {API}
kind: Route
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  port: {port}
  rules:
  - backends: [{{name: {backend_name}}}]
"""


def docs(*parts: str) -> str:
    return "---\n".join(parts)


def B(name: str, namespace: str = "t") -> ObjectKey:
    return ObjectKey("Backend", namespace, name)


def R(name: str, namespace: str = "t") -> ObjectKey:
    return ObjectKey("Route", namespace, name)


def served(source: FileSource) -> list[tuple]:
    """What a source has put in effect, and from where (generations count the edits it saw)."""
    return [(d.obj.key, d.obj.spec, d.origin) for d in source.definitions()]


def write(path: Path, text: str) -> None:
    """Writes `text` so that the change is always visible to the (mtime, size, inode) poll,
    even when the size stays the same within one mtime tick."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.stat().st_mtime_ns if path.exists() else None
    path.write_text(text)
    if old is not None and path.stat().st_mtime_ns == old:
        os.utime(path, ns=(old + 1_000_000, old + 1_000_000))


@pytest.fixture
def config(tmp_path: Path) -> Path:
    root = tmp_path / "config"
    write(root / "a.yaml", docs(backend("a"), route("a", "a")))  # Backend on line 1, Route on line 7
    write(root / "b.yml", backend("b"))
    write(root / "nested" / "deeper" / "c.yaml", docs(backend("c"), route("c", "c", port=15002)))
    # Ignored: hidden files and directories (editor swap files, ConfigMap ..data), other suffixes.
    write(root / ".hidden.yaml", backend("hidden-file"))
    write(root / ".git" / "x.yaml", backend("hidden-dir"))
    write(root / "notes.txt", backend("txt"))
    write(root / "a.yaml.bak", backend("bak"))
    return root


def test_initial_scan_loads_every_yaml_file_with_origins(config: Path) -> None:
    state = StateStore()
    FileSource(config, state).scan()
    assert set(state.objects) == {B("a"), R("a"), B("b"), B("c"), R("c")}
    assert state.objects[B("a")].origin == f"{config / 'a.yaml'}:1"
    assert state.objects[R("a")].origin == f"{config / 'a.yaml'}:7"
    assert state.objects[B("b")].origin == f"{config / 'b.yml'}:1"
    assert state.objects[R("c")].origin == f"{config / 'nested' / 'deeper' / 'c.yaml'}:7"
    assert state.objects[B("a")].spec == {"endpoints": [{"address": "127.0.0.1", "port": 8080}]}


def test_editing_a_file_updates_only_its_objects(config: Path) -> None:
    state = StateStore()
    source = FileSource(config, state)
    source.scan()
    before = dict(state.objects)

    write(config / "a.yaml", docs(backend("a", port=9090), route("a2", "a")))
    source.scan()
    assert set(state.objects) == {B("a"), R("a2"), B("b"), B("c"), R("c")}  # Route a is gone, a2 is new
    assert state.objects[B("a")].spec["endpoints"][0]["port"] == 9090
    for key in (B("b"), B("c"), R("c")):
        assert state.objects[key] is before[key]  # untouched: not even re-put


def test_deleting_a_file_removes_its_objects(config: Path) -> None:
    state = StateStore()
    source = FileSource(config, state)
    source.scan()
    (config / "nested" / "deeper" / "c.yaml").unlink()
    source.scan()
    assert set(state.objects) == {B("a"), R("a"), B("b")}
    (config / "b.yml").unlink()
    source.scan()
    assert set(state.objects) == {B("a"), R("a")}


def test_a_file_that_stops_parsing_keeps_its_last_good_objects(config: Path, caplog) -> None:
    state = StateStore()
    source = FileSource(config, state)
    source.scan()
    good = dict(state.objects)
    notified: list[int] = []
    state.subscribe(lambda: notified.append(1))

    write(config / "a.yaml", backend("a", port=9090) + "spec: [unclosed\n")  # a YAML syntax error
    with caplog.at_level(logging.ERROR, logger="xds_operator.sources.files"):
        source.scan()
    assert state.objects == good and notified == []
    assert any("a.yaml" in r.getMessage() and "keeping its last good objects" in r.getMessage()
               for r in caplog.records)

    source.scan()  # nothing changed since: not re-read, still the last good objects
    assert state.objects == good

    write(config / "a.yaml", docs(backend("a", port=9191)))  # fixed (and Route a dropped)
    source.scan()
    assert state.objects[B("a")].spec["endpoints"][0]["port"] == 9191
    assert R("a") not in state.objects


def test_unreadable_bytes_keep_the_last_good_objects(config: Path) -> None:
    state = StateStore()
    source = FileSource(config, state)
    source.scan()
    good = dict(state.objects)
    (config / "b.yml").write_bytes(b"\xff\xfe\x00garbage")
    source.scan()
    assert state.objects == good


def test_documents_of_other_kinds_are_skipped_and_the_rest_loads(tmp_path: Path, caplog) -> None:
    config = tmp_path / "config"
    write(config / "mixed.yaml", docs(
        backend("first"),
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa}\nautomountServiceAccountToken: false\n",
        "apiVersion: xds-operator.dev/v2\nkind: Route\nmetadata: {name: future, namespace: t}\nspec: {}\n",
        "just a string\n",
        "",  # an empty document
        f"apiVersion: {API}\nkind: Route\nmetadata: {{namespace: t}}\nspec: {{}}\n",  # no name
        route("last", "first"),
    ))
    state = StateStore()
    with caplog.at_level(logging.INFO, logger="xds_operator.sources.files"):
        FileSource(config, state).scan()
    assert set(state.objects) == {B("first"), R("last")}
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    path = config / "mixed.yaml"
    # Another kind is a note; a version of this API group that does not exist is an error.
    assert (logging.INFO, f"{path}:7:1: note: skipped: v1 ServiceAccount is not read by xds-operator") in messages
    assert (logging.ERROR, f"{path}:12:13: error: apiVersion 'xds-operator.dev/v2' is not served; "
                           "xds-operator.dev's version is v1alpha1") in messages
    assert (logging.ERROR, f"{path}:17:1: error: document is not a mapping (a Kubernetes object)") in messages
    assert (logging.ERROR, f"{path}:22:11: error: metadata.name is required") in messages

    definitions, findings = read_file(str(path))
    assert [d.obj.key for d in definitions] == [B("first"), R("last")]
    assert [f.severity for f in findings] == [Severity.NOTE, Severity.ERROR, Severity.ERROR, Severity.ERROR]


def test_the_same_object_in_two_files_keeps_the_first(tmp_path: Path, caplog) -> None:
    config = tmp_path / "config"
    write(config / "1-first.yaml", backend("shared", port=1111))
    write(config / "2-second.yaml", docs(backend("shared", port=2222), backend("own")))
    state = StateStore()
    source = FileSource(config, state)
    with caplog.at_level(logging.ERROR, logger="xds_operator.sources.files"):
        source.scan()
    assert set(state.objects) == {B("shared"), B("own")}  # the rest of the second file loads
    assert state.objects[B("shared")].spec["endpoints"][0]["port"] == 1111
    assert state.objects[B("shared")].origin == f"{config / '1-first.yaml'}:1"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert f"{config / '2-second.yaml'}:1" in errors[0].getMessage()
    assert "Backend/t/shared is already defined in" in errors[0].getMessage()
    assert str(config / "1-first.yaml") in errors[0].getMessage()

    # Editing the second file does not take the object over either.
    write(config / "2-second.yaml", docs(backend("shared", port=3333), backend("own", port=4444)))
    source.scan()
    assert state.objects[B("shared")].spec["endpoints"][0]["port"] == 1111
    assert state.objects[B("own")].spec["endpoints"][0]["port"] == 4444

    # So does a fresh source (what `validate` runs), the same way.
    fresh = FileSource(config, StateStore())
    fresh.scan()
    assert fresh.findings() == source.findings() == [Finding(
        str(config / "2-second.yaml"), 1, 1, f"Backend/t/shared is already defined in {config / '1-first.yaml'}:1:1, "
        "which is used; this definition is ignored")]


def test_a_duplicate_takes_over_when_the_first_definition_goes(tmp_path: Path) -> None:
    """After the defining file drops the object, the other file's definition applies, as it
    would after a restart (no edit of the second file needed)."""
    config = tmp_path / "config"
    write(config / "1-first.yaml", backend("shared", port=1111))
    write(config / "2-second.yaml", backend("shared", port=2222))
    state = StateStore()
    source = FileSource(config, state)
    source.scan()
    assert state.objects[B("shared")].spec["endpoints"][0]["port"] == 1111

    (config / "1-first.yaml").unlink()
    source.scan()
    assert state.objects[B("shared")].spec["endpoints"][0]["port"] == 2222
    assert state.objects[B("shared")].origin == f"{config / '2-second.yaml'}:1"

    # And back: what is served depends on the files alone, never on their history (else `validate`
    # and a restart could disagree with the running server): the first file takes over again.
    write(config / "1-first.yaml", backend("shared", port=1111))
    source.scan()
    assert state.objects[B("shared")].spec["endpoints"][0]["port"] == 1111
    fresh = FileSource(config, StateStore())
    fresh.scan()
    assert served(fresh) == served(source) and fresh.findings() == source.findings()
    (config / "1-first.yaml").unlink()
    source.scan()
    assert state.objects[B("shared")].spec["endpoints"][0]["port"] == 2222
    write(config / "1-first.yaml", backend("shared", port=1111))
    source.scan()
    (config / "2-second.yaml").unlink()
    source.scan()
    assert state.objects[B("shared")].spec["endpoints"][0]["port"] == 1111
    (config / "1-first.yaml").unlink()
    source.scan()
    assert state.objects == {}


def test_a_single_file_as_the_config_path(tmp_path: Path) -> None:
    path = tmp_path / "only.yaml"
    write(path, docs(backend("x"), route("x", "x")))
    write(tmp_path / "sibling.yaml", backend("sibling"))  # not part of the config
    state = StateStore()
    source = FileSource(path, state)
    source.scan()
    assert set(state.objects) == {B("x"), R("x")}
    write(path, backend("x", port=9999))
    source.scan()
    assert set(state.objects) == {B("x")}
    assert state.objects[B("x")].spec["endpoints"][0]["port"] == 9999
    path.unlink()
    source.scan()
    assert state.objects == {}
    write(path, backend("y"))  # recreated
    source.scan()
    assert set(state.objects) == {B("y")}


def test_a_missing_config_path_is_empty_until_it_appears(tmp_path: Path) -> None:
    state = StateStore()
    source = FileSource(tmp_path / "later", state)
    notified: list[int] = []
    state.subscribe(lambda: notified.append(1))
    source.scan()
    assert state.objects == {} and notified == []
    write(tmp_path / "later" / "x.yaml", backend("x"))
    source.scan()
    assert set(state.objects) == {B("x")}


def test_a_file_being_rewritten_in_place_keeps_its_objects_until_written(config: Path) -> None:
    """write_text, many editors and `cat >` truncate a file, then write it: a scan between the two
    (the watcher's, or the poll's) used to withdraw the file's objects from Envoy until the next
    one, and rebuild everything twice (the tail of the edit -> visible latency)."""
    state = StateStore()
    source = FileSource(config, state)
    source.scan()
    a = config / "a.yaml"
    a.write_text("")  # truncated, not yet written
    # Truncation can leave the mtime of the last write (seen here, kernel 6.18), however long ago.
    last_write = time.time_ns() - 5_000_000_000
    os.utime(a, ns=(last_write, last_write))
    source.scan()
    assert {B("a"), R("a")} <= set(state.objects)
    write(a, docs(backend("a", port=9090), route("a", "a")))  # the write
    source.scan()
    assert state.objects[B("a")].spec == {"endpoints": [{"address": "127.0.0.1", "port": 9090}]}

    # A file emptied for good is applied by a scan (a poll) that still finds it empty later.
    a.write_text("")
    source.scan()
    assert B("a") in state.objects
    time.sleep(REWRITE_GRACE_S)
    source.scan()
    assert B("a") not in state.objects and R("a") not in state.objects
    assert B("b") in state.objects


def test_scans_racing_a_file_rewritten_in_place_never_lose_its_objects(tmp_path: Path) -> None:
    """A writer rewriting a file in place as fast as it can, scans as fast as they can: a scan's
    stat can see the last write and its read the next truncation (judged by the stat's size
    alone, 1,156 scans in 5 s found no object)."""
    config = tmp_path / "config"
    write(config / "b.yaml", backend("b"))
    state = StateStore()
    source = FileSource(config, state)
    source.scan()
    stop = threading.Event()

    def rewrite() -> None:
        port = 1
        while not stop.is_set():
            port = port % 60000 + 1
            (config / "b.yaml").write_text(backend("b", port=port))

    writer = threading.Thread(target=rewrite)
    writer.start()
    lost = 0
    try:
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline:
            source.scan()
            lost += B("b") not in state.objects
    finally:
        stop.set()
        writer.join()
    assert lost == 0


def test_no_change_notified_without_a_change(config: Path) -> None:
    state = StateStore()
    source = FileSource(config, state)
    notified: list[int] = []
    state.subscribe(lambda: notified.append(1))
    source.scan()
    assert len(notified) == 5  # one per object
    notified.clear()
    for _ in range(3):
        source.scan()
    assert notified == []

    # Touching a file (same content, new mtime) re-reads it but changes nothing.
    st = (config / "b.yml").stat()
    os.utime(config / "b.yml", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000))
    source.scan()
    assert notified == []

    # Rewriting a file with identical content: the same.
    write(config / "a.yaml", (config / "a.yaml").read_text())
    source.scan()
    assert notified == []

    # Ignored files changing: nothing either.
    write(config / "notes.txt", "changed")
    write(config / ".hidden.yaml", backend("hidden-file", port=1))
    source.scan()
    assert notified == []

    # A real change: exactly one bump for one changed object.
    write(config / "b.yml", backend("b", port=8181))
    source.scan()
    assert len(notified) == 1


async def test_run_picks_up_changes(config: Path) -> None:
    state = StateStore()
    source = FileSource(config, state, interval=0.05)
    task = asyncio.create_task(source.run())
    try:
        async def until(predicate, what: str) -> None:
            deadline = time.monotonic() + 5
            while not predicate():
                assert time.monotonic() < deadline, f"{what} not seen within 5s"
                await asyncio.sleep(0.02)

        await until(lambda: B("b") in state.objects, "initial load")
        write(config / "b.yml", backend("b", port=7777))
        await until(lambda: state.objects[B("b")].spec["endpoints"][0]["port"] == 7777, "the edit")
        write(config / "new" / "d.yaml", backend("d"))
        await until(lambda: B("d") in state.objects, "a new file in a new directory")
        (config / "a.yaml").unlink()
        await until(lambda: B("a") not in state.objects and R("a") not in state.objects, "the deletion")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def _until(predicate, what: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not seen within {seconds}s"
        await asyncio.sleep(0.01)


async def test_changes_are_seen_through_inotify_without_waiting_for_the_poll(config: Path) -> None:
    """The poll is every 10 minutes here: what is seen within 10 s came through a file event."""
    state = StateStore()
    source = FileSource(config, state, interval=600)
    task = asyncio.create_task(source.run())
    try:
        await _until(lambda: B("b") in state.objects, "initial load")
        await asyncio.sleep(0.2)  # the watch is set up in a thread; give it a moment
        write(config / "b.yml", backend("b", port=7777))
        await _until(lambda: state.objects[B("b")].spec["endpoints"][0]["port"] == 7777, "the edit")
        write(config / "new" / "d.yaml", backend("d"))
        await _until(lambda: B("d") in state.objects, "a new file in a new directory")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_root_that_cannot_be_watched_is_still_polled(tmp_path: Path) -> None:
    root = tmp_path / "later"  # missing at start: nothing to watch
    state = StateStore()
    source = FileSource(root, state, interval=0.05)
    task = asyncio.create_task(source.run())
    try:
        await asyncio.sleep(0.1)
        write(root / "b.yml", backend("b"))
        await _until(lambda: B("b") in state.objects, "a file under a root that appeared after start")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# -- nothing a file contains stops the source ---------------------------------------------------

def broken_backend(name: str, metadata_extra: str = "", spec: str = "{endpoints: [{address: 127.0.0.1, port: 80}]}"
                   ) -> str:
    return f"apiVersion: {API}\nkind: Backend\nmetadata: {{name: {name}, namespace: t{metadata_extra}}}\nspec: {spec}\n"


# The cases: valid YAML that the schema cannot build, or metadata of the wrong type.
MALFORMED = {
    "impossible date in an annotation": broken_backend("a", ", annotations: {released: 2025-02-30}"),
    "date in an annotation": broken_backend("a", ", annotations: {released: 2025-02-28}"),
    "float that is not one": broken_backend("a", spec="{connectTimeout: !!float abc}"),
    "generation that is not a number": broken_backend("a", ", generation: abc"),
    "labels as a list": broken_backend("a", ", labels: [a]"),
    "duplicated key": broken_backend("a", spec="{connectTimeout: 1s, connectTimeout: 2s}"),
    "name that is a list": broken_backend("[a]"),
    "unknown tag": broken_backend("a", spec="!include other.yaml"),
    "recursive alias": broken_backend("a", spec="&loop {endpoints: [*loop]}"),
    "unhashable key": broken_backend("a", spec="{[x]: 1}"),
    "nested too deep": broken_backend("a", spec="[" * 500 + "]" * 500),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_a_malformed_document_stops_nothing_else(config: Path, case: str, caplog) -> None:
    state = StateStore()
    source = FileSource(config, state)
    source.scan()
    write(config / "bad.yaml", docs(MALFORMED[case], backend("after-the-bad-one")))
    with caplog.at_level(logging.ERROR, logger="xds_operator.sources.files"):
        source.scan()
    errors = [r.getMessage() for r in caplog.records]
    assert len(errors) == 1 and errors[0].startswith(f"{config / 'bad.yaml'}:"), errors
    assert not any(r.exc_info for r in caplog.records)  # a clear line, no traceback
    assert B("after-the-bad-one") in state.objects  # the rest of the file loads...
    assert state.problems["files"][0].severity is Severity.ERROR

    write(config / "new.yaml", backend("new"))  # ...and so do changes to other files
    (config / "b.yml").unlink()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="xds_operator.sources.files"):
        source.scan()
    assert B("new") in state.objects and B("b") not in state.objects
    assert not any("bad.yaml" in r.getMessage() for r in caplog.records)  # not read again: it did not change
    caplog.clear()
    source.scan()
    assert caplog.records == []


def test_an_annotation_that_yaml_reads_as_a_date_gets_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    for value in ("2025-02-30", "2025-02-28"):  # the first one PyYAML cannot even build
        write(path, broken_backend("a", f", annotations: {{released: {value}}}"))
        _, findings = read_file(str(path))
        assert [str(f) for f in findings] == [
            f"{path}:3:59: error: Backend/t/a: metadata.annotations.released must be a string, not a date "
            f"('{value}') (quote it: released: \"{value}\")"]


def test_a_broken_document_keeps_its_last_good_definition(config: Path) -> None:
    state = StateStore()
    source = FileSource(config, state)
    source.scan()
    good = state.objects[B("a")]
    write(config / "a.yaml", docs(broken_backend("a", ", labels: [oops]"), route("a", "a")))
    source.scan()
    assert state.objects[B("a")] is good  # the document says which object it is: that one stays
    assert [f.message for f in state.problems["files"]] == [
        "Backend/t/a: metadata.labels must be a map of strings, not a list; keeping its last good definition"]
    write(config / "a.yaml", docs(backend("a", port=7070), route("a", "a")))
    source.scan()
    assert state.objects[B("a")].spec["endpoints"][0]["port"] == 7070
    assert state.problems["files"] == ()


def test_garbage_binary_and_unreadable_files_keep_their_last_good_objects(config: Path) -> None:
    state = StateStore()
    source = FileSource(config, state)
    source.scan()
    good = dict(state.objects)
    b, a = config / "b.yml", config / "a.yaml"
    for content in (b"{{{{ ][ : :", b"\x7fELF\x02\x01\x01\x00\x00\x00", b"spec: \xff\xfe", b"a: 1\n\x00\n",
                    b"- [\n" * 10_000):
        b.write_bytes(content)
        source.scan()
        assert state.objects == good, content
        (problem,) = state.problems["files"]
        assert problem.path == str(b) and problem.line >= 1 and "keeping its last good objects (1)" in problem.message
    # A file nobody can read (root included): a write-only sysctl behind a symlink.
    a.unlink()
    a.symlink_to(WRITE_ONLY)
    source.scan()
    assert state.objects == good
    assert state.problems["files"][0].message == "cannot be read: Permission denied; keeping its last good objects (2)"
    a.unlink()
    write(a, backend("a"))
    write(b, backend("b", port=1))
    source.scan()
    assert state.problems["files"] == () and state.objects[B("b")].spec["endpoints"][0]["port"] == 1


def test_a_chmod_alone_gets_a_file_read_again(tmp_path: Path, caplog) -> None:
    """The stamp includes the mode: a file made readable again (a chmod, no new mtime) is read."""
    path = tmp_path / "x.yaml"
    write(path, backend("x"))
    source = FileSource(path, StateStore())
    source.scan()
    mtime = path.stat().st_mtime_ns
    path.chmod(0o600)
    assert path.stat().st_mtime_ns == mtime
    with caplog.at_level(logging.INFO, logger="xds_operator.sources.files"):
        source.scan()
    assert [r.getMessage() for r in caplog.records] == [f"{path}: 1 objects loaded"]


def test_a_directory_that_vanishes_or_cannot_be_listed(config: Path) -> None:
    state = StateStore()
    source = FileSource(config, state)
    source.scan()
    nested = config / "nested"
    # Cannot be listed (even by root): its files keep what they had.
    moved = config.parent / "moved"
    nested.rename(moved)
    nested.symlink_to(UNLISTABLE)
    source.scan()
    assert {B("c"), R("c")} <= state.objects.keys()
    assert [f.message for f in state.problems["files"]] == ["cannot be listed: Permission denied"]
    # Gone: its objects go too.
    nested.unlink()
    source.scan()
    assert set(state.objects) == {B("a"), R("a"), B("b")} and state.problems["files"] == ()
    # The whole config directory gone: everything goes, and that is a problem to show.
    for path in sorted(config.rglob("*"), reverse=True):
        path.unlink() if not path.is_dir() else path.rmdir()
    config.rmdir()
    source.scan()
    assert state.objects == {}
    assert [str(f) for f in state.problems["files"]] == [f"{config}: error: no such file or directory"]


# -- generations --------------------------------------------------------------------------------

def test_generation_counts_spec_changes(config: Path) -> None:
    state = StateStore()
    source = FileSource(config, state)
    source.scan()
    assert state.objects[B("b")].generation == 1
    write(config / "b.yml", backend("b", port=1))
    source.scan()
    assert state.objects[B("b")].generation == 2
    notified: list[int] = []
    state.subscribe(lambda: notified.append(1))
    # Unchanged: the same content re-read, a touch, a comment that moves it down a line.
    write(config / "b.yml", backend("b", port=1))
    source.scan()
    st = (config / "b.yml").stat()
    os.utime(config / "b.yml", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000))
    source.scan()
    assert state.objects[B("b")].generation == 2 and notified == []
    write(config / "b.yml", "# moved\n" + backend("b", port=1))
    source.scan()
    assert state.objects[B("b")].generation == 2 and state.objects[B("b")].origin.endswith("b.yml:2")
    # A generation written in the file is the server's business, not the user's.
    write(config / "b.yml", broken_backend("b", ", generation: 41", spec="{endpoints: [{address: 127.0.0.1, port: 3}]}"))
    source.scan()
    assert state.objects[B("b")].generation == 3
    write(config / "b.yml", backend("b", port=2))
    source.scan()
    assert state.objects[B("b")].generation == 4


def test_the_build_reports_the_last_valid_generation(config: Path) -> None:
    from xds_operator.ir.builder import Builder

    state = StateStore()
    source = FileSource(config, state)
    source.scan()
    builder = Builder()
    write(config / "b.yml", backend("b", port=1))
    source.scan()
    builder.build(state)
    write(config / "b.yml", backend("b", port=0))  # invalid
    source.scan()
    status = builder.build(state).statuses[B("b")]
    assert status.generation == 3
    assert status.conditions[0].message.endswith("(still serving the last valid generation 2)")


# -- duplicates ---------------------------------------------------------------------------------

def test_duplicates_within_a_file_keep_the_first_and_are_reported_once(tmp_path: Path, caplog) -> None:
    config = tmp_path / "config"
    write(config / "a.yaml", docs(backend("x", port=1), backend("y"), backend("x", port=2)))
    state = StateStore()
    source = FileSource(config, state)
    with caplog.at_level(logging.ERROR, logger="xds_operator.sources.files"):
        source.scan()
        write(config / "a.yaml", docs(backend("x", port=1), backend("y", port=9), backend("x", port=2)))
        source.scan()
    assert state.objects[B("x")].spec["endpoints"][0]["port"] == 1
    expected = f"{config / 'a.yaml'}:13:1: error: Backend/t/x is already defined in {config / 'a.yaml'}:1:1, " \
               "which is used; this definition is ignored"
    assert [r.getMessage() for r in caplog.records] == [expected]  # once, though the file was read twice
    assert [str(f) for f in state.problems["files"]] == [expected]


# -- Services and EndpointSlices ----------------------------------------------------------------

SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: t}
spec:
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc
  namespace: t
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [10.0.0.1]
- addresses: [10.0.0.2]
  conditions: {ready: false}
"""

SERVICE_BACKEND = f"""\
apiVersion: {API}
kind: Backend
metadata: {{name: web, namespace: t}}
spec:
  service: {{name: web, port: http}}
"""


def test_services_and_endpoint_slices_in_files_resolve_backends(tmp_path: Path) -> None:
    from xds_operator.ir.builder import Builder
    from xds_operator.ir.ir import Endpoint, cluster_name

    config = tmp_path / "config"
    write(config / "backend.yaml", SERVICE_BACKEND)
    state = StateStore()
    source = FileSource(config, state)
    source.scan()
    builder = Builder()
    assert builder.build(state).statuses[B("web")].conditions[1].reason == "ServiceNotFound"

    write(config / "service.yaml", SERVICE)
    source.scan()
    result = builder.build(state)
    assert result.statuses[B("web")].conditions[1].reason == "ResolvedRefs"
    assert result.clusters[cluster_name(B("web"))].endpoints == (Endpoint("10.0.0.1", 8080),)

    # A Service that would trip endpoint resolution is refused at its field, and keeps its last good version.
    write(config / "service.yaml", SERVICE.replace("port: 80}", "port: eighty}"))
    source.scan()
    assert [str(f) for f in state.problems["files"]] == [
        f"{config / 'service.yaml'}:5:24: error: Service/t/web: spec.ports[0].port: must be an integer, not a string; "
        "keeping its last good definition"]
    assert builder.build(state).clusters[cluster_name(B("web"))].endpoints == (Endpoint("10.0.0.1", 8080),)

    (config / "service.yaml").unlink()
    source.scan()
    assert state.services == {} and state.endpoint_slices == {}

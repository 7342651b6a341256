"""The file source: Routes and Backends from a directory (or one file) of multi-document YAML.

Scans are driven by hand (`source.scan()`), so nothing here sleeps on the poll loop, except the
one test of `run()` itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import pytest

from xds_operator.api.objects import ObjectKey
from xds_operator.sources.files import FileSource, read_file
from xds_operator.sources.findings import Finding, Severity
from xds_operator.sources.state import StateStore

API = "xds-operator.dev/v1alpha1"


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
    revision = state.revision

    write(config / "a.yaml", backend("a", port=9090) + "spec: [unclosed\n")  # a YAML syntax error
    with caplog.at_level(logging.ERROR, logger="xds_operator.sources.files"):
        source.scan()
    assert state.objects == good and state.revision == revision
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
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata: {a: b}\n",
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
    assert (logging.INFO, f"{path}:7:1: note: skipped: v1 ConfigMap is not read by xds-operator") in messages
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
    source.scan()
    assert state.objects == {} and state.revision == 0
    write(tmp_path / "later" / "x.yaml", backend("x"))
    source.scan()
    assert set(state.objects) == {B("x")}


def test_no_revision_change_without_a_change(config: Path) -> None:
    state = StateStore()
    source = FileSource(config, state)
    source.scan()
    revision = state.revision
    assert revision == 5  # one per object
    notified = []
    state.subscribe(lambda: notified.append(state.revision))
    for _ in range(3):
        source.scan()
    assert state.revision == revision and notified == []

    # Touching a file (same content, new mtime) re-reads it but changes nothing.
    st = (config / "b.yml").stat()
    os.utime(config / "b.yml", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000))
    source.scan()
    assert state.revision == revision and notified == []

    # Rewriting a file with identical content: the same.
    write(config / "a.yaml", (config / "a.yaml").read_text())
    source.scan()
    assert state.revision == revision and notified == []

    # Ignored files changing: nothing either.
    write(config / "notes.txt", "changed")
    write(config / ".hidden.yaml", backend("hidden-file", port=1))
    source.scan()
    assert state.revision == revision and notified == []

    # A real change: exactly one bump for one changed object.
    write(config / "b.yml", backend("b", port=8181))
    source.scan()
    assert state.revision == revision + 1 and len(notified) == 1


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

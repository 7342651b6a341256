"""Re-reading a multi-document file reuses the definitions of unchanged documents, and gives
exactly what a fresh read gives (definitions, positions, findings)."""

from __future__ import annotations

from pathlib import Path

import pytest

from xds_operator.sources.files import read_documents, read_file
from xds_operator.sources.yamldocs import split_documents

BACKEND = """\
apiVersion: xds-operator.dev/v1alpha1
kind: Backend
metadata: {{name: b{i}, namespace: ns}}
spec:
  endpoints: [{{address: 10.0.0.{i}, port: {port}}}]
"""


def stream(*docs: str) -> str:
    return "---\n".join(docs)


def backends(n: int, port: int = 80, edited: int | None = None) -> list[str]:
    return [BACKEND.format(i=i, port=port + 1 if i == edited else port) for i in range(n)]


def same_as_fresh(path: Path, cache: dict, previous: list) -> tuple[list, dict]:
    definitions, findings, cache = read_documents(str(path), previous, cache)
    fresh_definitions, fresh_findings = read_file(str(path), previous)
    assert [(d.obj, d.position, d.index, d.origin) for d in definitions] == \
        [(d.obj, d.position, d.index, d.origin) for d in fresh_definitions]
    assert findings == fresh_findings
    return definitions, cache


def test_one_document_edited_is_the_only_one_parsed_again(tmp_path: Path) -> None:
    path = tmp_path / "all.yaml"
    path.write_text(stream(*backends(50)))
    first, cache = same_as_fresh(path, {}, [])
    path.write_text(stream(*backends(50, edited=20)))
    second, cache = same_as_fresh(path, cache, first)
    reused = [a is b for a, b in zip(first, second, strict=False)]
    assert reused == [i != 20 for i in range(50)]
    assert second[20].obj.spec["endpoints"][0]["port"] == 81


@pytest.mark.parametrize("edit", [
    lambda docs: ["# a comment\n# another\n", *docs],  # every later document moves down two lines
    lambda docs: docs[:10] + docs[11:],  # a document removed
    lambda docs: [*docs[:5], "\n", *docs[5:]],  # an empty document
    lambda docs: [*docs[:3], "kind: [unclosed\n", *docs[4:]],  # a broken document
    lambda docs: [*docs[:3], docs[3].replace("endpoints", "endpoints: []\n  endpoints"), *docs[4:]],  # key twice
    lambda docs: [docs[0] + "text: |\n  ---\n  --- not a marker: indented\n", *docs[1:]],
    lambda docs: ["%YAML 1.1\n" + docs[0], *docs[1:]],  # a directive: read whole
    lambda docs: [d + "...\n" for d in docs],  # end markers: read whole
    lambda docs: ["--- # a marker with a comment\n" + docs[0], *docs[1:]],
])
def test_edits_give_what_a_fresh_read_gives(tmp_path: Path, edit) -> None:
    path = tmp_path / "all.yaml"
    docs = backends(20)
    path.write_text(stream(*docs))
    first, cache = same_as_fresh(path, {}, [])
    path.write_text(stream(*edit(docs)))
    second, cache = same_as_fresh(path, cache, first)
    path.write_text(stream(*docs))  # and back
    same_as_fresh(path, cache, second)


def test_split_documents_cuts_only_at_markers_at_the_start_of_a_line() -> None:
    text = "a: 1\n---\nb: |\n  ---\n--- # c\nc: 3\n---x: 4\n"
    assert split_documents(text) == [(0, "a: 1\n"), (1, "---\nb: |\n  ---\n"), (4, "--- # c\nc: 3\n---x: 4\n")]
    assert split_documents("%YAML 1.1\n---\na: 1\n") is None
    assert split_documents("a: 1\r\n---\r\nb: 2\r\n") is None
    assert split_documents("---\na: 1\n") == [(0, "---\na: 1\n")]

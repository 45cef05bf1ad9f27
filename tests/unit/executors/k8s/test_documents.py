"""Reading manifests: JSON or YAML detected, several documents, and nothing unsafe gets through."""

from __future__ import annotations

import time

import pytest

from executors.k8s.documents import MAX_MANIFEST_BYTES, ManifestError, check_object, parse_manifests

CM = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: %s}\n"


def test_yaml_documents_in_order_skipping_empty_ones_and_unpacking_lists() -> None:
    text = "# only a comment\n---\n" + CM % "a" + "---\n---\n"
    text += "apiVersion: v1\nkind: List\nitems:\n- " + "\n  ".join((CM % "b").splitlines()) + "\n"
    assert [o["metadata"]["name"] for o in parse_manifests(text)] == ["a", "b"]


def test_json_object_or_array_is_detected() -> None:
    assert (
        parse_manifests('{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "j"}}')[0]["kind"]
        == "ConfigMap"
    )
    array = '[{"kind": "A", "apiVersion": "v1"}, {"kind": "B", "apiVersion": "v1"}]'
    assert [o["kind"] for o in parse_manifests(array)] == ["A", "B"]
    with pytest.raises(ManifestError, match=r"command: not valid JSON: Expecting .* at line 1"):
        parse_manifests('{"kind": ')


def test_dates_stay_strings_and_merge_keys_work() -> None:
    text = "base: &b {x: 1}\ndata:\n  <<: *b\n  day: 2024-01-01\n"
    assert parse_manifests(text)[0]["data"] == {"x": 1, "day": "2024-01-01"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: !!python/object/apply:os.system ['true']", "could not determine a constructor"),
        ("a: 1\nb: 2\na: 3\n", "duplicate key 'a' at line 3"),
        ('{"a": 1, "a": 2}', "duplicate key 'a'"),
        ('{"a": NaN}', "NaN is not a JSON number"),
        ("a: .inf\n", "is not a number Kubernetes accepts"),
        ("a: !!binary aGk=\n", "unsupported YAML value of type bytes"),
        ("1: one\n", "map keys must be strings"),
        ("a: &x [*x]\n", "refers to itself"),
        ("- just\n- a list\n", "document 1: expected a Kubernetes object"),
        ("a: [1\n", "not valid YAML"),
    ],
)
def test_unsafe_or_broken_input_is_refused(text: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_manifests(text)


def test_an_alias_bomb_is_refused_without_expanding_it() -> None:
    lines = ["a: &a [" + ", ".join(["lol"] * 10) + "]"]
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    started = time.perf_counter()
    with pytest.raises(ManifestError, match="alias bomb"):
        parse_manifests("\n".join(lines))  # 10^9 values once expanded, from under 1 KiB
    assert time.perf_counter() - started < 1.0


def test_size_and_depth_caps() -> None:
    with pytest.raises(ManifestError, match="larger than 4 MiB"):
        parse_manifests("a: " + "x" * MAX_MANIFEST_BYTES)
    with pytest.raises(ManifestError, match="nested deeper than 200 levels"):
        parse_manifests("a: " + "[" * 300 + "]" * 300)


def test_objects_must_name_what_they_are() -> None:
    with pytest.raises(ManifestError, match=r"command: object 2: kind is required"):
        check_object({"apiVersion": "v1"}, 2)
    with pytest.raises(ManifestError, match=r"object 1 \(Pod\): metadata.name is required"):
        check_object({"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "p-"}}, 1)
    check_object({"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "p-"}}, 1, named=False)
    with pytest.raises(ManifestError, match=r"metadata.namespace must be a non-empty string"):
        check_object({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": 3}}, 1)

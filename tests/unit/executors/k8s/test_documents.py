"""Reading manifests: JSON or YAML detected, several documents, and nothing unsafe gets through."""

from __future__ import annotations

import time

import pytest

from executors.k8s.documents import (
    MAX_EXPANDED_BYTES,
    MAX_MANIFEST_BYTES,
    ManifestError,
    check_object,
    parse_manifests,
)

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


def test_json_that_does_not_parse_as_json_is_read_as_the_yaml_it_is() -> None:
    several = '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}\n---\n'
    several += '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}}\n'
    assert [o["metadata"]["name"] for o in parse_manifests(several)] == ["a", "b"]
    flow = parse_manifests("{apiVersion: v1, kind: ConfigMap, metadata: {name: a}, data: {day: 2024-01-01}}")
    assert flow == [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"day": "2024-01-01"}}]
    assert [o["kind"] for o in parse_manifests("[{apiVersion: v1, kind: A}, {apiVersion: v1, kind: B}]")] == ["A", "B"]


def test_json_refused_as_json_is_not_retried_as_yaml() -> None:
    # Both are fine YAML (`NaN` a string there): the author wrote JSON, and JSON refuses them.
    with pytest.raises(ManifestError, match="NaN is not a JSON number"):
        parse_manifests('{"a": NaN}')
    with pytest.raises(ManifestError, match=r"not valid JSON: duplicate key 'a'"):
        parse_manifests('{"a": 1, "a": 2}')


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


LONG = "x" * (3 * 1024 * 1024)


@pytest.mark.parametrize(
    ("anchor", "reference"),
    [
        (f"s: &s {LONG}\n", "*s"),  # the string itself, repeated in a list
        (f"m: &m {{data: {LONG}}}\n", "*m"),  # a map holding it
        (f"k: &k {{? {LONG} : 1}}\n", "*k"),  # a map keyed by it (explicit `?`: simple keys stop at 1024)
    ],
    ids=["string", "in-a-map", "as-a-key"],
)
def test_one_long_string_referenced_many_times_is_refused(anchor: str, reference: str) -> None:
    text = anchor + "l: [" + ", ".join([reference] * 200_000) + "]\n"
    assert len(text) < MAX_MANIFEST_BYTES  # 3.8 MiB of text, ~600 GiB once expanded into JSON
    started = time.perf_counter()
    with pytest.raises(ManifestError, match=f"more than {MAX_EXPANDED_BYTES // 2**20} MiB of text once YAML aliases"):
        parse_manifests(text)
    assert time.perf_counter() - started < 5.0  # measured, never expanded


def test_non_ascii_text_counts_its_utf8_bytes() -> None:
    word = "é" * (1024 * 1024)  # 1 Mi characters, 2 MiB of UTF-8
    uses = MAX_EXPANDED_BYTES // (2 * 1024 * 1024) - 1  # 14 MiB (7 Mi characters): under the cap
    ok = f"s: &s {word}\nl: [" + ", ".join(["*s"] * (uses - 1)) + "]\n"
    assert len(parse_manifests(ok)[0]["l"]) == uses - 1
    with pytest.raises(ManifestError, match="of text once YAML aliases"):
        parse_manifests(ok.replace("*s]", "*s, *s]"))  # 16 MiB and a little: over, at 8 Mi characters


def test_aliases_within_the_byte_budget_are_fine() -> None:
    block = "x" * (1024 * 1024)
    text = f"s: &s {block}\nl: [" + ", ".join(["*s"] * 10) + "]\n"  # 11 MiB expanded, under the cap
    assert len(parse_manifests(text)[0]["l"]) == 10


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

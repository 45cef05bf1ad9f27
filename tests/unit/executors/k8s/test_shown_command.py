"""How the API shows a k8s task's command: a Secret's values masked, everything else as it was sent."""

from __future__ import annotations

import yaml

from executors.registry import shown_command

SECRET = "apiVersion: v1\nkind: Secret\nmetadata: {name: creds}\nstringData: {password: hunter2}\n"
CONFIG = "# mentions a Secret in a comment only\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"


def test_a_secrets_values_are_masked_and_the_other_documents_kept() -> None:
    shown = list(yaml.safe_load_all(shown_command("k8s", SECRET + "---\n" + CONFIG)))
    assert shown[0]["stringData"] == {"password": "******"}
    assert shown[1] == {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}
    assert "hunter2" not in shown_command("k8s", SECRET)


def test_commands_without_a_secret_object_are_shown_exactly_as_sent() -> None:
    assert shown_command("k8s", CONFIG) == CONFIG
    assert shown_command("shell", "echo Secret hunter2") == "echo Secret hunter2"
    assert shown_command("no-such-type", SECRET) == SECRET  # a type no longer installed: nothing to parse with


def test_a_secret_of_another_api_group_is_not_taken_for_a_core_secret() -> None:
    other = "apiVersion: example.com/v1\nkind: Secret\nmetadata: {name: x}\nspec: {value: 1}\n"
    assert shown_command("k8s", other) == other

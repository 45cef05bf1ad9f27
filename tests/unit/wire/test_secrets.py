"""Secrets in params and env never leave the cloud in clear."""

from typing import Any

from wire.secrets import MASK, mask_secrets, mask_text


def test_secret_keys_are_masked_at_any_depth() -> None:
    params: dict[str, Any] = {
        "target": {"host": "db", "user": "root", "password": "pw"},
        "headers": {"Authorization": "Bearer t", "Accept": "json"},
        "api_key": "k",
        "list": [{"token": "x", "n": 1}],
        "empty_password": "",
    }
    masked = mask_secrets(params)
    assert masked["target"] == {"host": "db", "user": "root", "password": MASK}
    assert masked["headers"] == {"Authorization": MASK, "Accept": "json"}
    assert masked["api_key"] == MASK
    assert masked["list"] == [{"token": MASK, "n": 1}]
    assert masked["empty_password"] == ""  # nothing to hide; showing it empty helps debugging
    assert params["target"]["password"] == "pw"  # the input is not modified


def test_passwords_inside_urls_are_masked() -> None:
    assert mask_text("mysql://app:s3cr3t@db:3306/x") == f"mysql://app:{MASK}@db:3306/x"
    assert mask_text("see http://example.com/a:b") == "see http://example.com/a:b"

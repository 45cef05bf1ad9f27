"""The agent keeps the agent token it received, privately, for the cloud and agent id it was given for."""

from __future__ import annotations

import stat
from pathlib import Path

from agent.identity import Identity


def test_a_received_token_is_kept_0600_and_used_first_after_a_restart(tmp_path: Path) -> None:
    first = Identity(tmp_path, "http://cloud:8080", "web-1", "tgr_registration")
    assert first.first_token() == "tgr_registration" and not first.is_agent_token
    first.save("tga_mine")
    assert stat.S_IMODE(first.path.stat().st_mode) == 0o600
    again = Identity(tmp_path, "http://cloud:8080", "web-1", "tgr_registration")
    assert again.first_token() == "tga_mine"
    assert again.can_fall_back("tga_mine") and not again.can_fall_back("tgr_registration")


def test_a_token_saved_for_another_agent_id_is_not_used_a_new_server_url_keeps_it(tmp_path: Path) -> None:
    Identity(tmp_path, "http://cloud:8080", "web-1", "tgr_x").save("tga_mine")
    assert Identity(tmp_path, "http://cloud:8080", "web-2", "tgr_x").first_token() == "tgr_x"
    assert Identity(tmp_path, "http://lb.example:80", "web-1", "tgr_x").first_token() == "tga_mine"


def test_a_refused_token_is_forgotten_and_a_damaged_file_ignored(tmp_path: Path) -> None:
    ident = Identity(tmp_path, "s", "a", "tgr_x")
    ident.save("tga_old")
    ident.forget()
    assert not ident.path.exists() and Identity(tmp_path, "s", "a", "tgr_x").first_token() == "tgr_x"
    ident.path.write_text("{not json")
    assert Identity(tmp_path, "s", "a", "tgr_x").first_token() == "tgr_x"
    ident.path.write_text('{"server": "s", "agent_id": "a", "agent_token": "not-an-agent-token"}')
    assert Identity(tmp_path, "s", "a", "tgr_x").first_token() == "tgr_x"


def test_a_configured_agent_token_is_used_as_is(tmp_path: Path) -> None:
    pool = Identity(tmp_path, "s", "a", "tga_shared")
    assert pool.is_agent_token and pool.first_token() == "tga_shared" and not pool.can_fall_back("tga_shared")

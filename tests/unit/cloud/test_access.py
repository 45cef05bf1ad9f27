"""Scope checks of a token: deny by default, globs and labels for agents, types, actions, admin."""

from __future__ import annotations

import pytest

from cloud.access import ADMIN, Principal
from cloud.services.errors import Forbidden
from wire.credentials import Action, Scope, TokenCreate, TokenKind


def _api(**scope: object) -> Principal:
    return Principal(kind=TokenKind.api, name="ci", scope=Scope.model_validate(scope))


def test_a_token_reaches_only_the_agents_types_and_actions_it_names() -> None:
    ci = _api(agents=["web-*", "db-1"], types=["shell", "file"], can=["create", "read"])
    ci.require(Action.create, agent_id="web-7", type_name="shell")
    ci.require(Action.read, agent_id="db-1", type_name="file")
    with pytest.raises(Forbidden, match="does not reach agent 'db-2'"):
        ci.require(Action.create, agent_id="db-2", type_name="shell")
    with pytest.raises(Forbidden, match="does not reach 'python' tasks"):
        ci.require(Action.create, agent_id="web-1", type_name="python")
    with pytest.raises(Forbidden, match="may not cancel"):
        ci.require(Action.cancel, agent_id="web-1", type_name="shell")
    assert not ci.all_agents and not ci.all_types and not ci.is_admin


def test_globs_match_whole_ids_and_case() -> None:
    ci = _api(agents=["web-*"], types=["*"], can=["read"])
    assert ci.reaches_agent("web-") and ci.reaches_agent("web-a-b")
    assert not ci.reaches_agent("WEB-1") and not ci.reaches_agent("xweb-1")


def test_labels_reach_agents_carrying_all_of_them() -> None:
    prod = _api(labels={"env": "prod", "team": "a"}, types=["*"], can=["read"])
    assert prod.reaches_agent("x", {"env": "prod", "team": "a", "zone": "1"})
    assert not prod.reaches_agent("x", {"env": "prod"})
    assert not prod.reaches_agent("x", None)
    assert not _api(types=["*"], can=["read"]).reaches_agent("x", {"env": "prod"})  # no labels: nothing


def test_an_empty_scope_denies_everything() -> None:
    nothing = Principal(kind=TokenKind.api, name="empty")
    for action in Action:
        assert not nothing.may(action)
    assert not nothing.reaches_agent("a", {}) and not nothing.reaches_type("shell")


def test_admin_reaches_everything() -> None:
    for admin in (ADMIN, _api(can=["admin"])):
        admin.require(Action.delete, agent_id="any", type_name="mysql")
        admin.require_admin()
        assert admin.all_agents and admin.all_types
    with pytest.raises(Forbidden, match="not an admin"):
        _api(agents=["*"], types=["*"], can=list(Action)[:-1]).require_admin()


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"name": "x"}, "can: name at least one action"),
        ({"name": "x", "can": ["read"], "types": ["*"]}, "agents: a token acting on tasks needs agents or labels"),
        ({"name": "x", "can": ["read"], "agents": ["*"]}, "types: a token acting on tasks needs task types"),
        ({"name": "x", "kind": "registration", "can": ["read"]}, "a registration token only registers agents"),
        ({"name": "x", "can": ["files:read"], "single_use": True}, "only registration tokens can be single-use"),
    ],
)
def test_token_requests_that_cannot_be_meant_are_refused(body: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        TokenCreate.model_validate(body)


def test_a_files_only_token_needs_no_agents_and_a_registration_token_defaults_to_every_id() -> None:
    assert TokenCreate.model_validate({"name": "x", "can": ["files:read"]}).scope().agents == []
    assert TokenCreate.model_validate({"name": "r", "kind": "registration"}).scope().agents == ["*"]

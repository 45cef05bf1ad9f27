"""GET /api/v1/tasks on a long list: the `after` cursor pages through it in the same order as `page`, the
total is counted up to TIANGONG_LIST_COUNT_LIMIT and says when it is only a lower bound."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import closing
from typing import Any

from tests.e2e.harness import Cloud


def listing(cloud: Cloud, **params: Any) -> dict[str, Any]:
    r = cloud.http.get("/api/v1/tasks", params=params)
    assert r.status_code == 200, r.text
    return dict(r.json())


def ids(page: dict[str, Any]) -> list[str]:
    return [t["id"] for t in page["list"]]


def test_after_pages_like_page_and_the_total_is_capped(make_cloud: Callable[..., Any], request: Any) -> None:
    cloud: Cloud = make_cloud(list_count_limit=5)
    with closing(cloud.scripted(request.node.name, executors=["shell"])) as agent:
        agent_id = agent.headers["X-Agent-Id"]
    made = [cloud.create(agent_id=agent_id, type="shell", command=f"echo {i}").json()["id"] for i in range(8)]
    newest_first = made[::-1]

    by_page = [ids(listing(cloud, agent_id=agent_id, page=p, page_size=3)) for p in (1, 2, 3)]
    assert [t for page in by_page for t in page] == newest_first

    by_cursor, after = [], None
    while True:
        page = ids(listing(cloud, agent_id=agent_id, page_size=3, **({"after": after} if after else {})))
        if not page:
            break
        by_cursor.append(page)
        after = page[-1]
    assert by_cursor == by_page

    first = listing(cloud, agent_id=agent_id, page_size=3)
    assert (first["total"], first["total_exact"]) == (5, False)  # at least 5: the count stopped there
    last = listing(cloud, agent_id=agent_id, page=3, page_size=3)
    assert (last["total"], last["total_exact"]) == (8, False)  # never below what the page itself shows
    few = listing(cloud, agent_id=agent_id, q="echo 7")
    assert (few["total"], few["total_exact"]) == (1, True)


def test_after_a_deleted_task_goes_on_from_where_it_was_and_a_bad_cursor_is_a_400(
    make_cloud: Callable[..., Any], request: Any
) -> None:
    cloud: Cloud = make_cloud()
    with closing(cloud.scripted(request.node.name, executors=["shell"])) as agent:
        agent_id = agent.headers["X-Agent-Id"]
    made = [cloud.create(agent_id=agent_id, type="shell", command="true").json()["id"] for _ in range(4)]
    assert cloud.http.post(f"/api/v1/tasks/{made[2]}/cancel").status_code == 200
    assert cloud.http.delete(f"/api/v1/tasks/{made[2]}").status_code == 204
    assert ids(listing(cloud, agent_id=agent_id, after=made[2])) == [made[1], made[0]]
    r = cloud.http.get("/api/v1/tasks", params={"after": "file-3"})
    assert r.status_code == 400
    assert r.json()["error"].startswith("after: ")

"""docs/architecture.md's "new task type" recipe, followed to the letter: its code and its entry point,
installed as a package, give a type that a real cloud validates and a real agent runs."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

from tests.e2e.harness import ROOT, Cloud, cloud_env

DOC = ROOT / "docs" / "architecture.md"


def _recipe() -> tuple[str, dict[str, str]]:
    section = DOC.read_text().split("## A new task type", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    toml = re.search(r"```toml\n(.*?)```", section, re.S)
    assert code and toml, "the recipe has a python block and a toml block"
    points = tomllib.loads(toml.group(1))["project"]["entry-points"]["tiangong.executors"]
    return code.group(1), dict(points)


def _install(site: Path, code: str, points: dict[str, str]) -> None:
    """What `pip install` of the package leaves: its module and a dist-info naming the entry point."""
    (name,) = points
    module, _, _ = points[name].partition(":")
    path = site.joinpath(*module.split(".")).with_suffix(".py")
    path.parent.mkdir(parents=True)
    (path.parent / "__init__.py").write_text("")
    path.write_text(code)
    info = site / "my_package-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-package\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[tiangong.executors]\n{name} = {points[name]}\n")


def test_the_new_task_type_recipe_gives_a_type_the_cloud_validates_and_an_agent_runs(tmp_path: Path) -> None:
    code, points = _recipe()
    assert list(points) == ["wordcount"]
    site = tmp_path / "site"
    _install(site, code, points)
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    cloud = Cloud(tmp_path / "cloud", cloud_env(PYTHONPATH=path), process=True).start()
    try:
        cloud.agent("local")
        task = cloud.run(type="wordcount", command="a bb ccc dddd", params={"min_length": 2})
        assert (task["status"], task["result"], task["data"]) == ("success", "3", {"words": 3})
        assert [line["message"] for line in cloud.logs(task["id"]) if line["stream"] == "stdout"] == ["3 words"]
        bad = cloud.create(type="wordcount", command="a", params={"min_lenght": 2})
        assert bad.status_code == 400
        assert "params.min_lenght" in bad.json()["error"]
    finally:
        cloud.close()

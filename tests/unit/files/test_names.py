"""Upload names never carry a path, a `..`, or control characters."""

import pytest

from files.names import clean_name


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("migration.sql", "migration.sql"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\a.sql", "a.sql"),
        ("..", "file"),
        ("", "file"),
        (None, "file"),
        ("a\x00b\x1f.txt", "ab.txt"),
        ("...hidden", "hidden"),
        ("report..final.txt", "reportfinal.txt"),
        ("部署脚本.sh", "部署脚本.sh"),
    ],
)
def test_clean_name(raw: str | None, clean: str) -> None:
    assert clean_name(raw) == clean


def test_long_names_keep_their_extension() -> None:
    name = clean_name("x" * 500 + ".sql")
    assert len(name) == 200 and name.endswith(".sql")

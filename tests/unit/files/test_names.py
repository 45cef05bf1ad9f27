"""Upload names never carry a path, a `..`, or control characters."""

import pytest

from files.names import clean_name, content_disposition


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


def test_long_non_ascii_names_fit_in_200_bytes() -> None:
    name = clean_name("部" * 300 + ".sql")  # 3 bytes a character: 200 characters were 600 bytes
    assert name.endswith(".sql") and len(name.encode()) <= 200 and name.startswith("部部")


@pytest.mark.parametrize(("raw", "clean"), [("\u202egpj.exe", "gpj.exe"), ("a\u2028b", "ab"), ("x\u200bx", "xx")])
def test_format_and_line_separator_characters_go(raw: str, clean: str) -> None:
    assert clean_name(raw) == clean


@pytest.mark.parametrize(
    ("name", "header"),
    [
        ("r.txt", 'attachment; filename="r.txt"'),
        ("部署.sql", "attachment; filename=\"file.sql\"; filename*=UTF-8''%E9%83%A8%E7%BD%B2.sql"),
        ("café.sql", "attachment; filename=\"cafe.sql\"; filename*=UTF-8''caf%C3%A9.sql"),
        ("50%.txt", "attachment; filename=\"50_.txt\"; filename*=UTF-8''50%25.txt"),
        ('a"b.txt', "attachment; filename=\"a_b.txt\"; filename*=UTF-8''a%22b.txt"),
    ],
)
def test_content_disposition(name: str, header: str) -> None:
    assert content_disposition(name) == header
    assert header.isascii()

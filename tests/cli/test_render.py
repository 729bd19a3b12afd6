"""saxutil tables and numbers look like Saxml's (tablewriter defaults, Go's %.8G)."""

from __future__ import annotations

from sax.cli.render import floats, format_float, table, title


def test_table_matches_saxml_ls_output() -> None:
    assert table(["#", "Cell"], [[0, "test"]]) == (
        "+---+------+\n| # | CELL |\n+---+------+\n| 0 | test |\n+---+------+\n"
    )


def test_headers_are_titled_and_centred_numbers_right_aligned() -> None:
    text = table(
        ["(Selected) ReplicaAddress", "# of Replicas", "lm.generate"], [["1.2.3.4:5", 1, "x"]]
    )
    lines = text.splitlines()
    assert lines[1] == "| (SELECTED) REPLICAADDRESS | # OF REPLICAS | LM GENERATE |"
    assert lines[3] == "| 1.2.3.4:5                 |             1 | x           |"


def test_empty_table_keeps_its_header() -> None:
    assert table(["Method", "ACL"], []) == (
        "+--------+-----+\n| METHOD | ACL |\n+--------+-----+\n+--------+-----+\n"
    )


def test_long_cells_wrap_at_30_columns_on_spaces() -> None:
    text = " ".join(["word"] * 12)  # 59 characters
    lines = table(["generate", "Score"], [[text, "-1.5"]]).splitlines()
    assert lines[3] == "| word word word word word word |  -1.5 |"
    assert lines[4] == "| word word word word word word |       |"
    long_word = "x" * 40
    assert f"| {long_word} |" in table(["t"], [[long_word]])


def test_title_keeps_dots_between_digits() -> None:
    assert title("v1.5") == "V1.5"
    assert title("model_path") == "MODEL PATH"


def test_format_float_is_go_g8() -> None:
    assert format_float(0.1) == "0.1"
    assert format_float(-1.25) == "-1.25"
    assert format_float(1e9) == "1E+09"
    assert format_float(123456789.0) == "1.2345679E+08"
    assert format_float(0.0) == "0"
    assert floats([1.0, 2.5, 3.0], limit=2) == "1, 2.5, ..."

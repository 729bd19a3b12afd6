"""saxutil against a fake cell: output formats, --json shapes, exit codes 0/1/2, flag spellings."""

from __future__ import annotations

import importlib
import json
import subprocess
import time

import pytest
from typer.testing import CliRunner, Result

from sax.cli.args import normalize_argv, parse_duration, parse_extra
from sax.cli.saxutil import HOMES, app
from sax.errors import SaxError
from tests.client.fakes import FakeCell
from tests.helpers import SAXUTIL


def saxutil(cell: FakeCell, *args: str, stdin: str | None = None) -> Result:
    argv = normalize_argv([*args, f"--sax_root={cell.sax_root}"])  # global flag after the command
    return CliRunner().invoke(app, argv, input=stdin)


def test_ls_root_cell_and_model_tables(cell: FakeCell) -> None:
    out = saxutil(cell, "ls", "/sax")
    assert (out.exit_code, out.stdout) == (
        0,
        "+---+------+\n| # | CELL |\n+---+------+\n| 0 | test |\n+---+------+\n",
    )
    out = saxutil(cell, "ls", "/sax/test")
    assert out.exit_code == 0
    assert "| # | MODEL ID |" in out.stdout and "| 0 | m        |" in out.stdout
    out = saxutil(cell, "ls", "/sax/test/m")
    assert out.exit_code == 0, out.stderr
    header, row = out.stdout.splitlines()[1], out.stdout.splitlines()[3]
    assert [c.strip() for c in header.split("|")[1:-1]] == [
        "MODEL",
        "MODEL PATH",
        "CHECKPOINT PATH",
        "# OF REPLICAS",
        "(SELECTED) REPLICAADDRESS",
        "METHODS",
    ]
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[:4] == ["m", "sax.models.test.Echo", "None", "2"]
    assert cells[4] in cell.addresses  # a LOADED replica
    assert "Ready replicas: 2/2 requested" in out.stdout


def test_ls_model_json_is_one_object_for_scripts(cell: FakeCell) -> None:
    out = saxutil(cell, "ls", "/sax/test/m", "--json")
    assert out.exit_code == 0
    info = json.loads(out.stdout)
    assert info["model_id"] == "/sax/test/m"
    assert (info["num_replicas"], info["ready_replicas"]) == (2, 2)
    assert sorted(r["address"] for r in info["replicas"]) == sorted(cell.addresses)
    assert {r["status"] for r in info["replicas"]} == {"LOADED"}


def test_publish_with_overrides_then_errors_and_usage(cell: FakeCell) -> None:
    out = saxutil(
        cell, "publish", "/sax/test/p", "sax.models.test.Echo", "None", "1", "a=1", 'b="s"', "c=x"
    )
    assert out.exit_code == 0, out.stderr
    assert cell.admin.models["p"].overrides == {"a": 1, "b": "s", "c": "x"}
    out = saxutil(cell, "publish", "/sax/test/p", "sax.models.test.Echo", "None", "1")
    assert out.exit_code == 1
    assert out.stderr.startswith("Error: Failed to publish model: ALREADY_EXISTS: ")
    assert saxutil(cell, "publish", "/sax/test/p", "sax.models.test.Echo", "None").exit_code == 2
    assert saxutil(cell, "publish", "/sax/test/q", "x.Y", "None", "two").exit_code == 2
    out = saxutil(cell, "publish", "/sax/test/q", "x.Y", "None", "1", "novalue")
    assert out.exit_code == 2 and "key=val" in out.stderr
    out = saxutil(cell, "publish", "/sax/Test/q", "x.Y", "None", "1")
    assert out.exit_code == 1 and "Invalid model ID /sax/Test/q" in out.stderr


def test_update_and_unpublish(cell: FakeCell) -> None:
    out = saxutil(cell, "update", "/sax/test/m", "-replicas=3", "k=2")
    assert out.exit_code == 0, out.stderr
    assert cell.admin.models["m"].num_replicas == 3
    assert cell.admin.models["m"].overrides == {"k": 2}
    assert saxutil(cell, "update", "/sax/test/m").exit_code == 2
    assert saxutil(cell, "unpublish", "/sax/test/m").exit_code == 0
    out = saxutil(cell, "unpublish", "/sax/test/m")
    assert out.exit_code == 1 and "Failed to unpublish model: NOT_FOUND" in out.stderr


def test_lm_generate_table_terse_json_and_n(cell: FakeCell) -> None:
    out = saxutil(cell, "lm.generate", "/sax/test/m", "Who is Harry Potter's mother?")
    assert out.exit_code == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [c.strip() for c in lines[1].split("|")[1:-1]] == ["GENERATE", "SCORE"]
    assert [c.strip() for c in lines[3].split("|")[1:-1]] == ["Who is Harry Potter's mother?", "0"]
    out = saxutil(
        cell, "lm.generate", "-extra=num_samples:3", "-terse", "-n", "2", "/sax/test/m", "t"
    )
    assert out.stdout == "t\nt\n"
    out = saxutil(
        cell, "lm.generate", "--json", "--extra", "num_samples:2", "/sax/test/m", "-", stdin="in\n"
    )
    samples = json.loads(out.stdout)["samples"]
    assert [(s["text"], s["score"]) for s in samples] == [("in\n", 0.0), ("in\n", -0.5)]


def test_lm_generate_stream_prints_deltas_then_scores(cell: FakeCell) -> None:
    out = saxutil(cell, "lm.generate", "-stream", "/sax/test/m", "one two three")
    assert out.exit_code == 0, out.stderr
    assert out.stdout == "one two three\nScores: -1.25\n"
    out = saxutil(cell, "lm.generate", "--stream", "--terse", "/sax/test/m", "x")
    assert out.exit_code == 1 and "Terse output incompatible" in out.stderr


def test_bad_extra_inputs_exit_1(cell: FakeCell) -> None:
    out = saxutil(cell, "lm.generate", "--extra=temperature=0.5", "/sax/test/m", "q")
    assert out.exit_code == 1
    assert out.stderr.startswith("Could not parse extra inputs: INVALID_ARGUMENT: key-value pair")
    assert "'temperature=0.5'" in out.stderr


def test_score_embed_gradient_tables(cell: FakeCell) -> None:
    out = saxutil(cell, "lm.score", "/sax/test/m", "prefix", "a", "abc")
    assert out.exit_code == 0, out.stderr
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in out.stdout.splitlines()[3:5]]
    assert rows == [["a", "-1"], ["abc", "-3"]]
    assert saxutil(cell, "lm.score", "/sax/test/m", "prefix").exit_code == 2
    out = saxutil(cell, "lm.embed", "/sax/test/m", "four")
    assert "| four | 0.5, 0.25, 4 |" in out.stdout
    assert json.loads(saxutil(cell, "lm.embed", "--json", "/sax/test/m", "ab").stdout) == {
        "embedding": [0.5, 0.25, 2.0]
    }
    out = saxutil(cell, "lm.gradient", "/sax/test/m", "p", "s")
    assert out.exit_code == 0, out.stderr
    assert "| SCORE |" in out.stdout and "0, 1, 2, 3, 4, 5, 6, 7, ..." in out.stdout.replace(
        "\n", ""
    )


def test_vm_unimplemented_is_reported(cell: FakeCell, tmp_path: object) -> None:
    out = saxutil(cell, "vm.classify", "/sax/test/m", "-", stdin="img")
    assert out.exit_code == 1
    assert "UNIMPLEMENTED" in out.stderr and "vm.classify" in out.stderr


def test_wait_succeeds_and_times_out(cell: FakeCell) -> None:
    out = saxutil(cell, "wait", "/sax/test/m")
    assert out.exit_code == 0, out.stderr
    assert "ready (2/2 replicas)" in out.stdout
    cell.admin.add_model("slow", [])
    cell.admin.models["slow"] = cell.admin.models["slow"].model_copy(update={"num_replicas": 1})
    start = time.monotonic()
    out = saxutil(cell, "wait", "/sax/test/slow", "--timeout", "1s")
    assert out.exit_code == 1
    assert "/sax/test/slow: 0/1 ready" in out.stdout
    assert "Timed out after 1s" in out.stderr
    assert time.monotonic() - start < 5


def test_create_cell_and_stats(cell: FakeCell) -> None:
    assert "| cpu  |        1 |            2 |" in saxutil(cell, "stats").stdout  # the only cell
    out = saxutil(cell, "servers", "--sax_cell=/sax/test")
    assert out.exit_code == 0 and "| ADDRESS | DATA ADDRESS |" in out.stdout
    assert saxutil(cell, "create", "/sax/other", "/tmp/fs").exit_code == 0
    out = saxutil(cell, "stats")
    assert out.exit_code == 2 and "other, test" in out.stderr
    assert "| 0 | other |\n| 1 | test  |" in saxutil(cell, "ls", "/sax").stdout
    out = saxutil(cell, "create", "/sax/other", "/tmp/fs")
    assert out.exit_code == 1 and out.stderr == "Error: Sax cell /sax/other already exists.\n"
    out = saxutil(cell, "stats", "/sax/test")
    assert "| cpu  |        1 |            2 |" in out.stdout


def test_watch_prints_reset_changes_and_stops_on_unpublish(cell: FakeCell) -> None:
    proc = subprocess.Popen(
        [SAXUTIL, f"--sax_root={cell.sax_root}", "watch", "/sax/test/m"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip() for _ in range(3)]
        assert lines == ["Reset", *(f"+ {a}" for a in sorted(cell.addresses))]
        cell.admin.remove_replica("m", cell.addresses[0])
        assert proc.stdout.readline().strip() == f"- {cell.addresses[0]}"
        del cell.admin.models["m"]
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()


def test_usage_errors_exit_2_from_the_real_binary(cell: FakeCell) -> None:
    run = subprocess.run([SAXUTIL, "lm.generate", "/sax/test/m"], capture_output=True, text=True)
    assert run.returncode == 2
    run = subprocess.run([SAXUTIL, "nosuchcommand"], capture_output=True, text=True)
    assert run.returncode == 2


def test_parse_extra_follows_saxml() -> None:
    assert parse_extra("") == {}
    assert parse_extra("temperature:0.5,k:3,s:'q',t:\"1\",u:abc") == {
        "temperature": 0.5,
        "k": 3,
        "s": "q",
        "t": "1",
        "u": "abc",
    }
    with pytest.raises(SaxError):
        parse_extra("a:1:2")


def test_parse_duration_and_argv_normalisation() -> None:
    assert parse_duration("60s") == 60
    assert parse_duration("1m30s") == 90
    assert parse_duration("500ms") == 0.5
    assert parse_duration("2") == 2
    assert normalize_argv(["lm.generate", "-n=3", "-extra=a:1", "m", "q"]) == [
        "lm.generate",
        "-n",
        "3",
        "--extra=a:1",
        "m",
        "q",
    ]
    assert normalize_argv(["lm.generate", "-stream", "--sax_timeout", "5s", "/sax/t/m", "-"]) == [
        "--sax_timeout",
        "5s",
        "lm.generate",
        "--stream",
        "/sax/t/m",
        "-",
    ]


def test_every_command_has_one_home_in_help_order() -> None:
    """HOMES (which module builds a command when it runs) lists each module's commands, in order."""
    for module in set(HOMES.values()):
        registered = importlib.import_module(f"sax.cli.{module}").commands.registered_commands
        assert [c.name for c in registered] == [n for n, m in HOMES.items() if m == module]
    listed = CliRunner().invoke(app, ["--help"]).stdout.split("Commands:\n")[1].splitlines()
    assert [line.split()[0] for line in listed] == ["help", *HOMES]

"""The CLI's tables never hide a value, and its errors are printed whole."""

from __future__ import annotations

from trainserve import console


def test_a_wide_table_piped_is_printed_whole(capsys) -> None:
    """Piped or redirected (not a terminal), rich would cut a table to 80 columns with ellipses."""
    columns = ["variant", "version", "role", "weight", "requests", "latency p50/p95/p99 ms", "accuracy [CI]"]
    row = ["v1", "1", "champion", "50.0%", "1,234", "12.3 / 20.1 / 35.2", "95.12% [93.70%, 96.31%]"]
    console.table("Variants", columns, [row, row])
    out = capsys.readouterr().out
    assert "…" not in out
    assert "latency p50/p95/p99 ms" in out and "95.12% [93.70%, 96.31%]" in out
    assert max(len(line) for line in out.splitlines()) > 80


def test_a_narrow_table_keeps_its_width(capsys) -> None:
    console.table("small", ["a", "b"], [["1", "2"]])
    assert max(len(line) for line in capsys.readouterr().out.splitlines()) <= 80


def test_an_error_is_one_line_printed_as_it_is(capsys) -> None:
    """A long path is not broken into lines (the terminal wraps it, so it copies whole), and text that looks
    like rich markup (a user's note, a file name) is printed, not taken as a style."""
    path = "/tmp/" + "a-very-long-folder-name/" * 8 + "body.json"
    console.UserError(f"{path}: unknown field(s) [bold]x[/bold], [WIP]; nothing was sent").show()
    err = capsys.readouterr().err
    assert err == f"error: {path}: unknown field(s) [bold]x[/bold], [WIP]; nothing was sent\n"
    assert len(err) > 80


def test_json_output_is_standard_json_even_with_nan(capsys) -> None:
    """A metric that is NaN (roc_auc of a test split with one class) was written as a bare NaN, which
    JavaScript's JSON.parse and jq refuse."""
    import json

    import numpy as np

    console.print_json(
        {"roc_auc": float("nan"), "n": [1.5, float("inf"), np.float64("nan")], "ok": np.float64(0.5)}
    )
    out = capsys.readouterr().out
    assert "NaN" not in out and "Infinity" not in out
    assert json.loads(out) == {"roc_auc": None, "n": [1.5, None, None], "ok": 0.5}


def test_people_output_on_stderr_keeps_stdout_for_the_json(capsys) -> None:
    """``demo --json`` runs commands that print tables on stdout: while it runs, they go to stderr."""
    import json

    import click

    with console.people_output_on_stderr():
        console.console.print("the local cloud is already running")
        console.table("Variants", ["variant"], [["v1"]])
        click.echo("echoed")
    console.print_json({"ok": True})
    printed = capsys.readouterr()
    assert json.loads(printed.out) == {"ok": True}
    assert "already running" in printed.err and "v1" in printed.err and "echoed" in printed.err
    with console.people_output_on_stderr(enabled=False):  # without --json: stdout as always
        console.console.print("a table")
    assert capsys.readouterr().out == "a table\n"

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

"""``trainserve predict [--file F] [--user U]`` and ``trainserve feedback REQUEST_ID OUTCOME``.

Both call the prediction API (``target.api_url``): locally the local cloud's API (no auth), on AWS the API
Gateway stage with the ``x-api-key`` header (the key's value is read with ``apigateway get_api_key`` from
the ``PredictionApiKeyId`` stack output).

Rows come from ``--file`` (CSV with or without a header row, or JSON: ``{"instances": [...], "user_id":
optional}`` as the API takes it, sent as it is so that the API checks its fields; a list of rows, a list of
``{name: value}`` objects, one such object or one flat row) or, without ``--file``, from stdin: UTF-8 text (a
byte order mark, as Excel's "CSV UTF-8" writes, is skipped), values separated by commas.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import proxy_logic

from trainserve.commands import options
from trainserve.console import UserError, print_json, table
from trainserve.target import Target, TargetError

API_KEY_OUTPUT = "PredictionApiKeyId"
HTTP_TIMEOUT_S = 60


def _number(text: str, line: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"line {line}, column {column}: {text!r} is not a number") from None
    if not math.isfinite(value):
        what = (
            "is not a finite number"
            if text.strip().lstrip("+-").lower() in ("inf", "infinity", "nan")
            else "is too large for a number (the model takes 32-bit floats, at most about 3.4e38)"
        )
        written = text.strip() if len(text.strip()) <= 40 else text.strip()[:39] + "…"
        raise UserError(f"line {line}, column {column}: {written!r} {what}")
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


REQUEST_FIELDS = proxy_logic.PREDICT_FIELDS  # what POST /predict takes


def _huge_integer(data: Any) -> str | None:
    """Where in ``data`` an integer too long for a number is, and what it is (None: nowhere)."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, proxy_logic.HugeInteger):
            return f"{where or 'the value'}: {value!r} is too large for a number"
        items = (
            value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        )
        stack.extend((f"{where}[{json.dumps(k)}]", v) for k, v in reversed(list(items)))
    return None


@dataclass(frozen=True)
class PredictInput:
    """Rows to score, the input line of each CSV row (None for JSON), and, for a JSON object given as the
    request body, its user_id and the object itself (sent as it is)."""

    rows: list[Any]
    lines: list[int] | None = None
    body: dict[str, Any] | None = None

    @property
    def user_id(self) -> Any:
        return self.body.get("user_id") if self.body is not None else None


def decode_input(data: bytes, source: str) -> str:
    """The input's bytes as text: UTF-8, a leading byte order mark skipped; anything else is a UserError
    naming ``source`` and the offset of the first byte that is not UTF-8."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise UserError(f"{source} is UTF-16 text, not UTF-8: save it as UTF-8 (in Excel: CSV UTF-8)")
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = skip + exc.start
        line = data.count(b"\n", 0, offset) + 1
        raise UserError(
            f"{source} is not UTF-8 text: byte 0x{data[offset]:02x} at offset {offset} (line {line}) "
            "cannot be decoded; save it as UTF-8 (in Excel: CSV UTF-8)"
        ) from None


def read_input(path: str | None) -> tuple[str, str]:
    """(text, name of the source) of ``--file`` or, without one, of stdin."""
    if path:
        return decode_input(Path(path).read_bytes(), path), path
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:  # a text-only stdin (already decoded)
        return sys.stdin.read().removeprefix("\ufeff"), "stdin"
    return decode_input(stream.read(), "stdin"), "stdin"


def _separated_by(lines: list[str]) -> tuple[str, str, int] | None:
    """A CSV separated by semicolons or tabs instead of commas: (name, separator, separators per line).
    It is so when every line (of the first 20) has the same number of them; a tab also needs no comma."""
    sample = [line for line in lines if line.strip()][:20]
    for name, sep in (("semicolon", ";"), ("tab", "\t")):
        counts = {line.count(sep) for line in sample}
        if len(counts) == 1 and min(counts) >= 1 and (sep == ";" or not any("," in x for x in sample)):
            return name, sep, min(counts)
    return None


def parse_rows(text: str) -> list[Any]:
    """CSV (header optional) or JSON text -> the ``instances`` list the API takes."""
    return parse_input(text).rows


def parse_rows_and_lines(text: str) -> tuple[list[Any], list[int] | None]:
    """``parse_rows``, and for CSV the input line of each row (the API's errors count rows from 0)."""
    parsed = parse_input(text)
    return parsed.rows, parsed.lines


def parse_input(text: str, source: str = "the input") -> PredictInput:
    """CSV (header optional) or JSON text -> the rows to score (and a JSON request body's ``user_id``);
    a problem is a UserError naming ``source`` or the line and column."""
    stripped = text.strip().removeprefix("\ufeff").strip()
    if not stripped:
        raise UserError("no rows given (pass --file, or rows on stdin as CSV or JSON)")
    if stripped[0] in "[{":
        return _parse_json(stripped, source)
    separated = _separated_by(stripped.splitlines())
    if separated:
        name, sep, count = separated
        raise UserError(
            f"{source} looks {name}-separated (every line has {count} {sep!r}): the values must be "
            "comma-separated, with '.' as the decimal point; nothing was sent"
        )
    rows = [r for r in csv.reader(io.StringIO(stripped)) if any(c.strip() for c in r)]
    header = None
    # a header names every column: a first line with any number in it is a row (its bad values are named below)
    if not any(_is_number(c) for c in rows[0]):
        header = [c.strip() for c in rows[0]]
        rows = rows[1:]
        if not rows:
            raise UserError(
                f"the input's only line has no number in it ({stripped.splitlines()[0][:60]!r}): expected CSV "
                '(an optional header line, then rows of numbers) or JSON ({"instances": [[...], ...]})'
            )
    out: list[Any] = []
    first = 2 if header else 1
    for n, row in enumerate(rows, start=first):
        if header is not None:
            if len(row) != len(header):
                raise UserError(f"line {n} has {len(row)} values; the header has {len(header)}")
            out.append({h: _number(c.strip(), n, h) for h, c in zip(header, row, strict=True)})
        else:
            out.append([_number(c.strip(), n, str(i + 1)) for i, c in enumerate(row)])
    return PredictInput(out, list(range(first, first + len(out))))


def _is_one_row(data: dict[str, Any]) -> bool:
    """A JSON object that is one ``{name: value}`` row, not a request body: plain values (a body's
    ``instances`` is a list) and no field of the request (``user_id`` alone is a body without rows)."""
    plain = all(v is None or isinstance(v, str | int | float) for v in data.values())
    return bool(data) and plain and not set(data) & set(REQUEST_FIELDS)


def _parse_json(text: str, source: str) -> PredictInput:
    try:
        data = proxy_logic.json_loads(text)
    except proxy_logic.JsonTooDeep as exc:
        raise UserError(f"{source} {exc}") from None
    except ValueError as exc:
        raise UserError(f"{source} is not valid JSON: {exc}") from None
    huge = _huge_integer(data)
    if huge is not None:
        raise UserError(f"{source}: {huge}; nothing was sent")
    if isinstance(data, dict) and not _is_one_row(data):
        # a request body: sent as it is, so that the API checks its fields and its answer names a wrong one
        rows = data.get("instances")
        return PredictInput(rows if isinstance(rows, list) else [], None, data)
    if isinstance(data, dict):
        data = [data]  # one {name: value} row
    if isinstance(data, list) and data and all(isinstance(v, int | float) for v in data):
        data = [data]  # one flat row
    if not isinstance(data, list) or not data:
        raise UserError('JSON input must be {"instances": [...]}, a list of rows, or one row')
    return PredictInput(data)


def api_key(target: Target) -> str | None:
    """The API key value on AWS (None locally: the local API has no auth)."""
    if target.is_local:
        return None
    if target.api_key:
        return target.api_key
    key_id = _stack_output(target, API_KEY_OUTPUT)
    if not key_id:
        raise TargetError(
            f"no {API_KEY_OUTPUT} output in the deployed stacks: cannot authenticate to the API"
        )
    return target.client("apigateway").get_api_key(apiKey=key_id, includeValue=True)["value"]


def _stack_output(target: Target, key: str) -> str | None:
    prefix = "".join(p.capitalize() for p in target.config.project_name.split("-"))
    for page in target.client("cloudformation").get_paginator("describe_stacks").paginate():
        for stack in page["Stacks"]:
            if stack["StackName"].startswith(prefix):
                for o in stack.get("Outputs", []):
                    if o["OutputKey"] == key:
                        return o["OutputValue"]
    return None


def call_api(target: Target, path: str, payload: Any, lines: list[int] | None = None) -> dict[str, Any]:
    """POST ``payload`` to the prediction API; a non-2xx answer is a UserError with the API's message (and,
    given ``lines``, the input line of the row it names)."""
    if not target.api_url:
        raise TargetError(
            "no prediction API URL (local cloud not running, or no PredictionApiUrl stack output)"
        )
    headers = {"Content-Type": "application/json"}
    key = api_key(target)
    if key:
        headers["x-api-key"] = key
    url = target.api_url.rstrip("/") + path
    body = json.dumps(payload, separators=(",", ":")).encode()  # compact: the API's limit counts bytes
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = {"error": raw.decode(errors="replace")[:500]}
        where = ""
        row = body.get("row")
        if row is not None:
            where += f" (row {row}"
            if lines and isinstance(row, int) and 0 <= row < len(lines):
                where += f", line {lines[row]} of the input"
            where += f", field {body['field']})" if body.get("field") else ")"
        raise UserError(
            f"the API answered {exc.code}: {body.get('error') or body.get('message')}{where}"
        ) from None
    except urllib.error.URLError as exc:
        raise UserError(f"cannot reach the prediction API at {url}: {exc.reason}") from None


@click.command("predict")
@click.option(
    "--file",
    "-f",
    "path",
    type=click.Path(exists=True, dir_okay=False),
    help="CSV (UTF-8, comma-separated) or JSON rows; default: stdin.",
)
@click.option("--user", "user_id", help="user_id for sticky variant assignment.")
@options.json_option
@options.local_option
def predict(path: str | None, user_id: str | None, as_json: bool, local: bool | None) -> None:
    """Score rows through the prediction API (rows from --file, or stdin).

    A JSON object input is sent to the API as it is, so the API's answer names a field it does not take;
    --user adds its user_id (or repeats it: a different one is an error). An object of plain values only
    (no list in it, no instances or user_id) is one {name: value} row."""
    if user_id is not None and not user_id:
        raise UserError("--user is empty: give a user id, or leave --user out")
    text, source = read_input(path)
    parsed = parse_input(text, source)
    if user_id is not None and parsed.user_id is not None and user_id != parsed.user_id:
        raise UserError(
            f"--user {user_id!r} differs from the user_id {parsed.user_id!r} in {source}: give one of them "
            "(or the same); nothing was sent"
        )
    # a request body goes as it is (the API names a field it does not take); rows go in one
    payload: dict[str, Any] = dict(parsed.body) if parsed.body is not None else {"instances": parsed.rows}
    if user_id is not None:
        payload["user_id"] = user_id
    result = call_api(options.resolve_target(local), "/predict", payload, parsed.lines)
    if as_json:
        print_json(result)
        return
    table(
        f"{len(result['predictions'])} prediction(s)",
        ["request_id", "variant", "version", "score", "label"],
        [
            [p["request_id"], p["variant"], p["model_version"], f"{p['score']:.4f}", p["label"]]
            for p in result["predictions"]
        ],
    )


@click.command("feedback")
@click.argument("request_id")
@click.argument("outcome", type=click.Choice(["0", "1"]), metavar="OUTCOME")
@options.json_option
@options.local_option
def feedback(request_id: str, outcome: str, as_json: bool, local: bool | None) -> None:
    """Record the true OUTCOME (0 or 1) of the prediction REQUEST_ID.

    The id is sent in lower case, as predict answers it (a UUID's letter case means nothing), so that it joins
    its prediction."""
    request_id = proxy_logic.normal_request_id(request_id)
    result = call_api(
        options.resolve_target(local), "/feedback", {"request_id": request_id, "outcome": int(outcome)}
    )
    if as_json:
        print_json(result)
    else:
        click.echo(f"feedback recorded: {request_id} -> {outcome}")

"""``trainserve predict``, ``feedback`` and ``params get|set``.

``predict``/``feedback`` talk to the prediction API over HTTP; here the API is a small stand-in HTTP server
(the real one is tested end to end in tests/local/test_api.py) that records what the CLI sent.
``params`` runs against a moto server with the proxy's Lambda function record, as the local cloud has it.
"""

from __future__ import annotations

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import proxy_logic
import pytest
from click.testing import CliRunner
from registry_fixture import create_live_endpoint

from trainserve.cli import cli
from trainserve.commands import options
from trainserve.commands import predict as predict_cmd
from trainserve.console import UserError
from trainserve.local.api import ensure_proxy_function
from trainserve.target import Names, Target


class _Api(BaseHTTPRequestHandler):
    received: list[tuple[str, dict, dict]] = []
    raw_sizes: list[int] = []

    def log_message(self, *args):
        return

    def do_POST(self):  # noqa: N802
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).raw_sizes.append(len(raw))
        body = json.loads(raw)
        type(self).received.append((self.path, body, dict(self.headers.items())))
        try:  # the real API's checks of the request body (its fields), then the model's two features
            if self.path == "/predict":
                proxy_logic.parse_predict_body(raw)
        except proxy_logic.PayloadError as exc:
            status, out = exc.status, exc.body()
        else:
            status, out = self._answer(body)
        data = json.dumps(out).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _answer(self, body: dict) -> tuple[int, dict]:
        if self.path == "/predict" and len(body["instances"][0]) != 2:
            status, out = 400, {"error": "row 0 has 3 values; the model expects 2", "row": 0, "field": "#2"}
        elif self.path == "/predict":
            preds = [
                {"request_id": f"rid-{i}", "variant": "v2", "model_version": 2, "score": 0.9, "label": 1}
                for i, _ in enumerate(body["instances"])
            ]
            status, out = (
                200,
                {"request_id": "rid", "predictions": preds, "variant": "v2", "model_version": 2},
            )
        else:
            status, out = 200, {"accepted": 1}
        return status, out


@pytest.fixture(scope="module")
def api_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def target(monkeypatch, config, api_url, moto_url):
    t = Target(
        mode="local",
        region="us-east-1",
        config=config,
        names=Names.local(config),
        aws_endpoint_url=moto_url,
        api_url=api_url,
    )
    monkeypatch.setattr(options, "resolve_target", lambda local: t)
    _Api.received.clear()
    return t


def _run(*args, input=None):  # noqa: A002
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def test_parse_rows_forms():
    assert predict_cmd.parse_rows("1,2\n3,4\n") == [[1.0, 2.0], [3.0, 4.0]]
    assert predict_cmd.parse_rows("a,b\n1,2\n") == [{"a": 1.0, "b": 2.0}]
    assert predict_cmd.parse_rows('{"instances": [[1, 2]]}') == [[1, 2]]
    assert predict_cmd.parse_rows("[1, 2]") == [[1, 2]]
    assert predict_cmd.parse_rows('[{"a": 1}]') == [{"a": 1}]
    with pytest.raises(UserError, match="line 3, column b"):
        predict_cmd.parse_rows("a,b\n1,2\n1,x\n")
    with pytest.raises(UserError, match="no rows"):
        predict_cmd.parse_rows("  ")


def test_parse_rows_names_the_bad_value_of_a_first_row() -> None:
    # a first line with numbers in it is a row, not a header: its bad value is named
    with pytest.raises(UserError, match=r"line 1, column 1: 'abc' is not a number"):
        predict_cmd.parse_rows("abc,24.04,3\n")
    with pytest.raises(UserError, match=r"line 1, column 1: '' is not a number"):
        predict_cmd.parse_rows(",24.04,3\n1,2,3\n")
    # no number anywhere on the only line: neither rows nor a header with rows
    with pytest.raises(UserError, match=r"only line has no number in it \('not json at all \{'\)"):
        predict_cmd.parse_rows("not json at all {")


def test_predict_from_file_prints_table(target, tmp_path):
    f = tmp_path / "rows.csv"
    f.write_text("f0,f1\n1,2\n3,4\n")
    result = _run("predict", "--file", str(f), "--user", "alice")
    assert result.exit_code == 0, result.output
    path, body, headers = _Api.received[0]
    assert path == "/predict" and body == {
        "instances": [{"f0": 1.0, "f1": 2.0}, {"f0": 3.0, "f1": 4.0}],
        "user_id": "alice",
    }
    assert "x-api-key" not in {k.lower() for k in headers}  # local: no auth
    assert "rid-1" in result.output and "v2" in result.output and "0.9000" in result.output


def test_predict_from_stdin_json(target):
    result = _run("predict", "--json", input="1,2\n")
    assert result.exit_code == 0
    assert json.loads(result.output)["predictions"][0]["request_id"] == "rid-0"


def test_predict_api_error_names_row_and_field(target):
    result = CliRunner().invoke(cli, ["predict"], input="1,2,3\n")
    assert result.exit_code == 1
    assert "field #2" in " ".join(result.stderr.split())
    assert len(_Api.received) == 1
    # with a header line, the API's row 0 is the input's line 2: both are named
    result = CliRunner().invoke(cli, ["predict"], input="a,b,c\n1,2,3\n")
    assert "(row 0, line 2 of the input, field #2)" in " ".join(result.stderr.split())


def test_predict_api_error_message(target):
    with pytest.raises(UserError, match=r"400: row 0 has 3 values.*\(row 0, field #2\)"):
        predict_cmd.call_api(target, "/predict", {"instances": [[1, 2, 3]]})


def test_feedback(target):
    result = _run("feedback", "rid-0", "1")
    assert result.exit_code == 0 and "rid-0" in result.output
    assert _Api.received[0][:2] == ("/feedback", {"request_id": "rid-0", "outcome": 1})
    bad = CliRunner().invoke(cli, ["feedback", "rid-0", "2"])
    assert bad.exit_code == 2 and "OUTCOME" in bad.output  # click rejects the outcome, naming the argument


def test_feedback_sends_and_echoes_the_request_id_in_lower_case(target):
    """predict answers ids in lower case; one typed in upper case is the same UUID, and is sent (and said)
    as predict answered it, so that it joins its prediction."""
    answered = "9f1c3e46-2d9f-4f50-840b-9d04764aa62f-0"
    result = _run("feedback", answered.upper(), "0")
    assert result.exit_code == 0, result.output
    assert _Api.received[0][:2] == ("/feedback", {"request_id": answered, "outcome": 0})
    assert f"feedback recorded: {answered} -> 0" in result.output and answered.upper() not in result.output


def test_params_get_and_set(target, monkeypatch):
    """``set`` against the local cloud waits for its API to take the change (``request_refresh``: tested with
    the real API in tests/local/test_api.py; here a stand-in that records the request)."""
    from trainserve.local import api

    refreshes: list[float] = []
    monkeypatch.setattr(api, "request_refresh", lambda state_dir, timeout: refreshes.append(timeout) or True)
    lam, iam = target.client("lambda"), target.client("iam")
    ensure_proxy_function(lam, iam, target.config, target.names)
    create_live_endpoint(
        target.client("sagemaker"),
        target.names.model_package_group,
        target.names.endpoint_name,
        ["f0", "f1"],
        {"v1": 0.5, "v2": 0.5},
    )
    result = _run("params", "get", "--json")
    info = json.loads(result.output)
    assert info["effective"]["decision_threshold"] == target.config.decision_threshold
    assert info["parameters"]["SERVING_ENABLED"] == "true"

    result = _run("params", "set", "DECISION_THRESHOLD=0.65", "target_variant=v2", "--json")
    assert result.exit_code == 0, result.output
    env = lam.get_function_configuration(FunctionName=target.names.proxy_function)["Environment"]["Variables"]
    assert env["DECISION_THRESHOLD"] == "0.65" and env["TARGET_VARIANT"] == "v2"
    assert env["ENDPOINT_NAME"] == target.names.endpoint_name  # merged, not replaced
    assert json.loads(result.output)["applied"] is True and len(refreshes) == 1

    before = dict(env)
    for bad in (
        ["DECISION_THRESHOLD=abc"],
        ["LOG_SAMPLE_RATE=0.2", "DECISION_THRESHOLD=2"],  # one valid, one not
        ["NOPE=1"],
        ["x"],
        ["DECISION_THRESHOLD=0.7", "TARGET_VARIANT=v3"],  # not live
    ):
        result = CliRunner().invoke(cli, ["params", "set", *bad])
        assert result.exit_code == 1, bad
    env = lam.get_function_configuration(FunctionName=target.names.proxy_function)["Environment"]["Variables"]
    assert env == before  # nothing changed

    table = _run("params", "get").output
    assert "DECISION_THRESHOLD" in table and "0.65" in table
    assert "TARGET_VARIANT=v3 is not a live variant" in " ".join(result.output.split())
    result = CliRunner().invoke(cli, ["params", "set", "LOG_SAMPLE_RATE=0.6", "log_sample_rate=0.7"])
    assert result.exit_code == 1 and "LOG_SAMPLE_RATE is given twice; nothing was changed" in result.output
    assert len(refreshes) == 1  # nothing changed, nothing to wait for

    result = _run("params", "set", "TARGET_VARIANT=", "DECISION_THRESHOLD=0.5")
    env = lam.get_function_configuration(FunctionName=target.names.proxy_function)["Environment"]["Variables"]
    assert env["TARGET_VARIANT"] == ""
    assert "in force from the next request" in " ".join(result.output.split())

    # the local API did not confirm (not running, or it could not read the parameters): said, not hidden
    monkeypatch.setattr(api, "request_refresh", lambda state_dir, timeout: False)
    result = _run("params", "set", "LOG_SAMPLE_RATE=0.5")
    said = " ".join(result.output.split())
    assert result.exit_code == 0 and "did not confirm it within 10 s" in said and "local status" in said
    assert json.loads(_run("params", "set", "LOG_SAMPLE_RATE=1", "--json").output)["applied"] is False


def test_params_set_target_variant_without_an_endpoint(target, monkeypatch):
    from trainserve.local import api

    monkeypatch.setattr(api, "request_refresh", lambda state_dir, timeout: True)
    ensure_proxy_function(target.client("lambda"), target.client("iam"), target.config, target.names)
    sm = target.client("sagemaker")
    with contextlib.suppress(sm.exceptions.ClientError):  # the module's moto outlives each test's endpoint
        sm.delete_endpoint(EndpointName=target.names.endpoint_name)
    result = CliRunner().invoke(cli, ["params", "set", "TARGET_VARIANT=v1"])
    said = " ".join(result.output.split())
    assert result.exit_code == 1
    assert f"endpoint {target.names.endpoint_name} does not exist yet, so no variant is live" in said


def _fails(args: list[str], input=None) -> str:  # noqa: A002
    """A predict that must fail cleanly: exit 1, one error line on stderr (no traceback), nothing sent."""
    result = CliRunner().invoke(cli, ["predict", *args], input=input, catch_exceptions=False)
    assert result.exit_code == 1, result.output
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("error") == 1  # one error (wrapped)
    assert _Api.received == []  # nothing was sent
    return " ".join(result.stderr.split())


def test_predict_json_request_file_sends_its_user_id(target, tmp_path):
    f = tmp_path / "body.json"
    f.write_text(json.dumps({"instances": [[1, 2], [3, 4]], "user_id": "bob"}))
    result = _run("predict", "--file", str(f), "--json")
    assert result.exit_code == 0, result.output
    assert _Api.received[0][1] == {"instances": [[1, 2], [3, 4]], "user_id": "bob"}
    # --user may repeat the file's user_id ...
    assert _run("predict", "--file", str(f), "--user", "bob").exit_code == 0
    assert _Api.received[1][1]["user_id"] == "bob"
    # ... but not contradict it: both are named, nothing is sent
    _Api.received.clear()
    said = _fails(["--file", str(f), "--user", "alice"])
    assert f"--user 'alice' differs from the user_id 'bob' in {f}" in said and "nothing was sent" in said
    # --user gives the user of a body without one
    f.write_text(json.dumps({"instances": [[1, 2]]}))
    assert _run("predict", "--file", str(f), "--user", "carol").exit_code == 0
    assert _Api.received[0][1] == {"instances": [[1, 2]], "user_id": "carol"}
    _Api.received.clear()
    assert "--user is empty" in _fails(["--file", str(f), "--user", ""])


def _api_refuses(args: list[str], input=None) -> str:  # noqa: A002
    """A predict the API refuses: exit 1 with one error line (the API's answer), the request sent once."""
    _Api.received.clear()
    result = CliRunner().invoke(cli, ["predict", *args], input=input, catch_exceptions=False)
    assert result.exit_code == 1, result.output
    assert result.stdout == "" and "Traceback" not in result.stderr and result.stderr.startswith("error: ")
    assert len(_Api.received) == 1
    return " ".join(result.stderr.split())


def test_a_json_object_goes_to_the_api_as_it_is_and_its_answer_names_a_wrong_field(target, tmp_path):
    """Before: an object without 'instances' (a mistyped key) was taken for one {name: value} row, and the
    API's answer named a missing feature ("row 0: missing feature 'mean_radius' (30 missing)"), not the key."""
    f = tmp_path / "body.json"
    row = [round(0.5 + i, 1) for i in range(30)]
    f.write_text(json.dumps({"rows": [row]}))
    said = _api_refuses(["--file", str(f)])
    assert said == "error: the API answered 400: unknown field(s) rows; allowed: instances, user_id"
    assert _Api.received[0][1] == {"rows": [row]}  # as it is, not wrapped in 'instances'
    # on stdin too, with a user_id beside the mistyped key
    said = _api_refuses([], input=json.dumps({"user_id": "bob", "Instances": [row]}))
    assert "the API answered 400: unknown field(s) Instances; allowed: instances, user_id" in said
    assert _Api.received[0][1] == {"user_id": "bob", "Instances": [row]}
    # fields beside 'instances', an empty 'instances', a user_id alone: the API's answer, as it gave it
    said = _api_refuses(
        [], input='{"instances": [[1, 2]], "user_id": "bob", "threshold": 0.3, "Instances": []}'
    )
    assert "the API answered 400: unknown field(s) Instances, threshold; allowed: instances, user_id" in said
    assert "the API answered 400: 'instances' must be a non-empty list of rows" in _api_refuses(
        [], input='{"instances": []}'
    )
    assert "'instances' must be a non-empty list" in _api_refuses(
        ["--user", "bob"], input='{"user_id": "bob"}'
    )
    # --user adds the user_id to the object, and nothing else changes
    said = _api_refuses(["--user", "carol"], input=json.dumps({"rows": [row]}))
    assert _Api.received[0][1] == {"rows": [row], "user_id": "carol"} and "unknown field(s) rows" in said


def test_a_json_object_of_plain_values_is_still_one_row(target):
    assert _run("predict", input='{"f0": 1, "f1": 2.5}').exit_code == 0
    assert _Api.received[0][1] == {"instances": [{"f0": 1, "f1": 2.5}]}
    assert predict_cmd.parse_rows('{"a": 1, "b": null}') == [{"a": 1, "b": None}]


def test_predict_input_that_is_not_utf8_is_one_clean_error(target, tmp_path):
    f = tmp_path / "latin1.csv"
    f.write_bytes("f0,f1\n1,2\n3,é4\n".encode("latin-1"))
    said = _fails(["--file", str(f)])
    assert f"{f} is not UTF-8 text: byte 0xe9 at offset 12 (line 3)" in said and "save it as UTF-8" in said
    said = _fails([], input="f0,f1\n\xff1,2\n".encode("latin-1"))
    assert "stdin is not UTF-8 text: byte 0xff at offset 6 (line 2)" in said
    # the offset counts from the file's first byte, a byte order mark included
    f.write_bytes(b"\xef\xbb\xbff0,f1\n1,\x802\n")
    assert f"{f} is not UTF-8 text: byte 0x80 at offset 11 (line 2)" in _fails(["--file", str(f)])
    f.write_bytes("f0,f1\n1,2\n".encode("utf-16"))  # Excel's "Unicode text"
    assert f"{f} is UTF-16 text, not UTF-8" in _fails(["--file", str(f)])


def test_predict_input_with_a_byte_order_mark(target, tmp_path):
    """Excel's "CSV UTF-8" starts with a byte order mark: it is not part of the first column's name."""
    f = tmp_path / "excel.csv"
    f.write_bytes(b"\xef\xbb\xbff0,f1\r\n1,2\r\n3,4\r\n")
    result = _run("predict", "--file", str(f))
    assert result.exit_code == 0, result.output
    assert _Api.received[0][1] == {"instances": [{"f0": 1.0, "f1": 2.0}, {"f0": 3.0, "f1": 4.0}]}
    assert _run("predict", input=b"\xef\xbb\xbff0,f1\n5,6\n").exit_code == 0
    assert _Api.received[1][1] == {"instances": [{"f0": 5.0, "f1": 6.0}]}
    f.write_bytes(b'\xef\xbb\xbf{"instances": [[1, 2]], "user_id": "dan"}')
    assert _run("predict", "--file", str(f)).exit_code == 0
    assert _Api.received[2][1] == {"instances": [[1, 2]], "user_id": "dan"}


def test_predict_semicolon_separated_input_is_named(target, tmp_path):
    f = tmp_path / "semi.csv"
    f.write_text("14.1;20.3\n13.0;21.8\n")  # no header: its first line was taken for one
    said = _fails(["--file", str(f)])
    assert f"{f} looks semicolon-separated (every line has 1 ';')" in said
    assert "the values must be comma-separated, with '.' as the decimal point" in said
    f.write_text("f0;f1\n14,1;20,3\n")  # Excel in a locale with the decimal comma
    assert f"{f} looks semicolon-separated" in _fails(["--file", str(f)])
    assert "stdin looks semicolon-separated" in _fails([], input="1;2\n3;4\n")
    assert "stdin looks tab-separated" in _fails([], input="f0\tf1\n1\t2\n")
    # one ';' in a header name is not a separator
    assert _run("predict", input='"f;0",f1\n1,2\n').exit_code == 0
    assert _Api.received[0][1] == {"instances": [{"f;0": 1.0, "f1": 2.0}]}


def test_predict_input_the_json_reader_cannot_take_is_one_clean_error(target, tmp_path):
    """JSON nested too deeply, an integer too long for Python's int(): one error line, no traceback, and
    nothing sent."""
    _Api.received.clear()
    deep = tmp_path / "deep.json"
    deep.write_text('{"instances": ' + "[" * 5000 + "]" * 5000 + "}")
    assert _fails(["--file", str(deep)]) == f"error: {deep} nests arrays or objects too deeply to be read"
    big = tmp_path / "big.json"
    big.write_text('{"instances": [[1, ' + "9" * 5001 + "]]}")
    said = _fails(["--file", str(big)])
    assert (
        said
        == f'error: {big}: ["instances"][0][1]: an integer of 5001 digits is too large for a number; nothing was sent'
    )
    assert _Api.received == []


def test_predict_csv_value_too_large_for_a_number_is_named_as_written():
    with pytest.raises(UserError, match=r"line 2, column b: '1" + "0" * 38 + r"…' is too large for a number"):
        predict_cmd.parse_rows("a,b\n1," + "1" + "0" * 310 + "\n")
    with pytest.raises(UserError, match=r"line 1, column 2: 'nan' is not a finite number"):
        predict_cmd.parse_rows("1,nan\n")


def test_predict_sends_a_compact_body(target, tmp_path):
    """The API's size limit counts bytes: a file it would take must not grow on the way (json.dumps's default
    separators add a space after every comma)."""
    rows = [[0.5, 0.5]] * 1000
    f = tmp_path / "rows.json"
    f.write_text(json.dumps({"instances": rows}, separators=(",", ":")))
    _Api.raw_sizes.clear()
    assert _run("predict", "--file", str(f), "--json").exit_code == 0
    assert _Api.raw_sizes == [f.stat().st_size]

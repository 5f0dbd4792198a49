"""parse_line: commands, parameters, comments, line numbers, checksums, junk."""

from __future__ import annotations

import pytest

from octoprint_safepause.core.gcode import parse_line
from octoprint_safepause.core.gcode.line import read_number, strip_comment


def checksum(s: str) -> int:
    cs = 0
    for b in s.encode():
        cs ^= b
    return cs


@pytest.mark.parametrize(
    "raw,command,params",
    [
        ("G1 X10 Y20.5 E-.5 F1500", "G1", {"X": 10.0, "Y": 20.5, "E": -0.5, "F": 1500.0}),
        ("G1X10Y20", "G1", {"X": 10.0, "Y": 20.0}),
        ("g1 x10 y-2", "G1", {"X": 10.0, "Y": -2.0}),
        ("G01 X1", "G1", {"X": 1.0}),
        ("G0 X 10 Y +2", "G0", {"X": 10.0, "Y": 2.0}),
        ("G28 X0 Y", "G28", {"X": 0.0, "Y": None}),
        ("G28", "G28", {}),
        ("G92.1", "G92.1", {}),
        ("M862.3 P2", "M862.3", {"P": 2.0}),
        ("M104 S200 T1 ; hot", "M104", {"S": 200.0, "T": 1.0}),
        ("T0", "T", {"T": 0.0}),
        ("T-1", "T", {"T": -1.0}),
        ("t1", "T", {"T": 1.0}),
        ("G1 X1e2", "G1", {"X": 100.0}),  # strtod reads an exponent too
        ("\tG1\tX1\r\n", "G1", {"X": 1.0}),
    ],
)
def test_classic_commands(raw, command, params):
    p = parse_line(raw)
    assert p.command == command
    assert p.params == params
    assert not p.malformed


@pytest.mark.parametrize("raw", ["", "   ", "\n", "\r\n", "; only a comment", "  ;x", "(paren comment)"])
def test_blank_and_comment_lines(raw):
    p = parse_line(raw)
    assert p.command is None and not p.malformed and p.params == {}


def test_comments_semicolon_and_parentheses():
    assert parse_line("G1 X1 ; Y2").params == {"X": 1.0}
    assert parse_line("G1 X1;Y2").params == {"X": 1.0}
    assert parse_line("(start) G1 X1 (mid) Y2").params == {"X": 1.0, "Y": 2.0}
    # OctoPrint's strip_comment: a backslash escapes the semicolon
    assert strip_comment("M117 a\\;b ; c") == "M117 a\\;b "
    assert parse_line("M117 a\\;b ; c").text == "a\\;b"


def test_free_text_commands_keep_their_text():
    p = parse_line("M117 any text ; even with letters")
    assert (p.command, p.text, p.params, p.malformed) == ("M117", "any text", {}, False)
    p = parse_line("M118 E1 Hello (not a comment) X10")
    assert p.command == "M118" and p.text == "E1 Hello (not a comment) X10" and p.params == {}
    assert parse_line("M117").text == ""


def test_line_numbers_and_checksums():
    body = "N123 G1 X10 Y20"
    p = parse_line(f"{body}*{checksum(body)}")
    assert (p.command, p.params, p.line_number, p.checksum_ok) == ("G1", {"X": 10.0, "Y": 20.0}, 123, True)
    p = parse_line(f"{body}*{(checksum(body) + 1) % 256}")
    assert p.checksum_ok is False and p.command == "G1"
    p = parse_line("N5 M110 N4")
    assert p.line_number == 5 and p.command == "M110" and p.params == {"N": 4.0}
    assert parse_line("N7").command is None


def test_klipper_macros_and_extended_commands():
    p = parse_line("print_start EXTRUDER=200 BED=60")
    assert (p.command, p.text, p.params, p.malformed) == ("PRINT_START", "EXTRUDER=200 BED=60", {}, False)
    p = parse_line("SET_PRINT_STATS_INFO CURRENT_LAYER=1")
    assert p.command == "SET_PRINT_STATS_INFO"
    p = parse_line("EXCLUDE_OBJECT_DEFINE NAME=a CENTER=1,2 POLYGON=[[1,2],[3,4]]")
    assert p.command == "EXCLUDE_OBJECT_DEFINE" and "POLYGON" in p.text
    assert parse_line("@pause").command == "@PAUSE"


def test_prusa_mmu_tool_commands_have_no_number():
    for raw in ("Tx", "Tc", "T?"):
        p = parse_line(raw)
        assert p.command == "T" and p.params == {"T": None} and not p.malformed


@pytest.mark.parametrize(
    "raw,params",
    [
        ("G1 X0.4 Y20 Z0.30.2 F1500.0 E30", {"X": 0.4, "Y": 20.0, "Z": None, "F": 1500.0, "E": 30.0}),
        ("G1 X1-2", {"X": None}),
        ("G1 X-", {"X": None}),
        ("G1 X. Y1", {"X": None, "Y": 1.0}),
        ("G1 X10 12", {"X": 10.0}),
        ("G1 X1 #", {"X": 1.0}),
    ],
)
def test_malformed_numbers(raw, params):
    p = parse_line(raw)
    assert p.command == "G1" and p.params == params and p.malformed


def test_nan_and_infinity_are_never_numbers():
    for raw in ("G1 Xnan", "G1 Xinf", "G1 X-Infinity", "G1 X1e999"):
        p = parse_line(raw)
        assert all(v is None or v == v and abs(v) != float("inf") for v in p.params.values()), raw
    assert read_number("nan") is None and read_number("inf") is None and read_number("1e999") is None
    assert read_number("-1.5") == -1.5 and read_number("") is None and read_number("x") is None


def test_junk_never_raises():
    for raw in [
        "\x00\x01",
        "é" * 10,
        "G" * 100_000,
        "G1 X" + "9" * 5000,
        "*",
        "N",
        "N1*",
        "G1.2.3 X1",
        "M",
        "🙂 G1",
    ]:
        p = parse_line(raw)
        assert isinstance(p.params, dict)
    assert parse_line(b"G1 X1").params == {"X": 1.0}
    assert parse_line(None).command is None  # type: ignore[arg-type]
    assert parse_line("#").malformed

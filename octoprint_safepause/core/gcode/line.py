"""One raw G-code line -> command, parameters and text. Tolerant: no input makes it raise.

Rules (each chosen to match what a printer or OctoPrint does with the same line):

* ``;`` starts a comment unless escaped as ``\\;``: OctoPrint's ``strip_comment`` (util/comm.py) drops
  the rest of the line before sending, so the printer never sees it. ``( ... )`` comments (Marlin's
  PAREN_COMMENTS, RepRapFirmware) are removed too, except in the free text of M117/M118-like commands.
* A leading ``N<number>`` and a trailing ``*<checksum>`` are removed; the checksum is verified (XOR of
  the UTF-8 bytes before ``*``, as Marlin and OctoPrint compute it).
* A classic command is one letter (G, M, T, D) directly followed by its number: ``G1``, ``g01`` -> "G1",
  ``M862.3``, ``T-1``. Its number is normalised (no leading zeros); ``T<n>`` gives command "T" with the
  tool number in ``params["T"]``.
* Anything else starting with a letter, ``_`` or ``@`` is an extended command (a Klipper macro or
  command, an OctoPrint ``@`` host command): ``command`` is its first word upper-cased, ``text`` the
  rest of the line.
* Parameters are split the way Klipper splits them (``klippy/gcode.py``, ``args_r``): every letter
  starts a new word, so ``G1X10Y20`` works; a space between a letter and its number is allowed (Marlin
  and Klipper both accept ``X 10``). A whole word that Python's float() reads (``X1e3``) keeps that value
  (Marlin's strtod would read it the same). Values are floats; a letter without a number maps to None
  (a flag, as in ``G28 X``); a number that cannot be read (``Z0.30.2``, ``X1-2``, NaN, infinities) maps
  to None and sets ``malformed``.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["ParsedLine", "parse_line", "read_number", "strip_comment", "TEXT_COMMANDS"]

# Commands whose argument is free text, not parameters (Marlin: M23/M28/M30/M32/M33/M117/M118/M928 take
# a string; M0/M1 take an optional message).
TEXT_COMMANDS = frozenset(
    ["M0", "M1", "M16", "M20", "M23", "M28", "M29", "M30", "M32", "M33", "M117", "M118", "M928"]
)

_LETTER_WORDS = re.compile(r"([A-Z])([^A-Z]*)")
_EMPTY: dict[str, float | None] = {}


class ParsedLine(NamedTuple):
    """A parsed line. ``command`` is None for blank or comment-only lines (and for junk that has no
    command, which is also ``malformed``). Do not mutate ``params``."""

    command: str | None
    params: dict[str, float | None]
    text: str
    malformed: bool
    line_number: int | None = None
    checksum_ok: bool | None = None


def read_number(text: str) -> float | None:
    """float(text) if it is a finite number, else None. The tracker's fast path uses the same rule."""
    try:
        value = float(text)
    except (ValueError, TypeError):
        return None
    if value - value:  # NaN or an infinity
        return None
    return value


def strip_comment(line: str) -> str:
    """Drop a ``;`` comment the way OctoPrint does before sending (a backslash escapes the ``;``)."""
    i = line.find(";")
    if i < 0:
        return line
    if "\\" not in line[:i]:
        return line[:i]
    escaped = False
    for j, c in enumerate(line):
        if c == ";" and not escaped:
            return line[:j]
        escaped = c == "\\" and not escaped
    return line


def _strip_parens(s: str) -> str:
    out = []
    depth = 0
    for c in s:
        if c == "(":
            depth = 1
        elif c == ")" and depth:
            depth = 0
        elif not depth:
            out.append(c)
    return "".join(out)


def _xor(s: str) -> int:
    cs = 0
    for b in s.encode("utf-8", "replace"):
        cs ^= b
    return cs


def _parse_params(rest: str):
    """Words of a classic command -> ({letter: value or None}, malformed)."""
    params: dict[str, float | None] = {}
    malformed = False
    pending = None  # a letter still waiting for its number ("X 10")
    for tok in rest.upper().split():
        c = tok[0]
        if "A" <= c <= "Z":
            val = tok[1:]
            if not val:
                params[c] = None
                pending = c
                continue
            v = read_number(val)
            if v is not None:
                params[c] = v
                pending = None
                continue
            pending = None
            for letter, text in _LETTER_WORDS.findall(tok):
                text = text.strip()
                if not text:
                    params[letter] = None
                    pending = letter
                    continue
                v = read_number(text)
                params[letter] = v
                pending = None
                if v is None:
                    malformed = True
        else:
            v = read_number(tok)
            if pending is not None and v is not None:
                params[pending] = v
            else:
                malformed = True
            pending = None
    return params, malformed


def _parse(raw: str) -> ParsedLine:
    s = strip_comment(raw).strip()
    if not s:
        return ParsedLine(None, _EMPTY, "", False)

    line_number = None
    checksum_ok = None
    if s[0] in "Nn" and len(s) > 1 and s[1].isdigit():
        j = 1
        while j < len(s) and s[j].isdigit():
            j += 1
        star = s.rfind("*")
        if star > 0 and s[star + 1 :].strip().isdigit():
            try:
                checksum_ok = _xor(s[:star]) == int(s[star + 1 :].strip())
            except ValueError:
                checksum_ok = False
            s = s[:star]
        try:
            line_number = int(s[1:j])
        except ValueError:
            line_number = None
        s = s[j:].strip()
        if not s:
            return ParsedLine(None, _EMPTY, "", False, line_number, checksum_ok)
    else:
        star = s.rfind("*")
        if star > 0 and s[star + 1 :].strip().isdigit():
            try:
                checksum_ok = _xor(s[:star]) == int(s[star + 1 :].strip())
            except ValueError:
                checksum_ok = False
            s = s[:star].rstrip()

    head = s[:6].upper()
    is_text = head.startswith(("M117", "M118"))
    if "(" in s and not is_text:
        s = _strip_parens(s).strip()
        if not s:
            return ParsedLine(None, _EMPTY, "", False, line_number, checksum_ok)

    c = s[0].upper()
    n = len(s)
    if c in "GMTD" and n > 1 and (s[1].isdigit() or s[1] == "." or (c == "T" and s[1] in "-+")):
        j = 1
        if s[j] in "-+":
            j += 1
        while j < n and (s[j].isdigit() or s[j] == "."):
            j += 1
        number = s[1:j]
        malformed = False
        if c == "T":
            command = "T"
            tool = read_number(number)
            if tool is None or tool != int(tool):
                malformed = True
                tool = None
            params, bad = _parse_params(s[j:])
            params["T"] = tool
            return ParsedLine(command, params, "", malformed or bad, line_number, checksum_ok)
        whole, dot, sub = number.partition(".")
        if whole.isdigit() and (not dot or sub.isdigit()):
            command = c + str(int(whole)) + (dot + sub if dot else "")
        else:
            command = c + number
            malformed = True
        if command in TEXT_COMMANDS:
            return ParsedLine(command, {}, s[j:].strip(), malformed, line_number, checksum_ok)
        params, bad = _parse_params(s[j:])
        return ParsedLine(command, params, "", malformed or bad, line_number, checksum_ok)

    if c == "T" and n > 1 and (n == 2 or s[2].isspace()):
        # Prusa's MMU commands Tx, Tc, T?: a tool change whose tool the firmware picks
        return ParsedLine("T", {"T": None}, s[1:].strip(), False, line_number, checksum_ok)

    if c.isalpha() or c in "_@":
        parts = s.split(None, 1)
        rest = parts[1].strip() if len(parts) > 1 else ""
        return ParsedLine(parts[0].upper(), {}, rest, False, line_number, checksum_ok)

    return ParsedLine(None, _EMPTY, s, True, line_number, checksum_ok)


def parse_line(raw: str) -> ParsedLine:
    """Parse one raw line. Never raises; anything it cannot make sense of comes back ``malformed``."""
    try:
        if not isinstance(raw, str):
            if not isinstance(raw, (bytes, bytearray)):
                return ParsedLine(None, _EMPTY, "", True)
            raw = raw.decode("utf-8", "replace")
        return _parse(raw)
    except Exception:  # a parser bug must not take OctoPrint's comm thread down
        return ParsedLine(None, _EMPTY, "", True)

"""The German catalog is complete and ships with the package, compiled.

OctoPrint's workflow (`python setup.py babel_extract`, `babel_refresh`, `babel_compile`,
`babel_bundle --locale=de`) keeps translations/ and octoprint_safepause/translations/ in step; these
tests fail when a visible string was added or changed without running it and translating.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import babel.messages.extract as babel_extract
from babel.messages.frontend import parse_mapping_cfg  # noqa: E402
from babel.messages.mofile import read_mo  # noqa: E402
from babel.messages.pofile import read_po  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SOURCE_PO = REPO / "translations" / "de" / "LC_MESSAGES" / "messages.po"
BUNDLED = REPO / "octoprint_safepause" / "translations" / "de" / "LC_MESSAGES"
PLACEHOLDER = re.compile(r"%\(\w+\)[sd]")


def extracted() -> set:
    """msgids extracted from the plugin's sources with the project's babel.cfg, as babel_extract does."""
    with open(REPO / "babel.cfg", encoding="utf-8") as cfg:
        method_map, options_map = parse_mapping_cfg(cfg)
    package = os.sep + "octoprint_safepause"

    def only_the_package(path):
        relative = path[len(str(REPO)) :]
        return relative == "" or relative.startswith(package)

    return {
        message
        for _file, _line, message, _comments, _context in babel_extract.extract_from_dir(
            str(REPO), method_map, options_map, directory_filter=only_the_package
        )
        if isinstance(message, str)
    }


def catalog(path: Path):
    with open(path, "rb") as handle:
        return read_po(handle, locale="de")


def test_every_visible_string_has_a_german_translation():
    messages = extracted()
    assert len(messages) > 80  # the sidebar, the settings page, the pop-ups and the schema texts
    german = {m.id: m for m in catalog(SOURCE_PO) if m.id}
    missing = sorted(messages - german.keys())
    assert missing == [], "run `python setup.py babel_refresh` and translate"
    untranslated = sorted(m for m in messages if not german[m].string or german[m].fuzzy)
    assert untranslated == []
    for message in messages:
        assert sorted(PLACEHOLDER.findall(german[message].string)) == sorted(PLACEHOLDER.findall(message)), message


def test_the_template_is_up_to_date():
    with open(REPO / "translations" / "messages.pot", "rb") as handle:
        template = {m.id for m in read_po(handle) if m.id}
    assert template == extracted(), "run `python setup.py babel_extract`"


def test_the_package_ships_the_catalog_compiled():
    # The web interface's JavaScript strings come from the bundled .po, Jinja2 and Python from the .mo.
    source = {m.id: m.string for m in catalog(SOURCE_PO) if m.id}
    assert {m.id: m.string for m in catalog(BUNDLED / "messages.po") if m.id} == source, (
        "run `python setup.py babel_bundle --locale=de`"
    )
    with open(BUNDLED / "messages.mo", "rb") as handle:
        compiled = {m.id: m.string for m in read_mo(handle) if m.id}
    assert compiled == source, "run `python setup.py babel_compile` and `babel_bundle --locale=de`"

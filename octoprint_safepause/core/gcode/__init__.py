"""Pure G-code knowledge: parsing, state tracking per firmware flavour, file replay.

Nothing here imports OctoPrint, so it runs (and is tested) without it.
"""

from .line import ParsedLine, parse_line
from .replay import replay_file
from .state import (
    FLAVOURS,
    MODELLED_COMMANDS,
    PROBING_COMMANDS,
    PrinterState,
    StateTracker,
    modelled_commands,
)

__all__ = [
    "FLAVOURS",
    "MODELLED_COMMANDS",
    "PROBING_COMMANDS",
    "ParsedLine",
    "PrinterState",
    "StateTracker",
    "modelled_commands",
    "parse_line",
    "replay_file",
]

"""Pure G-code knowledge: parsing, state tracking per firmware flavour, file replay.

Nothing here imports OctoPrint, so it runs (and is tested) without it.
"""

from .line import ParsedLine, parse_line
from .replay import replay_file
from .state import FLAVOURS, PrinterState, StateTracker

__all__ = ["FLAVOURS", "ParsedLine", "PrinterState", "StateTracker", "parse_line", "replay_file"]

"""The pure core: G-code knowledge, safe sequences, the controller, recovery. Imports nothing from
OctoPrint or Flask (tests/unit/test_layers.py checks); it reaches OctoPrint only through `port.PrinterPort`."""

"""Everything that touches OctoPrint: the port over its printer and files, the native-button guard."""

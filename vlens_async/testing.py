"""pytest plugin for vlens-async: emulator fixtures (being built; see issue 3)."""

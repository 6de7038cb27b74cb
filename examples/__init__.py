"""Examples of vlens-async in use (not part of the installed package)."""

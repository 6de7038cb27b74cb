"""Tests of the reference FastAPI integration, against the emulator over loopback."""

"""Tests of the `vlens` command (issue 12): which service it talks to, inputs checked before
anything is sent, one-line errors in the CLI's own words."""

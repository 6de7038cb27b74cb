"""Shared by every test: the plugin's fixtures (``vlens_emulator``, ``vlens_client``,
``no_backoff``) come from the installed ``vlens_async`` pytest11 entry point; helpers live in
:mod:`tests.helpers`."""

from __future__ import annotations

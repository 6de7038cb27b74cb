"""A stateful, Vlens-compatible emulator (aiohttp.web) with fault injection and a control API.

::

    from vlens_async.emulator import EmulatorConfig, running_emulator

    async with running_emulator(EmulatorConfig(seed=1)) as emu:
        ...  # point a client at emu.base_url with emu.api_key

Modules: ``config`` (EmulatorConfig, TenantConfig), ``app`` (create_app and the middleware),
``accounts``/``verify``/``admin`` (the endpoints), ``state`` (the store), ``rules`` (verification
rules), ``identity`` (card fields), ``readers`` (synthetic OCR), ``payload`` (body and image
checks),
``envelopes`` (JSON building), ``faults`` (fault and latency specs), ``ratelimit``, ``metrics``,
``storage`` (bounded image store), ``control`` (the /_emulator/ API), ``server`` (running it).
"""

from .app import create_app
from .config import AdminConfig, EmulatorConfig, TenantConfig, server_tls_context
from .control import EmulatorControl
from .faults import FaultConfig, FaultKind, FaultRule, Latency, LatencyRule
from .httpio import STATE_KEY
from .server import (
    BackgroundEmulator,
    RunningEmulator,
    emulator_in_thread,
    running_emulator,
    serve_forever,
)
from .state import EmulatorState

__all__ = [
    "STATE_KEY",
    "AdminConfig",
    "BackgroundEmulator",
    "EmulatorConfig",
    "EmulatorControl",
    "EmulatorState",
    "FaultConfig",
    "FaultKind",
    "FaultRule",
    "Latency",
    "LatencyRule",
    "RunningEmulator",
    "TenantConfig",
    "create_app",
    "emulator_in_thread",
    "running_emulator",
    "serve_forever",
    "server_tls_context",
]

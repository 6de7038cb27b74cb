"""``python -m examples.fastapi_kyc``: the app with an embedded emulator, on 127.0.0.1:8000.

The emulator is not Vlens: it reads only synthetic cards (the page links to one) and keeps
everything in memory. ``--db`` is the SQLite file of the app's own store.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

import uvicorn

from vlens_async.emulator import running_emulator

from .app import Settings, create_app


async def serve(host: str, port: int, db_path: str) -> None:
    """Start the emulator, then the app against it, until Ctrl-C."""
    async with running_emulator() as emulator:
        settings = Settings(api_key=emulator.api_key, base_url=emulator.base_url, db_path=db_path)
        app = create_app(settings, demo_on=emulator)
        logging.getLogger("fastapi_kyc").warning(
            "using the embedded emulator at %s, not Vlens; open http://%s:%d",
            emulator.base_url,
            host,
            port,
        )
        await uvicorn.Server(uvicorn.Config(app, host=host, port=port)).serve()


def main() -> None:
    """Parse the options and serve."""
    parser = argparse.ArgumentParser(prog="python -m examples.fastapi_kyc", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--db", default="kyc-example.db", help="the app's SQLite file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(args.host, args.port, args.db))


if __name__ == "__main__":
    main()

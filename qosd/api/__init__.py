"""The daemon's local Unix-socket API (contract: docs/API.md).

Kept import-light on purpose: `client` and `errors` use only the standard library so that
collectives and scripts can talk to the daemon without pulling in asyncio servers or pyroute2.
"""

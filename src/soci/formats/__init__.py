"""Pure formats: bytes <-> frozen dataclasses. No I/O, no asyncio, no logging; imports only soci.errors."""

"""``asyncpg.connect`` with its arguments worked out once, for the connections lent a kept backend.

On a lent backend (see ``handoff``) a connection costs ~0.1 ms, and a third of that was asyncpg
working out the same arguments every time: defaults, environment variables, the home directory
and its password file. asyncpg does it in ``connect_utils._parse_connect_arguments``, then makes
the connection in ``connect_utils._connect_addr``; here the first is called once and the second
per connection. Both are asyncpg's private functions, unchanged from 0.29 to 0.32: their
parameters are checked against the names known, and with any other asyncpg, or arguments that
ask for more than one address or a session attribute, there is no quick way and ``asyncpg.connect``
is called as usual.
"""
from __future__ import annotations

import asyncio
import inspect
from typing import Any, Awaitable, Callable

import asyncpg

_ADDR_PARAMETERS = {"addr", "loop", "params", "config", "connection_class", "record_class"}


def connector(kwargs: dict[str, Any], connection_class: Any = None) -> Callable[[], Awaitable[Any]] | None:
    """A function making what ``asyncpg.connect(**kwargs, connection_class=...)`` makes, in the running
    loop; None when this asyncpg's private functions are not the ones known."""
    try:
        from asyncpg import connect_utils

        parse, connect_addr = connect_utils._parse_connect_arguments, connect_utils._connect_addr
        wanted = inspect.signature(parse).parameters
        if set(inspect.signature(connect_addr).parameters) != _ADDR_PARAMETERS:
            return None
        defaults = {name: p.default for name, p in inspect.signature(asyncpg.connect).parameters.items()
                    if name in wanted and p.default is not inspect.Parameter.empty}
        arguments = {**defaults, **{k: v for k, v in kwargs.items() if k in wanted}}
        if set(arguments) != set(wanted) or set(kwargs) - set(wanted):
            return None
        addrs, params, config = parse(**arguments)
        if len(addrs) != 1 or params.target_session_attrs != connect_utils.SessionAttribute.any:
            return None
    except Exception:  # noqa: BLE001 - not the asyncpg these functions are known from
        return None
    addr, cls = addrs[0], connection_class or asyncpg.Connection

    def connect() -> Awaitable[Any]:
        # No timeout around it, unlike asyncpg.connect: a kept backend answers at once (its greeting is
        # replayed), and the URLs served so are a local server's (urls.keepable).
        return connect_addr(addr=addr, loop=asyncio.get_running_loop(), params=params, config=config,  # type: ignore[no-any-return]
                            connection_class=cls, record_class=asyncpg.Record)

    return connect

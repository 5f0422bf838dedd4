"""The URLs a service is given, and the endpoints behind each: one per address its name
resolves to."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit, urlunsplit

Resolver = Callable[[str, int], Awaitable[list[str]]]


def split_urls(value: str | Sequence[str]) -> list[str]:
    """``http://a:8001,http://b:8001`` (or a list) as distinct URLs without a trailing slash."""
    parts = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    urls = list(dict.fromkeys(part.strip().rstrip("/") for part in parts if part.strip()))
    if not urls:
        raise ValueError("no service URL given")
    for url in urls:
        parsed = urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
    return urls


def first_url(value: str) -> str:
    """The first of several URLs: where a single call (``editbench edit``/``score``) goes."""
    return split_urls(value)[0]


async def resolve_addresses(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (TCP), in the resolver's order: one per replica."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return one_family([str(info[4][0]) for info in infos])


def one_family(addresses: Sequence[str]) -> list[str]:
    """The IPv4 addresses if there are any, else the IPv6 ones, without repeats: on a dual-stack
    network each replica has one of each, and must count once."""
    unique = list(dict.fromkeys(addresses))
    v4 = [a for a in unique if ipaddress.ip_address(a).version == 4]
    return v4 or unique


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _with_host(url: str, address: str) -> str:
    parsed = urlsplit(url)
    host = f"[{address}]" if ":" in address else address
    netloc = f"{host}:{parsed.port}" if parsed.port else host
    return urlunsplit(parsed._replace(netloc=netloc))


def _default_port(url: str) -> int:
    parsed = urlsplit(url)
    return parsed.port or (443 if parsed.scheme == "https" else 80)


async def expand(url: str, resolve: Resolver = resolve_addresses) -> list[str]:
    """The endpoints behind one given URL: itself (an address), or one per address its name
    resolves to (none while it resolves to none). An https name with one address stays a
    name: certificates name hosts, not addresses."""
    parsed = urlsplit(url)
    host = parsed.hostname or ""
    if _is_address(host):
        return [url]
    addresses = await resolve(host, _default_port(url))
    if parsed.scheme == "https" and len(addresses) == 1:
        return [url]
    return [_with_host(url, address) for address in addresses]

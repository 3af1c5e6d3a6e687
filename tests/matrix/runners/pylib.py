"""Download a package the way a script using one HTTP library would.

    python pylib.py LIBRARY PAGE_URL FILE_URL OUT [--proxy URL] [--ca FILE]

GETs PAGE_URL (the project page) and FILE_URL (the wheel), both through the redirector, following
redirects, checks the page links to the wheel and writes the wheel to OUT: one redirect-following GET
per download, as curl and wget do in the matrix. Errors are printed as the library words them
(``module.Class: message``, the last line of a traceback), exit 1.
Runs on the interpreter of the library's own virtualenv; imports only the library asked for.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import ssl
import sys


def with_requests(proxy, ca):
    import requests

    session = requests.Session()
    session.trust_env = False  # proxies and CA only as given here

    def get(url):
        response = session.get(
            url, proxies={"http": proxy, "https": proxy} if proxy else None, verify=ca or True, timeout=60
        )
        response.raise_for_status()
        return response.url, response.content

    return get


def with_httpx(proxy, ca):
    import httpx

    client = httpx.Client(
        proxy=proxy,
        verify=ssl.create_default_context(cafile=ca) if ca else True,
        follow_redirects=True,
        trust_env=False,
        timeout=60,
    )

    def get(url):
        response = client.get(url)
        response.raise_for_status()
        return str(response.url), response.content

    return get


def with_urllib3(proxy, ca):
    import urllib3

    pool = urllib3.ProxyManager(proxy, ca_certs=ca) if proxy else urllib3.PoolManager(ca_certs=ca)

    def get(url):
        response = pool.request("GET", url, redirect=True, timeout=60)
        if response.status >= 400:
            raise RuntimeError(f"HTTP {response.status} after following redirects from {url}")
        return response.geturl() or url, response.data

    return get


def with_urllib(proxy, ca):
    import urllib.request

    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({"http": proxy, "https": proxy} if proxy else {}),
        urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=ca) if ca else None),
    )

    def get(url):
        with opener.open(url, timeout=60) as response:
            return response.geturl(), response.read()

    return get


def with_aiohttp(proxy, ca):
    import aiohttp

    context = ssl.create_default_context(cafile=ca) if ca else True

    async def fetch(url):
        async with aiohttp.ClientSession(trust_env=False, raise_for_status=True) as session:
            async with session.get(url, proxy=proxy, ssl=context) as response:
                return str(response.url), await response.read()

    return lambda url: asyncio.run(fetch(url))


LIBRARIES = {
    "requests": with_requests,
    "httpx": with_httpx,
    "urllib3": with_urllib3,
    "urllib": with_urllib,
    "aiohttp": with_aiohttp,
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("library", choices=sorted(LIBRARIES))
    parser.add_argument("url")
    parser.add_argument("file_url")
    parser.add_argument("out")
    parser.add_argument("--proxy")
    parser.add_argument("--ca")
    args = parser.parse_args()
    get = LIBRARIES[args.library](args.proxy, args.ca)
    try:
        _, page = get(args.url)
        name = args.file_url.rsplit("/", 1)[-1]
        if not re.search(rf'href="[^"]*{re.escape(name)}', page.decode("utf-8", "replace")):
            raise RuntimeError(f"the page from {args.url} does not link to {name}")
        _, data = get(args.file_url)
    except Exception as exc:  # what the user would see: the traceback's last line
        print(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}", file=sys.stderr)
        return 1
    with open(args.out, "wb") as out:
        out.write(data)
    print(f"downloaded {name} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

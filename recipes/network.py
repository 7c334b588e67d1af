"""Is the internet reachable? One cheap, bounded check before anything tries to download.

TFDS and `keras.applications` both download on first use; offline, they retry for a long
time or fail deep inside a stack trace. Asking once, up front, lets a recipe fail in a
second with a message that says what to do instead.

    from headstart.recipes import network
    if not network.is_online():
        raise UsageError("... cannot be downloaded here; ...")
"""

import functools
import socket
import threading
import urllib.parse
import urllib.request

# Where TFDS datasets and keras.applications weights are downloaded from.
DOWNLOAD_HOST = "storage.googleapis.com"
HTTPS_PORT = 443


@functools.lru_cache(maxsize=None)
def is_online(host=DOWNLOAD_HOST, port=HTTPS_PORT, timeout=3.0):
    """Whether a TCP connection to `host:port` opens within `timeout` seconds.

    The answer is cached for the life of the process: connectivity rarely changes during
    one run, and the data and backbone modules both ask. Tests that fake the answer
    monkeypatch this function (or call `is_online.cache_clear()`).

    When an HTTPS proxy is configured (`HTTPS_PROXY`, ...) and `host` is not bypassed,
    downloads go through the proxy, so the proxy is what is checked.

    Args:
        host: host name to reach. Defaults to `"storage.googleapis.com"`.
        port: TCP port. Defaults to `443`.
        timeout: seconds to wait, name resolution included. Defaults to `3.0`.

    Returns:
        `True` if the connection opened, else `False`. Never raises for network errors.
    """
    host, port = _through_proxy(host, port)
    opened = []

    def connect():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            opened.append(True)
        except OSError:
            pass

    # `create_connection` bounds the connect by `timeout` but not the DNS lookup, which can
    # hang for many seconds on a machine without a resolver; a daemon thread bounds both.
    thread = threading.Thread(target=connect, name=f"is_online({host})", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(opened)


def _through_proxy(host, port):
    """(host, port) to connect to: the HTTPS proxy's when one applies to `host`."""
    proxy = urllib.request.getproxies().get("https")
    if not proxy or urllib.request.proxy_bypass(host):
        return host, port
    parsed = urllib.parse.urlparse(proxy if "://" in proxy else f"http://{proxy}")
    if not parsed.hostname:
        return host, port
    return parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)

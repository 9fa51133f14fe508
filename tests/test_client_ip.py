"""Client IP: the socket peer, X-Forwarded-For only from configured trusted proxies."""

from __future__ import annotations

import ipaddress

from keyplane.http.middleware import client_ip_of

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"),)


def scope(peer: str, *forwarded: bytes) -> dict[str, object]:
    return {"client": (peer, 1234), "headers": [(b"x-forwarded-for", f) for f in forwarded]}


class TestClientIp:
    def test_untrusted_peer_forwarded_header_is_ignored(self) -> None:
        """A client cannot spoof its IP with X-Forwarded-For."""
        assert client_ip_of(scope("203.0.113.9", b"127.0.0.1"), TRUSTED) == "203.0.113.9"
        assert client_ip_of(scope("203.0.113.9", b"127.0.0.1"), ()) == "203.0.113.9"

    def test_trusted_proxy_rightmost_untrusted_hop_wins(self) -> None:
        """Behind trusted proxies, the right-most hop that is not a proxy is the client."""
        s = scope("10.0.0.2", b"1.1.1.1, 198.51.100.7", b"10.0.0.3")
        assert client_ip_of(s, TRUSTED) == "198.51.100.7"

    def test_trusted_proxy_without_header_is_the_peer(self) -> None:
        """No header: the proxy's own address."""
        assert client_ip_of(scope("10.0.0.2"), TRUSTED) == "10.0.0.2"

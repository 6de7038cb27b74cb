"""NO_PROXY as curl and requests read it, for ``trust_env=True``: names, ports, IP networks."""

from __future__ import annotations

import pytest

from vlens_async._transport import environment_proxy

PROXY = "http://proxy.corp:3128"

CASES = [
    ("api.vlens.example", "https://api.vlens.example", True),
    ("*", "https://api.vlens.example", True),
    ("vlens.example", "https://api.vlens.example", True),  # a domain spares its subdomains
    (".vlens.example", "https://api.vlens.example", True),
    ("*.vlens.example", "https://api.vlens.example", True),
    ("API.Vlens.Example", "https://api.vlens.example", True),
    ("other.example, api.vlens.example", "https://api.vlens.example", True),
    ("lens.example", "https://api.vlens.example", False),  # not a suffix of a label
    ("api.vlens.example:443", "https://api.vlens.example", True),  # the scheme's port
    ("api.vlens.example:8443", "https://api.vlens.example:8443", True),
    ("api.vlens.example:8443", "https://api.vlens.example", False),
    ("10.0.0.0/8", "https://10.1.2.3", True),
    ("10.0.0.0/8", "https://11.1.2.3", False),
    ("10.0.0.0/8", "https://api.vlens.example", False),
    ("127.0.0.1", "http://127.0.0.1:8000", True),
    ("::1/128", "https://[::1]:8443", True),
    ("[::1]:8443", "https://[::1]:8443", True),
    ("[::1]:443", "https://[::1]:8443", False),
    ("[0:0::1]:8443", "https://[::1]:8443", True),  # the same address, written longer
    ("10", "https://10.0.0.10", False),  # an address is not a domain with suffixes
    ("other.example,,\tapi.vlens.example.", "https://api.vlens.example", True),
    ("other.example,,", "https://api.vlens.example", False),
]


@pytest.mark.parametrize(("no_proxy", "url", "spared"), CASES)
def test_no_proxy_entries(
    no_proxy: str, url: str, spared: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each NO_PROXY form spares exactly the hosts (and ports) it names."""
    for name in ("https_proxy", "http_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", PROXY)
    monkeypatch.setenv("HTTP_PROXY", PROXY)
    monkeypatch.setenv("NO_PROXY", no_proxy)
    proxy, _ = environment_proxy(url)
    assert (proxy is None) is spared
    assert spared or proxy == PROXY

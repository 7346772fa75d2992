"""A signed-in console session over HTTPS through the VM's port forward: cookies, CSRF, redirects
read (not followed). Only what the boot test needs; the browser tests cover the pages themselves."""

from __future__ import annotations

import http.client
import re
import urllib.parse

from image import vm


class ConsoleSession:
    def __init__(self, machine: vm.VM) -> None:
        self.machine = machine
        self.cookies: dict[str, str] = {}

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Referer": "https://enclave.local/", "Origin": "https://enclave.local", **(extra or {})}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return headers

    def _keep(self, headers: http.client.HTTPMessage) -> None:
        for cookie in headers.get_all("Set-Cookie") or []:
            name, value = cookie.split(";", 1)[0].split("=", 1)
            if value in ("", '""'):
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value

    def get(self, path: str, timeout: float = 120) -> tuple[int, str, str]:
        """(status, Location or "", body)"""
        status, headers, body, _ = self.machine.https_request("GET", path, headers=self._headers(), timeout=timeout)
        self._keep(headers)
        return status, headers.get("Location", ""), body.decode(errors="replace")

    def post(self, path: str, form: dict[str, str], timeout: float = 120) -> tuple[int, str, str]:
        data = {"csrfmiddlewaretoken": self.cookies.get("csrftoken", ""), **form}
        status, headers, body, _ = self.machine.https_request(
            "POST",
            path,
            body=urllib.parse.urlencode(data).encode(),
            headers=self._headers({"Content-Type": "application/x-www-form-urlencoded"}),
            timeout=timeout,
        )
        self._keep(headers)
        return status, headers.get("Location", ""), body.decode(errors="replace")

    def login(self, username: str, password: str) -> tuple[int, str, str]:
        self.get("/login/")
        return self.post("/login/", {"username": username, "password": password})


def first(pattern: str, text: str) -> str:
    found = re.search(pattern, text, re.S)
    assert found, f"{pattern!r} not in {text[:2000]}"
    return found.group(1)

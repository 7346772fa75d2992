"""Boot the signed appliance image under qemu with the cable pulled (user networking, restrict=on) and
check what a hospital's IT team would: HTTPS from the appliance CA, the console behind nginx, the first
boot, the signed model store, the air gap, closed ports, a signed update bundle on a USB stick imported
and activated from the Updates page (its .deb installed offline), chat through the gateway, a rollback to
the factory image, and a clean power-down. Runs in this order."""

from __future__ import annotations

import html
import http.client
import json
import re
import socket
import time
import urllib.parse

import pyotp
import pytest
from cryptography import x509

from image import stick, vm
from tests.image.vm.conftest import BOOT_TIMEOUT, Listener
from tests.image.vm.console import ConsoleSession, first

STEP_TIMEOUT = 900.0
ADMIN_NEW_PASSWORD = "usb-stick-Admin-2026-pw"


def test_https_is_served_with_the_appliance_ca_certificate(machine: vm.VM) -> None:
    status, body, meta = machine.https_get("/healthz")
    assert status == 200
    assert body == b"ok\n"
    cert = x509.load_der_x509_certificate(meta["der"])  # type: ignore[arg-type]
    assert cert.issuer.rfc4514_string().startswith("CN=Enclave Appliance CA")
    assert "Strict-Transport-Security" in str(meta["head"])


def test_first_boot_ran_once_and_completed(machine: vm.VM) -> None:
    machine.wait_for_console("enclave-firstboot: first boot complete", timeout=BOOT_TIMEOUT)
    text = machine.console_text()
    for step in ("SSH host keys created", "appliance CA created", "database migrated", "audit key id:"):
        assert f"enclave-firstboot: {step}" in text
    assert "FIRSTBOOT_STEP_FAILED" not in text
    assert text.count("enclave-firstboot: one-time password:") == 1


def test_the_console_answers_through_nginx(machine: vm.VM) -> None:
    """gunicorn serving mgmt.wsgi behind nginx: an answer from Django (not nginx's 502 while it starts).
    Under TCG the first request after boot can take tens of seconds (Python imports in an emulated CPU)."""
    deadline = time.monotonic() + BOOT_TIMEOUT
    status, head = 0, ""
    while time.monotonic() < deadline:
        try:
            status, _, meta = machine.https_get("/", timeout=120)
        except (TimeoutError, OSError, http.client.HTTPException):
            continue
        head = str(meta["head"])
        if status not in (502, 503, 504):
            break
        time.sleep(2)
    assert status == 302, head
    assert "Server: nginx" in head
    assert "X-Frame-Options: DENY" in head, "the answer must come from Django's middleware"
    assert "Location: /login/" in head


def _login(machine: vm.VM, username: str, password: str) -> tuple[int, http.client.HTTPMessage, bytes]:
    status, headers, body, _ = machine.https_request("GET", "/login/", timeout=120)
    assert status == 200
    csrf_cookie = re.search(r"csrftoken=([^;]+)", "; ".join(headers.get_all("Set-Cookie") or []))
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', body)
    assert csrf_cookie, headers
    assert token, body[:500]
    form = urllib.parse.urlencode(
        {"csrfmiddlewaretoken": token.group(1).decode(), "username": username, "password": password}
    ).encode()
    status, headers, body, _ = machine.https_request(
        "POST",
        "/login/",
        body=form,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"csrftoken={csrf_cookie.group(1)}",
            "Referer": "https://enclave.local/login/",
            "Origin": "https://enclave.local",
        },
        timeout=120,
    )
    return status, headers, body


def test_the_first_admin_logs_in_with_the_one_time_password(machine: vm.VM) -> None:
    machine.wait_for_console("enclave-firstboot: first boot complete", timeout=BOOT_TIMEOUT)
    text = machine.console_text()
    user = re.search(r"enclave-firstboot: admin user:\s+(\S+)", text)
    password = re.search(r"enclave-firstboot: one-time password:\s+(\S+)", text)
    assert user, text[-3000:]
    assert password, text[-3000:]
    status, _, body = _login(machine, user.group(1), password.group(1) + "-wrong")
    assert status == 401
    assert b"auth.bad_credentials" in body
    status, headers, _ = _login(machine, user.group(1), password.group(1))
    assert status == 302, headers
    assert "sessionid=" in "; ".join(headers.get_all("Set-Cookie") or [])
    assert headers["Location"] != "/login/"


def test_the_gateway_answers_behind_nginx_and_wants_a_key(machine: vm.VM) -> None:
    """appliance.gateway.asgi:app under gunicorn's ASGI worker, reached at /v1/ through nginx."""
    deadline = time.monotonic() + BOOT_TIMEOUT
    status, body = 0, b""
    while time.monotonic() < deadline:
        try:
            status, _, body, _ = machine.https_request("GET", "/v1/models", timeout=120)
        except (TimeoutError, OSError, http.client.HTTPException):
            continue
        if status not in (502, 503, 504):
            break
        time.sleep(2)
    assert status == 401, body[:300]
    assert b"missing_api_key" in body
    status, _, body, _ = machine.https_request(
        "GET", "/v1/models", headers={"Authorization": "Bearer enc_nosuchkey_secret"}, timeout=120
    )
    assert status == 401
    assert b"invalid_api_key" in body


def test_the_signed_fixture_weights_were_verified_at_boot(machine: vm.VM) -> None:
    machine.wait_for_console("enclave-model-verify: 2 active model(s) verified", timeout=BOOT_TIMEOUT)
    assert "enclave-model-verify: enclave-fixture/1 OK (2 files)" in machine.console_text()


def test_the_guest_cannot_reach_anything_outside(machine: vm.VM, listener: Listener) -> None:
    machine.wait_for_console("enclave-egress-check: OK: 0 reachable", timeout=BOOT_TIMEOUT)
    lines = [line for line in machine.console_text().splitlines() if "enclave-egress-check:" in line]
    probe = f"10.0.2.2:{listener.port}"
    assert any(f"{probe} blocked" in line for line in lines), lines
    assert any("1.1.1.1:443 blocked" in line for line in lines), lines
    assert not any("REACHABLE" in line for line in lines), lines
    # The guest's own firewall dropped them (its egress counter moved), before QEMU's restrict=on would.
    dropped = [line.split("dropped ")[1].split()[0] for line in lines if "firewall dropped" in line]
    assert dropped, lines
    assert dropped[0].isdigit(), lines
    assert int(dropped[0]) > 0, lines
    assert listener.accepted == 0


def test_only_443_and_22_answer_from_the_lan(machine: vm.VM) -> None:
    with socket.create_connection(("127.0.0.1", machine.forwards[22]), timeout=10) as ssh:
        ssh.settimeout(20)
        assert ssh.recv(64).startswith(b"SSH-2.0-OpenSSH")
    for guest_port in (80, 8001):
        with socket.create_connection(("127.0.0.1", machine.forwards[guest_port]), timeout=10) as sock:
            sock.settimeout(8)
            try:
                sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
                answer = sock.recv(64)
            except (TimeoutError, ConnectionResetError):
                answer = b""
            assert answer == b"", f"guest port {guest_port} answered {answer!r}"


@pytest.fixture(scope="module")
def admin(machine: vm.VM) -> ConsoleSession:
    """The first admin, signed in: one-time password, TOTP enrolment (pyotp), then a new password."""
    machine.wait_for_console("enclave-firstboot: first boot complete", timeout=BOOT_TIMEOUT)
    text = machine.console_text()
    user = first(r"enclave-firstboot: admin user:\s+(\S+)", text)
    otp = first(r"enclave-firstboot: one-time password:\s+(\S+)", text)
    session = ConsoleSession(machine)
    status, _, body = session.login(user, otp)
    assert status == 302, body[:500]
    status, _, page = session.get("/mfa/enrol/")
    assert status == 200, page[:500]
    secret = first(r'id="totp-secret">([A-Z2-7]+)<', page)
    status, _, body = session.post("/mfa/enrol/", {"token": pyotp.TOTP(secret).now()})
    assert status == 302, body[:1500]
    status, _, body = session.post(
        "/password/",
        {"old_password": otp, "new_password": ADMIN_NEW_PASSWORD, "new_password_again": ADMIN_NEW_PASSWORD},
    )
    assert status == 302, body[:1500]
    return session


def _bundle_rows(page: str) -> dict[str, str]:
    return dict(re.findall(r'<tr data-bundle="([^"]+)">(.*?)</tr>', page, re.S))


def _run_step(admin: ConsoleSession, path: str, form: dict[str, str]) -> tuple[str, str, str]:
    """POST an update step and follow the job it created (the redirect names it) until it ends;
    (outcome as the History shows it, error code, the Updates page read after the job ended)."""
    status, location, body = admin.post(path, form)
    assert status == 302, body[:2000]
    job_id = first(r"^/updates/\?job=(\d+)$", location)
    deadline = time.monotonic() + STEP_TIMEOUT
    while time.monotonic() < deadline:
        status, _, fragment = admin.get(f"/updates/progress/?job={job_id}")
        assert status == 200, fragment[:2000]
        if first(r'data-status="(\w+)"', fragment) in ("done", "failed"):
            break
        time.sleep(3)
    else:
        raise TimeoutError(f"{path} (job {job_id}) did not finish within {STEP_TIMEOUT} s")
    status, _, page = admin.get(f"/updates/?job={job_id}")
    assert status == 200
    history = page.split("<h2>History</h2>", 1)[1]
    found = re.search(rf'<tr><td>{job_id}</td>.*?<td data-code="([^"]*)">(\w+)', history, re.S)
    assert found, history[:3000]
    code, outcome = found.group(1), found.group(2)
    return outcome, code, page


def test_usb_sticks_are_found_by_udev_and_their_bundles_verified(machine: vm.VM, admin: ConsoleSession) -> None:
    """Both sticks mounted read-only by the udev rule: the ext4 partition of one, the other whole (FAT32,
    no partition table). The Updates page (pyudev discovery) verifies the signed bundles on one and names
    what is wrong with the folder on the other."""
    machine.wait_for_console("enclave-media: /dev/sda1 mounted read-only", timeout=BOOT_TIMEOUT)
    machine.wait_for_console("enclave-media: /dev/sdb mounted read-only", timeout=BOOT_TIMEOUT)
    status, _, page = admin.get("/updates/")
    assert status == 200, page[:500]
    rows = _bundle_rows(page)
    assert set(rows) == {"ENCLAVE-2026Q4", "ENCLAVE-2026Q4-broken", "ENCLAVE-holiday-photos"}, rows
    for name in ("ENCLAVE-2026Q4", "ENCLAVE-2026Q4-broken"):
        assert "/media/enclave/sd" in rows[name]
        assert 'data-code="bundle.verified"' in rows[name], rows[name]
        assert "good: 2 targets keys" in rows[name]
    assert 'data-code="bundle.not_a_bundle"' in rows["ENCLAVE-holiday-photos"]
    assert 'data-testid="current-release">none yet<' in page


def test_a_folder_that_is_not_a_bundle_is_refused_with_its_code(admin: ConsoleSession) -> None:
    outcome, code, page = _run_step(admin, "/updates/import/", {"bundle": "ENCLAVE-holiday-photos"})
    assert (outcome, code) == ("Failed", "bundle.not_a_bundle")
    assert 'data-testid="update-phase">idle<' in page


def test_a_bundle_naming_a_package_its_repository_lacks_is_rolled_back(machine: vm.VM, admin: ConsoleSession) -> None:
    outcome, code, page = _run_step(admin, "/updates/import/", {"bundle": "ENCLAVE-2026Q4-broken"})
    assert (outcome, code) == ("Done", ""), page[-3000:]
    assert 'data-testid="update-phase">staged<' in page
    outcome, code, page = _run_step(admin, "/updates/activate/", {})
    assert (outcome, code) == ("Failed", "bundle.apt_package_missing"), page[-3000:]
    assert "enclave-not-in-this-bundle" in html.unescape(page)
    # The pointers went back and nothing was applied: the box is as it was.
    assert 'data-testid="current-release">none yet<' in page
    assert 'data-testid="update-phase">staged<' in page
    assert "enclave-apply-bundle: applying" not in machine.console_text()


def test_a_signed_bundle_from_the_stick_is_imported_and_activated_offline(
    machine: vm.VM, admin: ConsoleSession
) -> None:
    """The good bundle: staged from the stick, activated; its .deb installed from its own apt repository
    by apply-bundle.yml (root service), the model pointer flipped, llama-server restarted on the release's
    GGUF by enclave-engine-follow, the health gate's smoke inference answered by it (ENCLAVE_UPDATES_SMOKE_
    ENDPOINTS names it: the activation is Done only once the engine serves the activated model), and both
    steps in the audit trail."""
    outcome, code, page = _run_step(admin, "/updates/import/", {"bundle": "ENCLAVE-2026Q4"})
    assert (outcome, code) == ("Done", ""), page[-3000:]
    outcome, code, page = _run_step(admin, "/updates/activate/", {})
    assert (outcome, code) == ("Done", ""), page[-3000:]
    assert 'data-testid="current-release">2026Q4<' in page
    assert 'data-testid="update-phase">idle<' in page
    text = machine.console_text()
    # root re-verified the staged release from the shipped trust root and gave apt its own checked copy
    assert "enclave-apply-bundle: 2026Q4: signed metadata verified" in text
    assert "enclave-apply-bundle: applying 2026Q4: packages enclave-stick-probe" in text
    assert f"enclave-apply-bundle: {stick.PROBE_PACKAGE} 1.0-1 installed from the bundle's repository" in text
    released = "/var/lib/enclave/bundles/releases/2026Q4/files/models/enclave-fixture-gguf/2026Q4"
    assert f"enclave-engine: llama: the activated model changed ({released}); restarting" in text
    status, _, audit = admin.get("/audit/?action=bundle.activate")
    assert status == 200
    audit = html.unescape(audit)
    rows = re.findall(r'<tr class="outcome-(\w+)">(.*?)</tr>', audit, re.S)
    ok = [row for outcome_, row in rows if outcome_ == "ok" and "2026Q4" in row]
    failed = [row for outcome_, row in rows if outcome_ == "error" and "2026Q4-broken" in row]
    assert ok, audit[-3000:]
    assert failed, audit[-3000:]
    assert "bundle.apt_package_missing" in failed[0]
    assert "'outcome': 'applied'" in ok[0]
    assert f"'{stick.PROBE_PACKAGE}': '1.0-1'" in ok[0]
    assert "'models': '../releases/2026Q4/files/models'" in ok[0]
    status, _, audit = admin.get("/audit/?action=bundle.import")
    assert status == 200
    assert "2026Q4" in audit


@pytest.fixture(scope="module")
def staff_key(machine: vm.VM, admin: ConsoleSession) -> str:
    """A staff member's API key in General, issued from the console."""
    status, _, page = admin.get("/users/")
    assert status == 200, page[:500]
    department = first(r'<option value="(\d+)">General</option>', page)
    form = {"username": "radiology-app", "role": "staff", "department": department, "full_name": "", "email": ""}
    status, _, page = admin.post("/users/", form)
    assert status == 200, page[:1500]
    user_id = first(r'href="/users/(\d+)/"', page)
    status, _, page = admin.post(f"/users/{user_id}/keys/", {"name": "image boot test"})
    assert status == 200, page[:1500]
    return first(r'<code id="api-key">([^<]+)</code>', page)


CHAT_REQUEST = {"model": "default", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8}


def _chat(machine: vm.VM, key: str, *, retry_unknown_key_for: float = 0.0) -> tuple[int, bytes, float]:
    """POST a chat completion through nginx; while the engine restarts (502/503/504), or for a while an
    unknown key (a new key reaches the gateway's workers by pub/sub, with a reload every 30 s as the net,
    decision 0353: under TCG that can take a while), ask again. (status, body, seconds it took)."""
    started = time.monotonic()
    deadline = started + BOOT_TIMEOUT
    status, answer = 0, b""
    while time.monotonic() < deadline:
        try:
            status, _, answer, _ = machine.https_request(
                "POST",
                "/v1/chat/completions",
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
                body=json.dumps(CHAT_REQUEST).encode(),
                timeout=300,
            )
        except (TimeoutError, OSError, http.client.HTTPException):
            continue
        unknown_key = status == 401 and b"invalid_api_key" in answer
        if status not in (502, 503, 504) and not (unknown_key and time.monotonic() - started < retry_unknown_key_for):
            break
        time.sleep(3)
    return status, answer, time.monotonic() - started


def _assert_completion(status: int, answer: bytes) -> None:
    assert status == 200, answer[:1000]
    completion = json.loads(answer)
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"]["role"] == "assistant"
    assert completion["usage"]["completion_tokens"] >= 1


def test_a_chat_completion_goes_through_nginx_and_the_gateway_to_llama_server(
    machine: vm.VM, admin: ConsoleSession, staff_key: str
) -> None:
    """The image's engine (llama.cpp's llama-server serving the signed GGUF fixture, enclave-engine@llama)
    was registered at first boot as deployment `llama` behind General/default; a staff member's API key,
    issued from the console, gets a chat completion through nginx -> gateway -> llama-server."""
    machine.wait_for_console("enclave-firstboot: route General/default -> llama", timeout=BOOT_TIMEOUT)
    machine.wait_for_console("enclave-engine: llama healthy", timeout=BOOT_TIMEOUT)
    startup = first(r"enclave-engine: llama healthy ([0-9.]+) s after its start", machine.console_text())
    print(f"\nimage-test: llama-server answered /health {startup} s after its unit started")
    assert "enclave-model-verify: enclave-fixture-gguf/1 OK (1 files)" in machine.console_text()
    status, answer, took = _chat(machine, staff_key, retry_unknown_key_for=90)
    print(f"image-test: chat completion answered {took:.1f} s after the key was issued")
    _assert_completion(status, answer)
    status, _, answer, _ = machine.https_request(
        "POST",
        "/v1/chat/completions",
        headers={"Authorization": f"Bearer {staff_key}x", "Content-Type": "application/json"},
        body=json.dumps(CHAT_REQUEST).encode(),
        timeout=120,
    )
    assert status == 401
    assert b"invalid_api_key" in answer


def test_the_first_update_is_rolled_back_to_the_factory_image(
    machine: vm.VM, admin: ConsoleSession, staff_key: str
) -> None:
    """Rollback from the Updates page after the first activation: the pointers go back to what the image
    shipped (none), the follower restarts llama-server on the model store's own folder, chat still answers,
    and the page offers the way forward again (a second rollback returns to 2026Q4)."""
    status, _, page = admin.get("/updates/")
    assert status == 200
    assert 'data-testid="rollback">Roll back to factory image<' in page, page[-3000:]
    outcome, code, page = _run_step(admin, "/updates/rollback/", {})
    assert (outcome, code) == ("Done", ""), page[-3000:]
    assert 'data-testid="current-release">factory image<' in page
    assert 'data-testid="rollback">Roll back to 2026Q4<' in page
    store = "/var/lib/enclave/models/enclave-fixture-gguf/"
    deadline = time.monotonic() + STEP_TIMEOUT
    restarted = "enclave-engine: llama: the activated model changed (" + store
    while restarted not in machine.console_text():
        assert time.monotonic() < deadline, machine.console_text()[-3000:]
        time.sleep(2)
    status, answer, took = _chat(machine, staff_key)
    print(f"image-test: chat completion answered {took:.1f} s after the rollback")
    _assert_completion(status, answer)
    status, _, audit = admin.get("/audit/?action=bundle.rollback")
    assert status == 200
    rows = re.findall(r'<tr class="outcome-(\w+)">(.*?)</tr>', html.unescape(audit), re.S)
    assert any(outcome_ == "ok" and "factory image" in row and "2026Q4" in row for outcome_, row in rows), audit[-3000:]


def test_the_guest_powers_down_cleanly(machine: vm.VM) -> None:
    assert machine.power_down(timeout=300) == 0
    assert "reboot: Power down" in machine.console_text()

"""systemd units for engines: one template `enclave-engine@.service` plus a drop-in per instance.

The template holds what every engine shares (user, sandboxing, loopback-only networking, restart
policy, state and cache directories); the drop-in at
`/etc/systemd/system/enclave-engine@NAME.service.d/10-engine.conf` holds the instance's exact
ExecStart and Environment, rendered from its adapter. Debian 12 ships systemd 252, so the restart
policy is a fixed RestartSec without a start limit (RestartSteps needs 254).
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from appliance.engines.base import EngineAdapter, EngineLaunch
from appliance.engines.errors import InvalidEngineOption

__all__ = [
    "TEMPLATE_UNIT_NAME",
    "dropin_path",
    "render_dropin",
    "render_template_unit",
    "systemd_quote",
    "unit_name",
]

TEMPLATE_UNIT_NAME = "enclave-engine@.service"
UNIT_DIR = PurePosixPath("/etc/systemd/system")
_PLAIN = re.compile(r"^[A-Za-z0-9_./:=,@+-]+$")

_TEMPLATE = """\
# Enclave inference engine instance %i. Rendered by appliance.engines.systemd; do not edit.
# The instance's ExecStart and Environment live in enclave-engine@%i.service.d/10-engine.conf.
[Unit]
Description=Enclave inference engine %i
After=local-fs.target network.target
StartLimitIntervalSec=0
AssertPathExists=/etc/systemd/system/enclave-engine@%i.service.d/10-engine.conf

[Service]
Type=simple
User=enclave-engine
Group=enclave-engine
SupplementaryGroups=video render
StateDirectory=enclave/engines/%i
WorkingDirectory=/var/lib/enclave/engines/%i
Environment=HOME=/var/lib/enclave/engines/%i XDG_CACHE_HOME=/var/lib/enclave/engines/%i/cache
Restart=on-failure
RestartSec=5s
TimeoutStartSec=infinity
TimeoutStopSec=60s
KillMode=control-group
KillSignal=SIGTERM
LimitNOFILE=65536
LimitMEMLOCK=infinity
NoNewPrivileges=yes
PrivateTmp=yes
ProtectSystem=strict
ProtectHome=yes
ProtectKernelTunables=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
# Engines have no auth of their own: loopback only, the gateway is the door.
IPAddressDeny=any
IPAddressAllow=localhost

[Install]
WantedBy=multi-user.target
"""


def systemd_quote(arg: str) -> str:
    """Quote one argument for ExecStart/Environment: `%` and `$` escaped, C-style quotes if needed."""
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if _PLAIN.match(arg):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unit_name(engine_name: str) -> str:
    return f"enclave-engine@{engine_name}.service"


def dropin_path(engine_name: str) -> PurePosixPath:
    return UNIT_DIR / f"{unit_name(engine_name)}.d" / "10-engine.conf"


def render_template_unit() -> str:
    return _TEMPLATE


def render_dropin(engine: EngineAdapter) -> str:
    """The instance drop-in: description, environment (sorted), extra writable paths, ExecStart."""
    launch: EngineLaunch = engine.launch()
    lines = [
        f"# Engine {launch.name} ({launch.kind}, serves {launch.served_model_name} on {launch.base_url}).",
        "# Rendered by appliance.engines.systemd from the engine's adapter; re-render, do not edit.",
        "[Unit]",
        f"Description=Enclave engine {launch.name} ({launch.kind})",
        "",
        "[Service]",
    ]
    for key, value in sorted(launch.env.items()):
        lines.append("Environment=" + systemd_quote(f"{key}={value}"))
    for path in engine.writable_paths():
        lines.append("ReadWritePaths=" + systemd_quote(str(path)))
    if not launch.argv[0].startswith("/"):
        raise InvalidEngineOption(f"engine {launch.name}: systemd needs an absolute executable, not {launch.argv[0]!r}")
    exec_line = systemd_quote(launch.argv[0])
    for arg in launch.argv[1:]:
        exec_line += (" \\\n    " if arg.startswith("--") else " ") + systemd_quote(arg)
    lines.append("ExecStart=" + exec_line)
    return "\n".join(lines) + "\n"

"""Reading the playbook's output: the build fails (IMAGE_PROVISION_NOT_IDEMPOTENT) when the second run of
site.yml changed anything, naming the tasks. The real double run happens in every `make image`."""

from __future__ import annotations

from image import build

SECOND_RUN = """
TASK [base : Set the hostname] *************************************************
ok: [enclave]

TASK [redis : Include the Enclave settings from redis.conf (last, so they win)] **
changed: [enclave]

RUNNING HANDLER [redis : Restart redis] ****************************************
skipping: [enclave]

PLAY RECAP *********************************************************************
enclave                    : ok=40   changed=1    unreachable=0    failed=0    skipped=3    rescued=0    ignored=0
"""


def test_changed_tasks_are_named_from_the_playbook_output() -> None:
    assert build.changed_tasks(SECOND_RUN) == [
        "redis : Include the Enclave settings from redis.conf (last, so they win)"
    ]
    assert [int(r[2]) for r in build._RECAP.findall(SECOND_RUN)] == [1]

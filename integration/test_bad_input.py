"""Every bad policy is refused with exit 2, names its field, and leaves the kernel untouched."""

from __future__ import annotations

import subprocess
import sys

import pytest

from integration.envcheck import require_root
from integration.testbed import Testbed

GOOD = """\
version: 1
interface: eth0
link: {egress: 100mbit, ingress: 50mbit}
classes:
  compute: {priority: 0, guarantee: 60%, ceil: 100%, match: [{proto: tcp, dport: 29500-29999}]}
  disk: {priority: 2, guarantee: 20%, ceil: 100%, scavenger: true, match: [{proto: tcp, dport: 5201}]}
  other: {priority: 1, guarantee: 10%, default: true}
"""

# (case, text replaced, replacement, what the message must name)
BAD = [
    ("yaml syntax", "classes:\n", "classes: [\n", "YAML syntax error"),
    ("unknown key", "priority: 2,", "prio: 2,", "classes.disk.prio"),
    ("missing version", "version: 1\n", "", "version"),
    ("unknown version", "version: 1", "version: 9", "version"),
    ("unit mbps", "egress: 100mbit", "egress: 100mbps", "link.egress"),
    ("negative rate", "egress: 100mbit", "egress: -5mbit", "link.egress"),
    ("zero rate", "egress: 100mbit", "egress: 0bit", "link.egress"),
    ("percent over 100", "ceil: 100%, scavenger", "ceil: 150%, scavenger", "classes.disk.ceil"),
    ("guarantee above ceil", "guarantee: 20%, ceil: 100%", "guarantee: 20%, ceil: 10%", "classes.disk"),
    ("guarantees over link", "guarantee: 60%", "guarantee: 95%", "classes"),
    ("no default class", ", default: true", "", "default"),
    ("two default classes", "guarantee: 20%,", "guarantee: 20%, default: true,", "default"),
    ("class name tc cannot carry", "  disk:", "  Disk Class:", "classes.Disk Class"),
    ("bad cidr", "{proto: tcp, dport: 5201}", "{dst: 198.18.300.0/24}", "classes.disk.match[0].dst"),
    ("port out of range", "dport: 5201", "dport: 70000", "classes.disk.match[0].dport"),
    ("reversed port range", "29500-29999", "29999-29500", "classes.compute.match[0].dport"),
    ("dscp out of range", "{proto: tcp, dport: 5201}", "{dscp: 64}", "classes.disk.match[0].dscp"),
    ("unknown proto", "{proto: tcp, dport: 5201}", "{proto: quic}", "classes.disk.match[0].proto"),
    ("empty match item", "{proto: tcp, dport: 5201}", "{}", "classes.disk.match[0]"),
]


def _kernel_state(host) -> str:
    dumps = [host.run(["tc", "-d", obj, "show", "dev", dev]).stdout
             for dev in ("eth0", "qosdi2", "qosdi3") for obj in ("qdisc", "class")
             if host.run(["ip", "link", "show", dev], check=False).returncode == 0]
    dumps.append(host.run(["tc", "filter", "show", "dev", "eth0"]).stdout)
    dumps.append(host.run(["tc", "filter", "show", "dev", "eth0", "ingress"]).stdout)
    dumps.append(host.run(["ip", "-br", "link"]).stdout)
    return "\n".join(dumps)


def _qosd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qosd", *args], capture_output=True, text=True,
                          timeout=60)


@pytest.fixture(scope="module")
def host_with_tree(tmp_path_factory):
    require_root()
    tmp = tmp_path_factory.mktemp("bad")
    with Testbed(tag="bad") as tb:
        h, s = tb.host("h"), tb.host("s")
        tb.connect(h, s)
        good = tmp / "good.yaml"
        good.write_text(GOOD)
        applied = _qosd("policy", "apply", "--netns", h.ns, str(good))
        assert applied.returncode == 0, applied.stderr
        yield h, tmp
        _qosd("policy", "clear", "--netns", h.ns)


@pytest.mark.parametrize("case, old, new, field", BAD, ids=[b[0] for b in BAD])
def test_bad_policy_is_refused_with_its_field_and_changes_nothing(host_with_tree, case, old, new, field):
    h, tmp = host_with_tree
    assert old in GOOD, case
    path = tmp / f"{case.replace(' ', '-')}.yaml"
    path.write_text(GOOD.replace(old, new, 1))
    before = _kernel_state(h)
    for args in (("policy", "validate", str(path)), ("policy", "apply", "--netns", h.ns, str(path))):
        out = _qosd(*args)
        assert out.returncode == 2, (case, args, out.stdout, out.stderr)
        assert str(path) in out.stderr, out.stderr
        assert field in out.stderr, (case, out.stderr)
        assert "Traceback" not in out.stderr
    assert _kernel_state(h) == before, case


def test_unknown_interface_is_a_clear_error_that_changes_nothing(host_with_tree):
    h, tmp = host_with_tree
    path = tmp / "eth9.yaml"
    path.write_text(GOOD.replace("interface: eth0", "interface: eth9"))
    before = _kernel_state(h)
    out = _qosd("policy", "apply", "--netns", h.ns, str(path))
    assert out.returncode == 2 and "eth9" in out.stderr and "does not exist" in out.stderr, out.stderr
    assert _kernel_state(h) == before

"""The command policy: each default rule refuses what it names, look-alikes pass, the modes, types, execute
and python texts, settings parsing, and linear time on adversarial input."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from executors.policy import DEFAULT_RULES, CommandPolicy, Rule, commands_view, parse_rules

ROOT = Path(__file__).resolve().parents[3]
POLICY = CommandPolicy()

REFUSED = {
    "sudo": ["sudo id", "sudo -u postgres psql", "sudoedit /etc/hosts", "/usr/bin/sudo id", "\\sudo id"],
    "su": ["su -", "su root", "su -c 'id'", "su", "runuser -u app id"],
    "doas": ["doas ls"],
    "pkexec": ["pkexec id"],
    "rm-root": [
        "rm -rf /",
        "rm -rf /*",
        "rm -fr /",
        "rm -r -f /",
        "rm -Rf -- /",
        "rm --recursive --force /",
        "rm --force --recursive '/'",
        'rm -rf "/"',
        "rm -rf --no-preserve-root /",
        "rm -rf /tmp/x /",
    ],
    "chmod-root": ["chmod -R 777 /", "chown -R nobody:nogroup /", "chgrp --recursive adm /*"],
    "mkfs": [
        "mkfs /dev/sda1",
        "mkfs.ext4 /dev/sdb1",
        "mke2fs -t ext4 /dev/sdb",
        "mkswap /dev/sdc",
        "wipefs -a /dev/sdd",
    ],
    "dd-device": [
        "dd if=/dev/zero of=/dev/sda bs=1M",
        "dd if=img of=/dev/nvme0n1",
        "dd of=/dev/vda if=/dev/zero",
        "dd if=/dev/zero of=/dev/xvda",
        "dd if=/dev/zero of=/dev/mmcblk0",
        "dd if=/dev/zero of=/dev/mapper/vg-root",
    ],
    "disk-write": [
        "echo x > /dev/sda",
        "cat img >/dev/nvme0n1",
        "ls &>/dev/sdb",
        "tee /dev/vdb < img",
        "shred /dev/sda",
    ],
    "shutdown": [
        "shutdown -h now",
        "reboot",
        "halt",
        "poweroff",
        "init 0",
        "init 6",
        "telinit 0",
        "systemctl poweroff",
        "systemctl reboot",
        "systemctl --force halt",
        "systemctl start reboot.target",
    ],
    "fork-bomb": [
        ":(){ :|:& };:",
        ":(){ :|: & };:",
        ": () { : | : & } ; :",
        ":(){\n  :|:&\n};:",
        "bomb(){ bomb|bomb& };bomb",
        "function bomb { bomb|bomb& }; bomb",
    ],
}

ALLOWED = [
    "echo pseudo",
    "visudo-check",
    "sudoku",
    "grep reboot log",
    "docs/rm -rf /tmp/x",
    "rm -rf /tmp/build",
    "rm -rf ./dist",
    "rm -f /tmp/a.txt",
    "echo sudo",
    "cat /var/log/sudo.log",
    "command -v sudo",
    "which reboot",
    "summary --all",
    "halt=1",
    "ls -la /",
    "chmod -R 755 /srv/app",
    "git commit -m 'reboot fix'",
    "dd if=/dev/sda of=disk.img",
    "dd if=/dev/zero of=/dev/null count=1",
    "echo hi > /dev/null 2>&1",
    "systemctl status reboot.target",
    "{ echo a | cat; }",
    "",
]


@pytest.mark.parametrize(("rule", "command"), [(rule, c) for rule, commands in REFUSED.items() for c in commands])
def test_each_default_rule_refuses_with_its_name(rule: str, command: str) -> None:
    refusal = POLICY.check("shell", command, {})
    assert refusal is not None, command
    assert refusal.rule == rule
    assert f"policy rule {rule!r}" in refusal.message


def test_every_default_rule_is_tested() -> None:
    assert {r.name for r in DEFAULT_RULES} == set(REFUSED)


@pytest.mark.parametrize("command", ALLOWED)
def test_look_alikes_are_allowed(command: str) -> None:
    assert POLICY.check("shell", command, {}) is None


@pytest.mark.parametrize(
    "command",
    [
        "ls && sudo id",
        "ls; sudo id",
        "ls || sudo id",
        "ls | sudo tee x",
        "(sudo id)",
        "echo $(sudo id)",
        "echo `sudo id`",
        "ls\nsudo id",
        "env sudo id",
        "/usr/bin/env FOO=1 sudo id",
        "exec sudo id",
        "nohup sudo id &",
        "find . | xargs sudo rm",
        "xargs -I{} sudo cp {} /x",
        "time sudo id",
        "nice -n 10 sudo id",
        "timeout 5 sudo id",
        "FOO=1 BAR='a b' sudo id",
        "sh -c 'sudo id'",
        'bash -lc "sudo id"',
        "find . -exec sudo rm {} \\;",
        "if true; then sudo id; fi",
        "! sudo id",
        "sud\\\no id",
    ],
)
def test_a_command_is_found_at_every_command_position(command: str) -> None:
    refusal = POLICY.check("shell", command, {})
    assert refusal is not None and refusal.rule == "sudo", command


def test_python_code_is_scanned_with_the_same_rules() -> None:
    refused = {
        'import os\nos.system("sudo id")': "sudo",
        'subprocess.run(["sudo", "id"])': "sudo",
        'subprocess.run(["rm", "-rf", "/"])': "rm-root",
        "os.system(f'reboot {when}')": "shutdown",
        'subprocess.call("shutdown -h now", shell=True)': "shutdown",
        "os.execv('/sbin/reboot', ['reboot'])": "shutdown",
    }
    for code, rule in refused.items():
        refusal = POLICY.check("python", code, {})
        assert refusal is not None and refusal.rule == rule, code
    for code in [
        'print("hello")',
        "halt = True\nif halt == True:\n    pass",
        "sock.shutdown(1)",
        "shutil.rmtree('/tmp/x')",
    ]:
        assert POLICY.check("python", code, {}) is None, code


def test_execute_checks_cmd_and_args_and_the_interpreters() -> None:
    def rule(cmd: str, *args: str) -> str | None:
        refusal = POLICY.check("execute", "", {"cmd": cmd, "args": list(args)})
        return refusal.rule if refusal else None

    assert rule("/usr/bin/sudo", "id") == "sudo"
    assert rule("sudo") == "sudo"
    assert rule("rm", "-rf", "/") == "rm-root"
    assert rule("sh", "-c", "reboot") == "shutdown"
    assert rule("env", "poweroff") == "shutdown"
    assert rule("dd", "if=/dev/zero", "of=/dev/sda") == "dd-device"
    assert rule("rm", "-rf", "/tmp/x") is None
    assert rule("echo", "sudo") is None
    refused = POLICY.check("shell", "id", {"shell": "/usr/bin/sudo"})
    assert refused is not None and refused.rule == "sudo"
    refused = POLICY.check("python", "print(1)", {"python": "doas"})
    assert refused is not None and refused.rule == "doas"


def test_other_types_are_not_command_checked() -> None:
    assert POLICY.check("mysql", "sudo reboot", {}) is None
    assert POLICY.check("http_request", "", {"url": "http://x/sudo"}) is None


def test_allow_mode_needs_every_command_to_match_an_allow_rule() -> None:
    policy = CommandPolicy.from_settings("allow", allow={"ls": r"^ls\b", "echo": r"^echo\b"})
    for command in ["ls -la", "ls; echo hi", "# a comment\nls", "ls\n\n   \nls", ""]:
        assert policy.check("shell", command, {}) is None, command
    for command, shown in [("ls && curl x", "curl x"), ("echo $(wget y)", "wget y"), ("uptime", "uptime")]:
        refusal = policy.check("shell", command, {})
        assert refusal is not None and refusal.rule == "allow-list"
        assert repr(shown) in refusal.message
    refusal = policy.check("shell", "ls; sudo ls", {})
    assert refusal is not None and refusal.rule == "sudo"  # deny rules still apply
    refusal = policy.check("shell", "mysql -pS3cret-pw db", {})
    assert refusal is not None and "S3cret-pw" not in refusal.message


def test_off_mode_checks_no_command_but_still_refuses_types() -> None:
    policy = CommandPolicy(mode="off", refuse_types={"python"})
    assert policy.check("shell", "sudo reboot", {}) is None
    refusal = policy.check("python", "print(1)", {})
    assert refusal is not None and refusal.rule == "refuse_types"
    assert "'python'" in refusal.message


def test_refuse_types_and_allow_types() -> None:
    policy = CommandPolicy(refuse_types={"shell"}, allow_types={"shell", "execute"})
    assert policy.check("execute", "", {"cmd": "ls"}) is None
    refused = policy.check("shell", "ls", {})
    assert refused is not None and refused.rule == "refuse_types"
    refused = policy.check("python", "print(1)", {})
    assert refused is not None and refused.rule == "allow_types"


def test_extra_deny_rules_and_replacing_a_default() -> None:
    policy = CommandPolicy.from_settings(deny=[r"no-curl=\bcurl\b", r"sudo=^sudo\b(?! -n true$)"])
    refusal = policy.check("shell", "ls | /usr/bin/curl -s x", {})
    assert refusal is not None and refusal.rule == "no-curl"
    assert refusal.message == "command refused by policy rule 'no-curl'"
    assert policy.check("shell", "sudo -n true", {}) is None  # the replaced default
    assert policy.check("shell", "sudo id", {}) is not None
    no_defaults = CommandPolicy(use_defaults=False)
    assert no_defaults.check("shell", "sudo reboot", {}) is None


def test_settings_values_are_checked_and_named() -> None:
    assert [r.name for r in parse_rules({"a": "x", "b": "y"}, "deny")] == ["a", "b"]
    assert parse_rules(None, "allow") == []
    for spec, problem in [
        (["bad=(("], "policy deny rule 'bad': invalid regex"),
        (["no-equals"], "policy deny rule 'no-equals': expected name=regex"),
        (["a=x", "a=y"], "policy deny rule 'a': named twice"),
        ({"with space": "x"}, "policy deny rule 'with space'"),
    ]:
        with pytest.raises(ValueError, match=problem):
            parse_rules(spec, "deny")
    with pytest.raises(ValueError, match="policy mode 'strict'"):
        CommandPolicy.from_settings("strict")
    with pytest.raises(ValueError, match="policy rule 'x'"):
        Rule("x", "[")


def test_the_view_puts_each_command_on_a_line_of_its_own() -> None:
    view = commands_view("shell", "FOO=1 nohup /usr/bin/sudo -u x id && echo ok", {})
    assert view.split("\n") == ["sudo -u x id ", "echo ok"]


def test_an_adversarial_megabyte_is_checked_in_linear_time() -> None:
    """In a child process, so that a quadratic regex fails on the hang guard instead of hanging the suite."""
    code = textwrap.dedent(
        """
        from executors.policy import CommandPolicy
        n = 1_000_000
        inputs = [
            "a" * n, "a;" * (n // 2), "; " * (n // 2), "rm -rf " * (n // 7), "rm " + "-a" * n,
            "dd " + " of=/dev/" * (n // 9), "a(){ a|a& };" * (n // 12), "() { :|" * (n // 8),
            "nice -n 1 " * (n // 10), 'A="x;' * (n // 5), "A='" * (n // 3), "a/" * (n // 2),
            "systemctl " + "-x " * (n // 3), "chmod " + " -R" * (n // 3), "a" + " " * n + "(", "\\\\\\n" * (n // 2),
        ]
        deny, allow = CommandPolicy(), CommandPolicy.from_settings("allow", allow=[r"ls=^ls\\b"])
        for text in inputs:
            deny.check("shell", text, {})
            deny.check("python", text, {})
            allow.check("shell", text, {})
        deny.check("execute", "", {"cmd": "a" * n, "args": inputs[:3]})
        """
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)

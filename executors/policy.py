"""Command policy: the commands and task types a cloud (at creation) or an agent (before running) refuses.

A deny list is a guard rail against mistakes, not a sandbox: `echo c3VkbyBpZA== | base64 -d | sh` gets
past any list. Run agents as an unprivileged user. See docs/command-policy.md.

Rules are searched in a normalized copy of the text a task would run (`commands_view`): every command
starts a line of its own, with wrapper words (`env`, `nohup`, `sh -c '`...), variable assignments and
the command's directory removed, so `^sudo\\b` means "sudo run as a command" and `echo pseudo` is left
alone. Every default regex runs in linear time on any input (possessive quantifiers, bounded scans).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from wire.secrets import mask_command

Mode = Literal["deny", "allow", "off"]
MODES: tuple[str, ...] = ("deny", "allow", "off")
COMMAND_TYPES = frozenset({"shell", "python", "execute"})
"""Types whose command text is checked; for the others only refuse_types/allow_types apply."""

_NAME = re.compile(r"[A-Za-z0-9][\w.:-]{0,63}")
_SEPS = r";&|()`{}\n\r"
_FIND_EXEC = r"[ \t]-(?:exec|execdir|ok|okdir)(?=[ \t])"  # find . -exec sudo ...
_BREAK = re.compile(rf"[{_SEPS}]++|{_FIND_EXEC}")
_PY_BREAK = re.compile(rf"[{_SEPS}'\"]++|{_FIND_EXEC}")  # in Python every string literal may be a command
_PY_LIST = re.compile(r"""['"][ \t]*+,\s*+['"]""")  # ["rm", "-rf", "/"] -> ["rm -rf /"]

_WORD = r"[^\s;&|()`{}<>'\"]"  # one character of an unquoted shell word
_OPT = r"[-\d][^\s;&|()`{}<>]*+"  # a wrapper's option or number: -n, 10, --signal=KILL, 5s
_DIR = r"[^\s/;&|()`{}<>'\"]*+/"  # usr/ in /usr/bin/sudo
_WRAP_OPTS = r"env|exec|nohup|time|nice|ionice|timeout|stdbuf|setsid|xargs|busybox|(?:ba|da|z|k|a)?sh"
_WRAP_BARE = r"command|builtin|eval|then|do|else|elif|if|while|until"  # so `command -v sudo` only looks
_LEAD = (
    r"[ \t'\"\[!\\]++"  # blanks, an opening quote (sh -c 'sudo id'), `[`, `!`, `\sudo`
    rf"|(?:{_DIR})*+(?:{_WRAP_OPTS})(?=[ \t])(?:[ \t]++{_OPT})*+"
    rf"|(?:{_WRAP_BARE})(?=[ \t])"
    rf"|[A-Za-z_]\w*+=(?:\"[^\"]*+\"|'[^']*+'|{_WORD})*+(?=[ \t])"  # FOO=1 before the command
)
_STRIP = re.compile(rf"^(?:{_LEAD})++(?:{_DIR})*+|^(?:{_DIR})++", re.MULTILINE)
_BLANK_LINE = re.compile(r"[ \t]*+(?:(?:then|do|done|fi|else|esac)[ \t]*+|#.*+)?")


def commands_view(type: str, command: str, params: Mapping[str, Any]) -> str:
    """The text the rules are searched in: one command a line, wrappers and directories removed."""
    if type == "execute":
        return _STRIP.sub("", _BREAK.sub("\n", _raw(type, command, params)))
    text = command.replace("\\\n", "")  # sud\<newline>o is sudo to a shell
    if type == "python":
        return _STRIP.sub("", _PY_BREAK.sub("\n", _PY_LIST.sub(" ", text)))
    return _STRIP.sub("", _BREAK.sub("\n", text))


def _raw(type: str, command: str, params: Mapping[str, Any]) -> str:
    """The text as given (for `raw` rules); for execute, cmd and args joined with spaces."""
    if type != "execute":
        return command
    args = params.get("args")
    words = [params.get("cmd"), *(args if isinstance(args, list) else [])]
    return " ".join(str(w) for w in words if isinstance(w, str | int | float))


def _interpreter_view(type: str, params: Mapping[str, Any]) -> str:
    """`params.shell` or `params.python` as a command (deny rules only): `shell: sudo` is refused too."""
    name = params.get({"shell": "shell", "python": "python"}.get(type, ""))
    return commands_view("shell", name, {}) if isinstance(name, str) else ""


@dataclass(frozen=True)
class Rule:
    """A named regex searched (re.MULTILINE) in `commands_view`: `^` is the start of a command."""

    name: str
    regex: str
    description: str = ""
    raw: bool = False
    """Searched in the text as given instead (the fork-bomb rule needs its punctuation)."""
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"policy rule {self.name!r}: a name is 1-64 letters, digits, '_', '.', ':' or '-'")
        try:
            object.__setattr__(self, "pattern", re.compile(self.regex, re.MULTILINE))
        except re.error as exc:
            raise ValueError(f"policy rule {self.name!r}: invalid regex ({exc})") from None


@dataclass(frozen=True)
class Refusal:
    """Why a task was refused: the rule's name and a message naming it."""

    rule: str
    message: str


_E = r"(?![^\s;&|)`}<>'\"])(?![ \t]*+=)"  # the command word ends here (not `sudoku`, not `halt = 1`)
_END = r"(?![^\s;&|)`}<>'\"])"  # a word ends here
_ROOT = rf"[^\n]*?[ \t]['\"]?/\*?['\"]?{_END}"  # then `/` or `/*` as an argument
_DISK = r"/dev/(?:sd[a-z]|hd[a-z]|vd[a-z]|xvd[a-z]|nvme\d|mmcblk\d|md\d|dm-\d|loop\d|nbd\d|sr\d|mapper/|disk/)"
_HARMLESS_DEV = rf"(?:(?:null|zero|full|u?random|stdout|stderr|tty\w*+){_END}|(?:shm|fd|pts)/)"


def _bomb(group: int) -> str:
    """`{ x|x&`: a function body piping a command into itself in the background (`x` is group `group`)."""
    return rf"\s*+\{{\s*+(\w++|:)\s*+\|\s*+\{group}\s*+&"


DEFAULT_RULES: tuple[Rule, ...] = (
    Rule("sudo", rf"^(?:sudo|sudoedit){_E}", "runs a command as another user"),
    Rule("su", rf"^(?:su|runuser){_E}", "switches to another user"),
    Rule("doas", rf"^doas{_E}", "runs a command as another user"),
    Rule("pkexec", rf"^pkexec{_E}", "runs a command as another user"),
    Rule(
        "rm-root",
        rf"^rm{_E}(?=[^\n]*?[ \t](?:-[a-zA-Z]*[rR]|--recursive)){_ROOT}|^rm{_E}[^\n]*?[ \t]--no-preserve-root",
        "deletes the root filesystem",
    ),
    Rule(
        "chmod-root",
        rf"^ch(?:mod|own|grp){_E}(?=[^\n]*?[ \t](?:-[a-zA-Z]*R|--recursive)){_ROOT}",
        "changes the owner or mode of every file",
    ),
    Rule("mkfs", rf"^(?:mkfs(?:\.\w++)?|mke2fs|mkswap|wipefs){_E}", "formats or wipes a filesystem"),
    Rule("dd-device", rf"^dd{_E}(?=[^\n]*?[ \t]of=['\"]?/dev/(?!{_HARMLESS_DEV}))", "writes a device with dd"),
    Rule("disk-write", rf">[ \t]*+['\"]?{_DISK}|^(?:tee|shred){_E}[^\n]*?[ \t]['\"]?{_DISK}", "writes a raw disk"),
    Rule(
        "shutdown",
        rf"^(?:shutdown|reboot|halt|poweroff){_E}|^(?:tel)?init[ \t]++['\"]?[06]{_END}"
        rf"|^(?:systemctl|loginctl){_E}(?:[ \t]++-[^\s;&|()`{{}}<>]*+)*+[ \t]++(?:(?:start|isolate)[ \t]++)?"
        rf"(?:poweroff|reboot|halt|kexec|soft-reboot)(?:\.target)?{_END}",
        "shuts down or reboots the machine",
    ),
    Rule(
        "fork-bomb",
        rf"\([ \t]*+\){_bomb(1)}|function[ \t]++\w++[ \t]*+(?:\([ \t]*+\))?{_bomb(2)}",
        "a fork bomb",
        raw=True,
    ),
)


def parse_rules(spec: Mapping[str, str] | Iterable[str] | None, kind: str) -> list[Rule]:
    """Rules from `{name: regex}` or `["name=regex", ...]`; ValueError naming the bad one."""
    if spec is None:
        return []
    items = spec.items() if isinstance(spec, Mapping) else (_split(entry, kind) for entry in spec)
    rules: list[Rule] = []
    for name, regex in items:
        if not isinstance(regex, str):
            raise ValueError(f"policy {kind} rule {name!r}: the regex must be a string")
        try:
            rule = Rule(str(name), regex)
        except ValueError as exc:
            raise ValueError(str(exc).replace("policy rule", f"policy {kind} rule", 1)) from None
        if any(r.name == rule.name for r in rules):
            raise ValueError(f"policy {kind} rule {rule.name!r}: named twice")
        rules.append(rule)
    return rules


def _split(entry: str, kind: str) -> tuple[str, str]:
    name, eq, regex = str(entry).partition("=")
    if not eq or not name.strip():
        raise ValueError(f"policy {kind} rule {entry!r}: expected name=regex")
    return name.strip(), regex


@dataclass
class CommandPolicy:
    """What is refused. mode `deny`: the deny rules; `allow`: the deny rules, then every command must
    match an allow rule; `off`: no command checks. Types are refused in every mode."""

    mode: Mode = "deny"
    use_defaults: bool = True
    deny: list[Rule] = field(default_factory=list)
    """Extra deny rules; one named like a default rule replaces it."""
    allow: list[Rule] = field(default_factory=list)
    refuse_types: set[str] = field(default_factory=set)
    allow_types: set[str] | None = None
    """When set, every other type is refused (the agent's `allow_types`)."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"policy mode {self.mode!r}: expected one of {', '.join(MODES)}")

    @classmethod
    def from_settings(
        cls,
        mode: str = "deny",
        use_defaults: bool = True,
        deny: Mapping[str, str] | Iterable[str] | None = None,
        allow: Mapping[str, str] | Iterable[str] | None = None,
        refuse_types: Iterable[str] = (),
        allow_types: Iterable[str] | None = None,
    ) -> CommandPolicy:
        """A policy from settings values; rules as `{name: regex}` or `name=regex` strings."""
        return cls(
            mode=mode,  # type: ignore[arg-type]  # checked in __post_init__
            use_defaults=use_defaults,
            deny=parse_rules(deny, "deny"),
            allow=parse_rules(allow, "allow"),
            refuse_types=set(refuse_types),
            allow_types=None if allow_types is None else set(allow_types),
        )

    def deny_rules(self) -> list[Rule]:
        """The deny rules in the order they are checked: defaults (unless replaced), then the extra ones."""
        extra = {r.name for r in self.deny}
        defaults = [r for r in DEFAULT_RULES if r.name not in extra] if self.use_defaults else []
        return [*defaults, *self.deny]

    def check(self, type: str, command: str, params: Mapping[str, Any] | None = None) -> Refusal | None:
        """The refusal for a task of `type` running `command` with `params`, or None when it may run."""
        if self.allow_types is not None and type not in self.allow_types:
            return Refusal("allow_types", f"task type {type!r} refused by policy rule 'allow_types'")
        if type in self.refuse_types:
            return Refusal("refuse_types", f"task type {type!r} refused by policy rule 'refuse_types'")
        if self.mode == "off" or type not in COMMAND_TYPES:
            return None
        params = params or {}
        view, interpreter = commands_view(type, command, params), _interpreter_view(type, params)
        raw = _raw(type, command, params)
        for rule in self.deny_rules():
            found = rule.pattern.search(raw) if rule.raw else rule.pattern.search(view)
            if found or (interpreter and not rule.raw and rule.pattern.search(interpreter)):
                why = f": {rule.description}" if rule.description else ""
                return Refusal(rule.name, f"command refused by policy rule {rule.name!r}{why}")
        if self.mode == "allow":
            line = self._unallowed(view)
            if line is not None:
                shown = mask_command(line if len(line) <= 80 else line[:77] + "...")
                return Refusal(
                    "allow-list", f"command refused by policy rule 'allow-list': {shown!r} matches no allow rule"
                )
        return None

    def _unallowed(self, view: str) -> str | None:
        """The first command matching no allow rule (comments and bare keywords need none)."""
        for line in dict.fromkeys(view.split("\n")):  # each distinct command once
            if not _BLANK_LINE.fullmatch(line) and not any(r.pattern.search(line) for r in self.allow):
                return line.strip()
        return None

"""
Config for every script, nanoGPT style: a script's module-level names are its defaults; then
  python script.py [config/file.py ...] [--key=value ...]
Config files are plain Python that assign known names; --values are Python literals (a bare word is a
string). Every value is checked before the script writes anything: its type against the default's, then the
script's rule for the key (a positive count, a range, one of some choices, a device that exists). None is
accepted only where the default is None or the rule says None means something.

    from configurator import configure, fail, positive, between, one_of, CONFIG_ERROR
    config = configure(globals(), rules=dict(batch_size=positive, dropout=between(0, 1, hi_open=True)))

Exit convention, the same for every script (`fail` is the one way a script stops on bad input):
  2    a configuration error: an unknown key, a wrong type, a value out of range, settings that contradict
       each other; found before anything is read or written
  1    a run-time error: a missing or damaged file, data that does not fit the model, a diverged run, a full disk
  130  interrupted (Ctrl-C)
Each prints one line on stderr, 'error: ...', naming what is wrong and what to do, and no traceback.
"""
import ast
import math
import sys

CONFIG_TYPES = (int, float, bool, str, type(None), tuple, list, dict)
CONFIG_ERROR, RUNTIME_ERROR, INTERRUPTED = 2, 1, 130


class ConfigError(ValueError):
    pass


def fail(msg, status=RUNTIME_ERROR):
    """Stop the script: one line on stderr and the convention's exit status (see the module docstring)."""
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(status)


def _interrupted(exc_type, exc, tb, _default=sys.excepthook):
    # Ctrl-C anywhere outside a script's own handler: one line instead of a traceback (Python then exits by SIGINT)
    if issubclass(exc_type, KeyboardInterrupt):
        print("error: interrupted (Ctrl-C)", file=sys.stderr)
    else:
        _default(exc_type, exc, tb)


# ----------------------------------------------------------------------------- rules
class Rule:
    """A check on one key's value: test(value) -> bool, and what the value must be, for the error line.
    none=True: None is a meaningful value for this key (e.g. top_k=None switches top-k off)."""

    def __init__(self, test, what, none=False):
        self.test, self.what, self.none = test, what, none

    def check(self, key, value):
        if value is None:
            return
        try:
            ok = self.test(value)
        except TypeError:
            ok = False
        if not ok:
            raise ConfigError(f"{key}={value!r}: must be {self.what}")


positive = Rule(lambda v: v > 0, "> 0")
non_negative = Rule(lambda v: v >= 0, ">= 0")
non_empty = Rule(lambda v: len(v) > 0, "non-empty")


def between(lo, hi, lo_open=False, hi_open=False):
    """lo <= v <= hi, with either end open."""
    return Rule(lambda v: (lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi),
                f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}")


def one_of(*choices):
    return Rule(lambda v: v in choices, "one of " + ", ".join(repr(c) for c in choices))


def nullable(rule):
    """The same rule, and None is a meaningful value too."""
    return Rule(rule.test, rule.what, none=True)


def _device_exists(d):
    import torch
    try:
        dev = torch.device(d)
    except RuntimeError:
        return False
    if dev.type == 'cpu':
        return True
    if dev.type == 'cuda':
        return torch.cuda.is_available() and (dev.index is None or dev.index < torch.cuda.device_count())
    if dev.type == 'mps':
        return torch.backends.mps.is_available()
    return False


device = Rule(_device_exists, "a device this machine has: 'cpu', or 'cuda' / 'cuda:N' with a GPU present")


# ----------------------------------------------------------------------------- parsing
def _check_type(key, value, default, rule=None):
    if value is None:
        if default is None or (rule is not None and rule.none):
            return value
        raise ConfigError(f"config key {key!r} cannot be None (default {default!r}): give a "
                          f"{type(default).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config key {key!r} = {value!r}: give a finite number")
    if default is None:
        return value
    if isinstance(default, bool) or isinstance(value, bool):
        if isinstance(default, bool) and isinstance(value, bool):
            return value
    elif isinstance(default, float) and isinstance(value, int):
        return float(value)
    elif isinstance(default, (tuple, list)) and isinstance(value, (tuple, list)):
        return type(default)(value)
    elif type(value) is type(default):
        return value
    raise ConfigError(f"config key {key!r} expects {type(default).__name__} (default {default!r}), "
                      f"got {type(value).__name__} {value!r}")


def _parse_value(key, raw, default):
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        if isinstance(default, str) or default is None:
            return raw  # --init_from=scratch: a bare word is a string
        raise ConfigError(f"config key {key!r}: cannot parse {raw!r} as a Python literal "
                          f"(expected {type(default).__name__})") from None


def parse_args(defaults, argv, rules=None):
    """Return a new dict: defaults updated by config files and --key=value overrides, all type-checked and checked
    against the rules."""
    rules = rules or {}
    config = dict(defaults)
    for arg in argv:
        if not arg.startswith('--'):
            if '=' in arg:
                raise ConfigError(f"argument {arg!r}: overrides are written --key=value")
            try:
                with open(arg) as f:
                    source = f.read()
            except (OSError, UnicodeDecodeError) as e:
                raise ConfigError(f"config file {arg!r}: {getattr(e, 'strerror', None) or e}") from None
            scope = {}
            try:
                exec(compile(source, arg, 'exec'), scope)
            except Exception as e:
                raise ConfigError(f"config file {arg!r} failed: {type(e).__name__}: {e}") from None
            for key, value in scope.items():
                if key.startswith('_') or not isinstance(value, CONFIG_TYPES):
                    continue  # imports, helpers
                if key not in defaults:
                    raise ConfigError(f"config file {arg!r} sets unknown key {key!r}")
                config[key] = _check_type(key, value, defaults[key], rules.get(key))
        else:
            key, eq, raw = arg[2:].partition('=')
            if not eq or not key:
                raise ConfigError(f"argument {arg!r}: write --key=value")
            if key not in defaults:
                raise ConfigError(f"unknown config key {key!r} (from {arg!r})")
            config[key] = _check_type(key, _parse_value(key, raw, defaults[key]), defaults[key], rules.get(key))
    for key, rule in rules.items():
        rule.check(key, config[key])
    return config


def configure(script_globals, rules=None, argv=None):
    """Parse argv (default sys.argv[1:]) against the script's config-typed globals and check every value; exit 2 on
    a bad one. Also makes Ctrl-C one line instead of a traceback."""
    sys.excepthook = _interrupted
    defaults = {k: v for k, v in script_globals.items()
                if not k.startswith('_') and isinstance(v, CONFIG_TYPES) and not isinstance(v, type)}
    try:
        config = parse_args(defaults, sys.argv[1:] if argv is None else argv, rules)
    except ConfigError as e:
        fail(e, CONFIG_ERROR)
    script_globals.update(config)
    return config

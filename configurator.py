"""Settings for every script, nanoGPT style: `python script.py [config/file.py ...] [--key=value ...]` over the
script's module-level defaults (--help lists them); --values are Python literals or bare words. Each value is checked
here before anything is read or written; bad input is one line 'error: ...' on stderr, status 2 for a setting, 1 for a
file or run, 130 for Ctrl-C."""
import atexit
import os
import sys

CONFIG_ERROR, RUNTIME_ERROR, INTERRUPTED = 2, 1, 130


def _excepthook(kind, e, tb, default=sys.excepthook):
    if not issubclass(kind, KeyboardInterrupt):
        return default(kind, e, tb)
    print("error: interrupted (Ctrl-C)", file=sys.stderr, flush=True)
    atexit._run_exitfuncs()  # e.g. train.py's lock release; every write is atomic, so nothing is half-written
    os._exit(INTERRUPTED)


sys.excepthook = _excepthook  # from here on: every script imports configurator first, before torch
import ast
import math
from collections import namedtuple

TYPES = (int, float, bool, str, type(None), tuple, list, dict)
Rule = namedtuple('Rule', 'test what none', defaults=(False,))  # none=True: None is a meaningful value too
positive, non_negative = Rule(lambda v: v > 0, '> 0'), Rule(lambda v: v >= 0, '>= 0')
non_empty = Rule(lambda v: len(v) > 0, 'non-empty')
nullable = lambda r: r._replace(none=True)
one_of = lambda *c: Rule(lambda v: v in c, 'one of ' + ', '.join(map(repr, c)))
between = lambda lo, hi, lo_open=False, hi_open=False: Rule(
    lambda v: (lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi),
    f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}")


def _has_device(d):
    import torch
    d, gpus = torch.device(d), torch.cuda.device_count() if torch.cuda.is_available() else 0
    return d.type == 'cpu' or (d.type == 'cuda' and (d.index or 0) < gpus) or (
        d.type == 'mps' and torch.backends.mps.is_available())


device = Rule(_has_device, "a device this machine has: 'cpu', or 'cuda' / 'cuda:N' with a GPU present")


def fail(msg, status=RUNTIME_ERROR):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(status)


def check(key, value, default, rule=None):
    """value, type-checked against the default (an int where a float is expected becomes one) and the rule."""
    if value is None and not (default is None or (rule and rule.none)):
        raise ValueError(f"{key}=None: give a {type(default).__name__} (default {default!r})")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{key}={value!r}: give a finite number")
    if value is not None and default is not None:
        kinds = {float: (int, float), tuple: (tuple, list), list: (tuple, list)}.get(type(default), (type(default),))
        if type(value) not in kinds:
            raise ValueError(f"{key} expects {type(default).__name__} (default {default!r}), got {value!r}")
        value = type(default)(value)
    try:
        ok = value is None or rule is None or rule.test(value)
    except (TypeError, ValueError, RuntimeError):  # a rule whose test raises is a failed check, not a crash
        ok = False
    if not ok:
        raise ValueError(f"{key}={value!r}: must be {rule.what}")
    return value


def parse(defaults, argv, rules, given=None):
    """defaults updated by config files and --key=value, in order; given (a set) collects the keys they set."""
    config, given = dict(defaults), set() if given is None else given
    for arg in argv:
        if arg.startswith('--'):
            key, eq, raw = arg[2:].partition('=')
            if not eq or key not in defaults:
                raise ValueError(f"{arg}: write --key=value with a known key (--help lists them)")
            try:
                pairs = [(key, ast.literal_eval(raw))]
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                if not isinstance(defaults[key], (str, type(None))):
                    raise ValueError(f"{key}: cannot read {raw!r} as a {type(defaults[key]).__name__}") from None
                pairs = [(key, raw)]  # a bare word is a string
        else:
            try:
                exec(compile(open(arg, encoding='utf-8').read(), arg, 'exec'), scope := {})
            except Exception as e:
                raise ValueError(f"config file {arg}: {type(e).__name__}: {e}") from None
            pairs = [(k, v) for k, v in scope.items() if not k.startswith('_') and isinstance(v, TYPES)]
        for key, value in pairs:
            if key not in defaults:
                raise ValueError(f"config file {arg} sets unknown key {key!r}")
            config[key] = check(key, value, defaults[key], rules.get(key))
            given.add(key)
    return config


def configure(g, rules=None, argv=None):
    """Parse argv against the script's settings (its module-level names of config types) and apply them to g;
    --help prints the script's docstring and its settings block as written between the two rule lines."""
    argv = sys.argv[1:] if argv is None else argv
    if '--help' in argv or '-h' in argv:
        block = open(g['__file__'], encoding='utf-8').read().split('# ' + '-' * 77)
        print((g.get('__doc__') or '').strip() + '\n\nsettings (default  # meaning):\n' +
              (block[1].strip() if len(block) > 2 else ''))
        sys.exit(0)
    defaults = {k: v for k, v in g.items()
                if not k.startswith('_') and not k.isupper() and isinstance(v, TYPES) and not isinstance(v, Rule)}
    g['_given'] = set()  # the settings a config file or --key=value set (train.py's resume takes the rest)
    try:
        g.update(config := parse(defaults, argv, rules or {}, g['_given']))
    except ValueError as e:
        fail(e, CONFIG_ERROR)
    return config

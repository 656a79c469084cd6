"""
Config for every script, nanoGPT style: a script's module-level names are its defaults; then
  python script.py [config/file.py ...] [--key=value ...]
Config files are plain Python that assign known names; --values are Python literals (a bare word is a
string). An unknown key, a wrong type or a malformed argument is one error line and exit status 2,
before the script has written anything.

    from configurator import configure
    config = configure(globals())        # parses sys.argv, updates the script's globals, returns the dict
"""
import ast
import sys

CONFIG_TYPES = (int, float, bool, str, type(None), tuple, list, dict)


class ConfigError(ValueError):
    pass


def _check_type(key, value, default):
    if default is None or value is None:
        return value  # a None default takes any type; None switches an option off
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
    except (ValueError, SyntaxError):
        if isinstance(default, str) or default is None:
            return raw  # --init_from=scratch: a bare word is a string
        raise ConfigError(f"config key {key!r}: cannot parse {raw!r} as a Python literal "
                          f"(expected {type(default).__name__})") from None


def parse_args(defaults, argv):
    """Return a new dict: defaults updated by config files and --key=value overrides, all type-checked."""
    config = dict(defaults)
    for arg in argv:
        if not arg.startswith('--'):
            if '=' in arg:
                raise ConfigError(f"argument {arg!r}: overrides are written --key=value")
            try:
                with open(arg) as f:
                    source = f.read()
            except OSError as e:
                raise ConfigError(f"config file {arg!r}: {e.strerror}") from None
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
                config[key] = _check_type(key, value, defaults[key])
        else:
            key, eq, raw = arg[2:].partition('=')
            if not eq or not key:
                raise ConfigError(f"argument {arg!r}: write --key=value")
            if key not in defaults:
                raise ConfigError(f"unknown config key {key!r} (from {arg!r})")
            config[key] = _check_type(key, _parse_value(key, raw, defaults[key]), defaults[key])
    return config


def configure(script_globals, argv=None):
    """Parse argv (default sys.argv[1:]) against the script's config-typed globals; exit 2 on a bad argument."""
    defaults = {k: v for k, v in script_globals.items()
                if not k.startswith('_') and isinstance(v, CONFIG_TYPES) and not isinstance(v, type)}
    try:
        config = parse_args(defaults, sys.argv[1:] if argv is None else argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    script_globals.update(config)
    return config

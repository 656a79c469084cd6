"""The configurator every script uses: config files and --key=value overrides against a script's defaults, type and
rule checks that name the key, --help for every script, and Ctrl-C during start-up ending with status 130."""

import pytest

from conftest import STOP_AT_IMPORT, run_script, train_patched
from configurator import Rule, between, check, nullable, one_of, parse, positive

DEFAULTS = dict(out_dir='out', n_layer=None, max_iters=5000, learning_rate=6e-4, compile=False, betas=(0.9, 0.95),
                top_k=200)


def test_overrides_and_files(tmp_path):
    """Config files run as Python (imports and helpers ignored), later arguments win, None defaults take any type,
    an int for a float becomes a float, a bare word is a string."""
    cfg = tmp_path / 'c.py'
    cfg.write_text("import math\n_helper = 3\nmax_iters = 10\nlearning_rate = 1e-3 * math.sqrt(4)\n")
    c = parse(DEFAULTS, [str(cfg), '--n_layer=4', '--compile=True', '--out_dir=run1', '--learning_rate=1',
                         '--betas=[0.8, 0.9]'], {})
    assert c == dict(DEFAULTS, out_dir='run1', n_layer=4, max_iters=10, learning_rate=1.0, compile=True,
                     betas=(0.8, 0.9)) and isinstance(c['learning_rate'], float)


@pytest.mark.parametrize('argv, fragment', [
    (['--n_layrs=4'], '--n_layrs=4: write --key=value with a known key'),
    (['--max_iters=1.5'], 'max_iters expects int'),
    (['--compile=1'], 'compile expects bool'),
    (['--max_iters=[1'], "max_iters: cannot read '[1'"),
    (['--max_iters'], 'write --key=value'),
    (['--max_iters=None'], 'max_iters=None: give a int'),
    (['--learning_rate=1e999'], 'give a finite number'),
    (['--learning_rate=-1.0'], 'learning_rate=-1.0: must be > 0'),
    (['--top_k=0'], 'top_k=0: must be > 0'),
])
def test_bad_arguments_name_the_problem(argv, fragment):
    rules = dict(learning_rate=positive, top_k=nullable(positive))
    with pytest.raises(ValueError) as e:
        parse(DEFAULTS, argv, rules)
    assert fragment in str(e.value)
    assert parse(DEFAULTS, ['--top_k=None'], rules)['top_k'] is None  # nullable: None means "off"


def test_bad_config_files(tmp_path):
    (tmp_path / 'syntax.py').write_text("max_iters = = 3\n")
    (tmp_path / 'unknown.py').write_text("max_iterz = 3\n")
    for name, fragment in (('syntax.py', 'syntax.py: SyntaxError'), ('unknown.py', "unknown key 'max_iterz'"),
                           ('nope.py', 'nope.py: FileNotFoundError')):
        with pytest.raises(ValueError, match=fragment):
            parse(DEFAULTS, [str(tmp_path / name)], {})


def test_rules():
    assert check('p', 0.5, 0.1, between(0, 1, hi_open=True)) == 0.5
    with pytest.raises(ValueError, match=r"p=1.0: must be in \[0, 1\)"):
        check('p', 1.0, 0.1, between(0, 1, hi_open=True))
    with pytest.raises(ValueError, match="must be one of 'a', 'b'"):
        check('s', 'c', 'a', one_of('a', 'b'))
    with pytest.raises(ValueError, match='must be even'):  # a rule whose test raises is a failed check, not a crash
        check('n', 'x', None, Rule(lambda v: v % 2 == 0, 'even'))


SCRIPTS = ['train.py', 'sample.py', 'eval.py', 'experiment.py', 'bench.py', 'data/prepare.py']


@pytest.mark.parametrize('script', SCRIPTS)
def test_help_lists_the_settings(script):
    """python <script> --help prints what the script does and its settings with their defaults and meanings."""
    r = run_script(script, '--help')
    assert r.returncode == 0 and r.stderr == '', r.stderr[-2000:]
    assert 'settings (default  # meaning):' in r.stdout and r.stdout.count(' = ') >= 3 and '  # ' in r.stdout


def test_ctrl_c_during_start_up_is_one_line_and_130(tmp_path):
    """Ctrl-C while train.py is still importing (conftest.STOP_AT_IMPORT): status 130, one line, no traceback, no
    out_dir."""
    r = train_patched(STOP_AT_IMPORT, f'--out_dir={tmp_path / "out"}', '--device=cpu')
    assert r.returncode == 130 and r.stderr.strip() == 'error: interrupted (Ctrl-C)', r.stderr
    assert not (tmp_path / 'out').exists()

"""Configuration: config files + --key=value against a script's defaults. Bad input is one error line naming
the key, a non-zero exit, and nothing written to out_dir."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from configurator import ConfigError, parse_args  # noqa: E402

DEFAULTS = dict(out_dir='out', n_layer=None, max_iters=5000, learning_rate=6e-4, compile=False, betas=(0.9, 0.95))


def test_overrides_and_files(tmp_path):
    cfg = tmp_path / 'c.py'
    cfg.write_text("import math\nmax_iters = 10\nlearning_rate = 1e-3 * math.sqrt(4)\n")
    c = parse_args(DEFAULTS, [str(cfg), '--n_layer=4', '--compile=True', '--out_dir=run1', '--learning_rate=1',
                              '--betas=[0.8, 0.9]'])
    # the None default took an int; an int for a float default becomes a float; later arguments win
    assert c == dict(out_dir='run1', n_layer=4, max_iters=10, learning_rate=1.0, compile=True, betas=(0.8, 0.9))
    assert isinstance(c['learning_rate'], float)


@pytest.mark.parametrize('argv, fragment', [
    (['--n_layrs=4'], "'n_layrs'"),                     # unknown key
    (['--max_iters=1.5'], "'max_iters' expects int"),   # wrong type
    (['--compile=1'], "'compile' expects bool"),        # an int is not a bool
    (['--max_iters=[1'], "'max_iters'"),                # malformed literal
    (['--max_iters'], "--key=value"),                   # no value
    (['max_iters=3'], "--key=value"),                   # no dashes
])
def test_bad_arguments_name_the_problem(argv, fragment):
    with pytest.raises(ConfigError) as e:
        parse_args(DEFAULTS, argv)
    assert fragment in str(e.value)


def test_bad_config_files(tmp_path):
    (tmp_path / 'syntax.py').write_text("max_iters = = 3\n")
    (tmp_path / 'unknown.py').write_text("max_iterz = 3\n")
    with pytest.raises(ConfigError, match='syntax.py'):
        parse_args(DEFAULTS, [str(tmp_path / 'syntax.py')])
    with pytest.raises(ConfigError, match="'max_iterz'"):
        parse_args(DEFAULTS, [str(tmp_path / 'unknown.py')])
    with pytest.raises(ConfigError, match='nope.py'):
        parse_args(DEFAULTS, [str(tmp_path / 'nope.py')])


@pytest.mark.parametrize('args, fragment', [
    (['--n_layrs=2'], "'n_layrs'"),
    (['--batch_size=0.5'], "'batch_size'"),
    (['--learning_rate=fast'], "'learning_rate'"),
    (['--data_dir=/nonexistent/dataset'], 'meta.json not found'),
    (['--init_from=resume'], 'does not exist'),
    (['--model_preset=pythia-15m'], "model_preset='pythia-15m': must be one of"),
    (['--vocab_size=3'], 'has 5 ids but the model only 3'),
    (['--block_size=4096'], 'fewer than block_size+1'),
])
def test_train_rejects_bad_config_before_writing(tmp_path, args, fragment):
    from data.prepare import write_dataset
    from data.tokenizer import get_tokenizer
    data = str(tmp_path / 'data')
    write_dataset(data, ['abc ' * 100] * 20, get_tokenizer('char', chars=' abc'), source='test', val_fraction=0.1,
                  num_proc=1)
    out = tmp_path / 'out'
    r = subprocess.run([sys.executable, 'train.py', f'--out_dir={out}', '--device=cpu', f'--data_dir={data}', *args],
                       cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert fragment in r.stderr, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1].startswith('error:')
    assert not out.exists()


def test_train_config_files_parse():
    """Every shipped training config names only keys train.py knows, with the right types."""
    import ast
    with open(os.path.join(REPO, 'train.py')) as f:
        tree = ast.parse(f.read())
    defaults = {}
    for node in tree.body:  # train.py's module-level literal defaults, without running it
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                defaults[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                defaults[node.targets[0].id] = None  # computed defaults (device) take any type
    # and its rules: the rules= argument of its configure(...) call, evaluated with configurator's rule names
    import configurator
    from model import PRESETS
    call = next(n.value for n in tree.body if isinstance(n, ast.Assign) and isinstance(n.value, ast.Call)
                and getattr(n.value.func, 'id', None) == 'configure')
    rules_node = next(k.value for k in call.keywords if k.arg == 'rules')
    rules = eval(compile(ast.Expression(rules_node), 'train.py', 'eval'),
                 dict(vars(configurator), PRESETS=PRESETS, device_rule=configurator.device))
    configs = sorted(f for f in os.listdir(os.path.join(REPO, 'config')) if f.startswith(('train_', 'grow_')))
    assert configs and 'device' in rules and 'batch_size' in rules
    for name in configs:
        c = parse_args(defaults, [os.path.join(REPO, 'config', name)],
                       {k: r for k, r in rules.items() if k != 'device'})  # devices depend on the machine
        assert c['out_dir'] != defaults['out_dir'], name  # each run gets its own out_dir
        json.dumps(c)  # the resolved config must be storable as it is in config.json

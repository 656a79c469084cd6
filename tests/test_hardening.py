"""Bad input and lost work, through every script as a user types it. The battery: each case exits non-zero with
exactly one line on stderr ('error: ...', no traceback) naming the problem, and leaves every file of the workspace
as it was. Then what must never be lost: an export folder, a run two processes start at once, a torn metrics line, a
damaged checkpoint, a busy or stale out_dir, Ctrl-C, a full disk, a model directory that is not ours."""
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO, STOP_AT_IMPORT, run_script, train_patched

ENV = dict(os.environ, OMP_NUM_THREADS='1')
TINY = ['--device=cpu', '--dtype=float32', '--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32',
        '--batch_size=4', '--eval_iters=2', '--log_interval=1', '--learning_rate=1e-2', '--warmup_iters=2']


def run(script, *args, cwd=REPO, check=None, timeout=300):
    r = run_script(script, *args, cwd=cwd, env=ENV, timeout=timeout)
    assert check is None or r.returncode == check, r.stderr[-3000:]
    return r


def snapshot(root):
    out = {}
    for d, dirs, names in os.walk(root):
        for name in dirs + names:
            p = os.path.join(d, name)
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (st.st_size, st.st_mtime_ns, st.st_mode)
    return out


def model_dir(path, **config_changes):
    """A tiny model directory written by hf_io, its config.json then changed (None deletes a field)."""
    from hf_io import save_pretrained
    from model import GPT, GPTConfig
    save_pretrained(GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, vocab_size=64, block_size=32)), str(path),
                    extra_meta={'note': 'test'})
    cfg = json.loads((path / 'config.json').read_text())
    cfg.update(config_changes)
    (path / 'config.json').write_text(json.dumps({k: v for k, v in cfg.items() if v is not None}))


@pytest.fixture(scope='module')
def ws(tmp_path_factory):
    """A workspace: char datasets (two alphabets), a pruned train.py run with its export, damaged datasets, damaged
    model directories, checkpoints and experiment folders, bad input files."""
    from data.prepare import write_dataset
    from data.tokenizer import get_tokenizer
    w = tmp_path_factory.mktemp('ws')
    text = ['the sparse model grows wider and deeper while pruning weights. ' * 20] * 30
    write_dataset(str(w / 'data'), text, get_tokenizer('char', chars=''.join(sorted(set(text[0])))), source='t',
                  val_fraction=0.2, num_proc=1)
    other = ['abcdefghij klmnop. ' * 40] * 30
    write_dataset(str(w / 'data2'), other, get_tokenizer('char', chars=''.join(sorted(set(other[0])))), source='t',
                  val_fraction=0.2, num_proc=1)
    run('train.py', *TINY, f'--data_dir={w / "data"}', f'--out_dir={w / "run"}', '--max_iters=4', '--eval_interval=2',
        '--final_sparsity=0.5', '--prune_start=0', '--prune_end=2', '--prune_every=1', '--save_hf=True', check=0)
    ckpt = torch.load(w / 'run' / 'ckpt.pt', weights_only=True)
    for name in ('damaged', 'bad_rng', 'no_data'):  # copies of the run whose checkpoints are damaged three ways
        (w / name).mkdir()
        for f in ('metrics.jsonl', 'train_config.json'):
            (w / name / f).write_bytes((w / 'run' / f).read_bytes())
    raw = bytearray((w / 'run' / 'ckpt.pt').read_bytes())
    i = raw.find(ckpt['model']['lm_head.weight'].numpy().tobytes()[:64])
    raw[i + 8] ^= 0xff  # one weight's bits flipped: torch.load still reads it, the checksum does not match
    (w / 'damaged' / 'ckpt.pt').write_bytes(bytes(raw))
    import files
    bad = dict(ckpt, rng_ranks=[dict(torch=torch.zeros(3, dtype=torch.uint8))])
    torch.save(dict(bad, checksum=files.checksum({k: v for k, v in bad.items() if k != 'checksum'})),
               w / 'bad_rng' / 'ckpt.pt')
    bad = {k: v for k, v in ckpt.items() if k not in ('data', 'checksum')}
    torch.save(bad, w / 'no_data' / 'ckpt.pt')
    for name, meta in (('bad_json', '{"tokenizer": "char", '), ('bad_keys', '{"tokenizer": "char"}')):
        (w / name).mkdir()
        (w / name / 'meta.json').write_text(meta)
    for name, size in (('empty_bin', 0), ('odd_bin', 3)):
        (w / name).mkdir()
        (w / name / 'meta.json').write_text((w / 'data' / 'meta.json').read_text())
        (w / name / 'train.bin').write_bytes(b'\0' * size)
        (w / name / 'val.bin').write_bytes((w / 'data' / 'val.bin').read_bytes())
    (w / 'neox_bad').mkdir()  # a dataset whose tokenizer file is damaged
    for f in ('train.bin', 'val.bin'):
        (w / 'neox_bad' / f).write_bytes((w / 'data' / f).read_bytes())
    (w / 'neox_bad' / 'tokenizer.json').write_text('{"version": "1.0", "model": ')
    (w / 'neox_bad' / 'meta.json').write_text(json.dumps(dict(tokenizer='gpt-neox-20b', vocab_size=50277, eot=0,
                                                              dtype='uint16', tokenizer_path=str(w / 'neox_bad' /
                                                                                                 'tokenizer.json'))))
    for name, changes in dict(corrupt_st={}, no_fields=dict(hidden_size=None), zero_heads=dict(num_attention_heads=0),
                              neg_vocab=dict(vocab_size=-5), str_width=dict(hidden_size='wide'),
                              neg_eps=dict(layer_norm_eps=-1e-5), odd_rotary=dict(rotary_pct=0.35,
                              rope_parameters=dict(rope_type='default', rope_theta=1e4, partial_rotary_factor=0.35)),
                              unknown_type=dict(model_type='llama')).items():
        model_dir(w / name, **changes)
    (w / 'corrupt_st' / 'model.safetensors').write_bytes(b'not a safetensors file at all')
    model_dir(w / 'bad_config')
    (w / 'bad_config' / 'config.json').write_text('{"model_type": "gpt_neox",')
    (w / 'prompt_latin1.txt').write_bytes('caf\xe9 \xff'.encode('latin-1'))
    (w / 'corrupt.jsonl.xz').write_bytes(b'\xfd7zXZ\x00\x00 this is not xz')
    (w / 'numbers.jsonl').write_text('{"text": "fine"}\n{"text": 42}\n')
    (w / 'broken.jsonl').write_text('{"text": "fine"}\n{"text": "half\n')
    (w / 'latin1.txt').write_bytes('caf\xe9'.encode('latin-1'))
    (w / 'good.jsonl').write_text('{"text": "a fine document"}\n' * 50)
    (w / 'empty_wiki.raw').write_text('')
    (w / 'empty_lambada.jsonl').write_text('')
    (w / 'a_file').write_text('x')
    (w / 'keep').mkdir()
    (w / 'keep' / 'notes.txt').write_text('mine')
    (w / 'lockdir' / 'train.lock').mkdir(parents=True)  # a lock path that is a folder
    (w / 'busy').mkdir()
    (w / 'busy' / 'train.lock').write_text(f"{os.getpid()} {socket.gethostname()}\n")  # this test process: alive
    (w / 'nan.py').write_text("final_sparsity = float('nan')\n")
    (w / 'latin1_config.py').write_bytes("max_iters = 3  # caf\xe9\n".encode('latin-1'))
    (w / 'exported').mkdir()  # an out_dir whose export folder holds a file the user put there
    (w / 'exported' / 'model').mkdir()
    (w / 'exported' / 'model' / 'notes.txt').write_text('mine')
    arm = "{'args': ['--n_embd=32', '--n_layer=1', '--n_head=2'], 'learning_rate': [1e-3]}"
    for name, text in dict(
            exp_no_r1="arms = {'recipe2': {'args': ['--init_from={small}']}}\nsmall = 'x'\n",
            exp_list_arm="arms = {'recipe1': ['--n_embd=32']}\n",
            exp_seed64=f"arms = {{'recipe1': {arm}}}\nseeds = [2 ** 64]\n",
            exp_dup_seed=f"arms = {{'recipe1': {arm}}}\nseeds = [1, 1]\n",
            exp_empty_grid="arms = {'recipe1': {'args': [], 'learning_rate': []}}\n",
            exp_grid_seed="arms = {'recipe1': {'args': [], 'seed': [1, 2]}}\n",
            exp_out_dir="arms = {'recipe1': {'args': ['--out_dir=x']}}\n",
            exp_no_file="arms = {'recipe1': {'args': ['config/nowhere.py']}}\n",
            exp_bad_name=f"arms = {{'recipe1': {arm}, 'bad/name': {arm}}}\n",
            exp_small_both=f"arms = {{'recipe1': {arm}, 'recipe2': {{'args': ['--init_from={{small}}']}}}}\n"
                           f"small = 'x'\nsmall_pretrain = ['--max_iters=1']\n",
            exp_small_none=f"arms = {{'recipe1': {arm}, 'recipe2': {{'args': ['--init_from={{small}}']}}}}\n",
            exp_common=f"arms = {{'recipe1': {arm}}}\ncommon = ['--batch_size']\n",
            exp_launcher=f"arms = {{'recipe1': {arm}}}\nlauncher = 'no-such-launcher --x'\n",
            exp_ok=f"arms = {{'recipe1': {arm}}}\n").items():
        (w / f'{name}.py').write_text(text)
    for name, commands in (('exp_damaged', '{"recipe1/lr0.001_s1337": '), ('exp_foreign', '{}')):
        (w / name / 'recipe1' / 'lr0.001_s1337').mkdir(parents=True)
        (w / name / 'commands.json').write_text(commands)
        (w / name / 'recipe1' / 'lr0.001_s1337' / 'metrics.jsonl').write_text('{"iter": 0, "val_loss": 4.0}\n')
    for name, (config, metrics) in dict(exp_bad_tc=('{"config": ', '{"iter": 0, "tokens": 0, "val_loss": 4.0}\n'),
                                       exp_bad_metrics=(json.dumps(dict(config=dict(max_iters=0), flops_per_token=1,
                                                                        params=dict(linear=1))),
                                                        '[1, 2]\n{"iter": 0, "tokens": 0, "val_loss": 4.0}\n')).items():
        d = w / name / 'recipe1' / 'lr0.001_s1337'
        d.mkdir(parents=True)
        (d / 'train_config.json').write_text(config)
        (d / 'metrics.jsonl').write_text(metrics)
    (w / 'ro').mkdir()
    return w


D, R = '--data_dir=data', '--out_dir=out'
# resuming ws/run with its own settings: each case changes one of them
RESUME = ['--out_dir=run', '--init_from=resume', '--device=cpu', '--batch_size=4', '--final_sparsity=0.5',
          '--prune_end=2', '--prune_every=1', '--learning_rate=1e-2', '--warmup_iters=2']
# a destination the OS refuses (read-only file system): root ignores permissions, so the refusal is injected
READ_ONLY = ("import builtins, errno, os\n"
             "ro = os.path.realpath('ro')\n"
             "def guard(f, i=0):\n"
             "    def g(*a, **k):\n"
             "        p = a[i] if len(a) > i else None\n"
             "        mode = a[1] if f is builtins.open and len(a) > 1 else k.get('mode', 'r')\n"
             "        if isinstance(p, (str, os.PathLike)) and os.path.realpath(p).startswith(ro) and (\n"
             "                f is not builtins.open or set(mode) & set('wax+')):\n"
             "            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(p))\n"
             "        return f(*a, **k)\n"
             "    return g\n"
             "builtins.open, os.open, os.makedirs, os.mkdir = guard(builtins.open), guard(os.open), "
             "guard(os.makedirs), guard(os.mkdir)\n"
             "access = os.access\n"
             "os.access = lambda p, m, **k: False if m & os.W_OK and os.path.realpath(p).startswith(ro) "
             "else access(p, m, **k)\n")
BAD = [
    # train.py: values and settings that contradict each other
    ('train.py', [D, R, '--gradient_accumulation_steps=0'], 'gradient_accumulation_steps=0: must be > 0'),
    ('train.py', [D, R, '--final_sparsity=-0.1'], 'final_sparsity=-0.1: must be in [0, 1)'),
    ('train.py', [D, R, '--final_sparsity=1e999'], 'final_sparsity=inf: give a finite number'),
    ('train.py', ['nan.py', D, R], 'final_sparsity=nan: give a finite number'),
    ('train.py', [D, R, '--max_iters=-1'], 'max_iters=-1: must be >= 0'),
    ('train.py', [D, R, '--max_iters=None'], 'max_iters=None'),
    ('train.py', [D, R, '--batch_size=0'], 'batch_size=0'),
    ('train.py', [D, R, '--eval_interval=0'], 'eval_interval=0'),
    ('train.py', [D, R, '--learning_rate=-0.001'], 'learning_rate=-0.001'),
    ('train.py', [D, R, '--beta1=1.5'], 'beta1=1.5'),
    ('train.py', [D, R, '--beta2=-0.1'], 'beta2=-0.1'),
    ('train.py', [D, R, '--weight_decay=-1.0'], 'weight_decay=-1.0'),
    ('train.py', [D, R, '--device=cuda:7'], "device='cuda:7': must be a device this machine has"),
    ('train.py', [D, R, '--device=tpu'], "device='tpu'"),
    ('train.py', [D, R, '--dtype=float16'], "dtype='float16'"),
    ('train.py', [D, R, '--model_preset=pythia-15m'], "model_preset='pythia-15m'"),
    ('train.py', [D, R, '--n_layer=0'], 'n_layer=0'),
    ('train.py', [D, R, '--dropout=1.0'], 'dropout=1.0'),
    ('train.py', [D, R, '--seed=-1'], 'seed=-1'),
    ('train.py', [D, R, f'--seed={2 ** 64}'], f'seed={2 ** 64}: must be in [0, 2**63)'),
    ('train.py', [D, R, '--prune_schedule=linear'], "prune_schedule='linear'"),
    ('train.py', [D, R, '--final_sparsity=0.5', '--prune_start=10', '--prune_end=5'], 'prune_end=5 is before'),
    ('train.py', [D, R, '--final_sparsity=0.5', '--pattern=3:4'], 'pattern 3:4 keeps 3'),
    ('train.py', [D, R, '--pattern=4:2'], "pattern='4:2': use 'unstructured' or 'N:M'"),
    ('train.py', [D, R, '--eval_interval=2', '--checkpoint_interval=3'], 'multiple of eval_interval'),
    ('train.py', [D, R, "--grow={'n_embd': 64}"], 'grow grows a pretrained model'),
    ('train.py', [D, R, '--init_from=run', "--grow={'width': 64}"], "grow['width']=64: must be a setting of expand"),
    ('train.py', [D, R, '--init_from=run', "--grow={'n_embd': -64}"], "grow['n_embd']=-64: must be > 0"),
    ('train.py', [D, R, '--grow=64'], 'grow=64: must be a dict'),
    ('train.py', [D, R, '--init_from=run', "--grow={'method': 'diagonal'}"], "grow['method']='diagonal'"),
    ('train.py', [D, R, '--init_from=run', "--grow={'n_embd': 40}"], 'whole number of heads'),
    ('train.py', [D, R, '--final_sparsity=0.5', '--score=wanda', '--calib_batches=0'], 'calib_batches=0'),
    ('train.py', [D, R, '--max_iterz=3'], '--max_iterz=3: write --key=value with a known key'),
    ('train.py', [D, R, '--batch_size=2.5'], 'batch_size expects int'),
    ('train.py', [D, R, '--learning_rate=1e-3', '--min_lr=1e-2'], 'min_lr=0.01 is above learning_rate=0.001'),
    ('train.py', [D, R, '--final_sparsity=0.5', '--score=sparsegpt', '--prune_end=4'], 'prunes once with calibrat'),
    ('train.py', [D, R, '--batch_size=4', '--micro_batch_size=3'], 'a multiple of micro_batch_size=3'),
    ('train.py', [D, R, '--fsdp=True'], 'fsdp=True shards over the ranks of a torchrun launch'),
    ('train.py', ['latin1_config.py', D, R], 'config file latin1_config.py: UnicodeDecodeError'),
    # train.py: files and folders
    ('train.py', [D, R, '--init_from=resume'], 'out/ckpt.pt'),
    ('train.py', ['--data_dir=bad_json', R], 'bad_json/meta.json'),
    ('train.py', ['--data_dir=bad_keys', R], 'bad_keys/meta.json lacks vocab_size, dtype'),
    ('train.py', ['--data_dir=empty_bin', R], 'empty_bin/train.bin has 0 bytes'),
    ('train.py', ['--data_dir=odd_bin', R], 'odd_bin/train.bin has 3 bytes'),
    ('train.py', ['--data_dir=nowhere', R], 'nowhere/meta.json not found'),
    ('train.py', ['--data_dir=neox_bad', R, '--save_hf=True'], 'tokenizer.json'),
    ('train.py', [D, '--out_dir=a_file'], 'a_file is a file'),
    ('train.py', [D, '--out_dir=a_file/sub'], 'a_file is a file, not a folder'),
    ('train.py', [D, '--out_dir=run'], 'already holds a run'),
    ('train.py', [D, '--out_dir=busy'], f'busy is in use by pid {os.getpid()}'),
    ('train.py', [D, '--out_dir=lockdir'], 'lockdir'),
    ('train.py', [D, '--out_dir=exported', '--save_hf=True'], 'holds other files'),
    ('train.py', [D, '--out_dir=ro/out'], 'read-only'),
    ('train.py', [D, '--out_dir=damaged', '--init_from=resume', '--device=cpu'], 'damaged (checksum mismatch)'),
    ('train.py', [D, '--out_dir=bad_rng', *RESUME[2:], '--init_from=resume', '--max_iters=6'], 'bad_rng/ckpt.pt'),
    # train.py: a resume that would change what the run is
    ('train.py', [D, *RESUME, '--final_sparsity=0.3'], 'trained with final_sparsity=0.5, not 0.3'),
    ('train.py', [D, *RESUME, '--batch_size=8'], 'trained with batch_size=4, not 8'),
    ('train.py', [D, *RESUME, '--prune_end=3'], 'trained with prune_end=2, not 3'),
    ('train.py', [D, *RESUME, '--prune_schedule=geometric'], "trained with prune_schedule='cubic'"),
    ('train.py', [D, *RESUME, '--dropout=0.1'], 'trained with dropout=0.0, not 0.1'),
    ('train.py', [D, *RESUME, '--model_preset=pythia-70m'], "trained with model_preset='pythia-14m'"),
    ('train.py', [D, *RESUME, '--learning_rate=3e-2'], 'trained with learning_rate=0.01, not 0.03'),
    ('train.py', [D, *RESUME, '--seed=7'], 'trained with seed=1337, not 7'),
    ('train.py', [D, *RESUME, '--max_iters=2'], "max_iters=2 is below the checkpoint's iteration 4"),
    ('train.py', [D, *RESUME, '--block_size=16'], 'trained with block_size=32, not 16'),
    ('train.py', ['--data_dir=data2', *RESUME], 'use different tokenizers'),
    ('train.py', [D, R, '--init_from=corrupt_st'], 'corrupt_st/model.safetensors'),
    ('train.py', [D, R, '--init_from=no_fields'], 'hidden_size'),
    ('train.py', [D, R, '--init_from=bad_config'], 'bad_config/config.json is damaged'),
    ('train.py', [D, R, '--init_from=zero_heads'], 'num_attention_heads=0'),
    ('train.py', [D, R, '--init_from=neg_vocab'], 'vocab_size=-5'),
    ('train.py', [D, R, '--init_from=str_width'], 'hidden_size'),
    ('train.py', [D, R, '--init_from=neg_eps'], 'layer_norm_eps'),
    ('train.py', [D, R, '--init_from=odd_rotary'], 'rotary'),
    ('train.py', [D, R, '--init_from=unknown_type'], "model_type 'llama' is not supported"),
    ('train.py', [D, R, '--init_from=run', '--n_embd=64'], 'takes the shape from the model'),
    ('train.py', ['--data_dir=data2', R, '--init_from=run/model'], 'use different tokenizers'),
    # sample.py
    ('sample.py', ['--init_from=run', '--temperature=-1.0'], 'temperature=-1.0: must be >= 0'),
    ('sample.py', ['--init_from=run', '--top_p=1.5'], 'top_p=1.5'),
    ('sample.py', ['--init_from=run', '--max_new_tokens=-5'], 'max_new_tokens=-5'),
    ('sample.py', ['--init_from=run', '--top_k=0'], 'top_k=0'),
    ('sample.py', ['--init_from=run', '--num_samples=0'], 'num_samples=0'),
    ('sample.py', ['--init_from=run', '--dtype=int8'], "dtype='int8'"),
    ('sample.py', ['--init_from=run', '--start=FILE:prompt_latin1.txt'], 'prompt_latin1.txt'),
    ('sample.py', ['--init_from=run', '--start=FILE:nowhere.txt'], 'nowhere.txt'),
    ('sample.py', ['--init_from=nothing_here'], 'nothing_here'),
    ('sample.py', ['--init_from=run', '--tokenizer=gpt2'], '50257'),
    ('sample.py', ['--init_from=damaged'], 'damaged (checksum mismatch)'),
    ('sample.py', ['--init_from=zero_heads'], 'num_attention_heads=0'),
    ('sample.py', ['--init_from=run', '--start=zz'], "character 'z'"),
    # bench.py
    ('bench.py', ['--model_preset=pythia-3b'], "--model_preset=pythia-3b: write --key=value with a known key"),
    ('bench.py', ['--num_iters=0'], 'num_iters=0'),
    ('bench.py', ['--mode=inference'], "mode='inference'"),
    ('bench.py', ['--out_json=ro/b.json'], 'read-only'),
    ('bench.py', ['--out_json=a_file/b.json'], 'a_file is a file'),
    ('bench.py', [], 'bench.py measures a GPU'),
    # data/prepare.py
    ('data/prepare.py', ['--input=corrupt.jsonl.xz', '--out_dir=prepared', '--tokenizer=gpt2'], 'damaged or truncated'),
    ('data/prepare.py', ['--input=numbers.jsonl', '--out_dir=prepared', '--tokenizer=gpt2'], "numbers.jsonl:2"),
    ('data/prepare.py', ['--input=broken.jsonl', '--out_dir=prepared', '--tokenizer=gpt2'], 'broken.jsonl:2'),
    ('data/prepare.py', ['--input=latin1.txt', '--out_dir=prepared', '--tokenizer=gpt2'], 'latin1.txt'),
    ('data/prepare.py', ['--input=numbers.jsonl', '--out_dir=prepared', '--val_fraction=0.0'], 'val_fraction=0.0'),
    ('data/prepare.py', ['--input=numbers.jsonl', '--out_dir=prepared', '--tokenizer=bpe'], "tokenizer='bpe'"),
    ('data/prepare.py', ['--input=nothing.jsonl', '--out_dir=prepared'], 'matches no file'),
    ('data/prepare.py', ['--input=good.jsonl', '--out_dir=data', '--tokenizer=char'], 'holds a prepared dataset'),
    ('data/prepare.py', ['--input=good.jsonl', '--out_dir=a_file', '--tokenizer=char'], 'a_file'),
    ('data/prepare.py', ['--input=good.jsonl', '--out_dir=ro/d', '--tokenizer=char'], 'read-only'),
    ('data/prepare.py', ['--input=good.jsonl', '--out_dir=d', '--test_fraction=1.0'], 'test_fraction=1.0'),
    # eval.py
    ('eval.py', ['--init_from=run', "--tasks=['mmlu']"], "tasks=['mmlu']"),
    ('eval.py', ['--init_from=run', "--tasks=['val']", '--data_dir=bad_json'], 'bad_json/meta.json'),
    ('eval.py', ['--init_from=run', "--tasks=['val']", '--data_dir=data2'], 'different tokenizers'),
    ('eval.py', ['--init_from=run', "--tasks=['test']", D], 'test.bin'),
    ('eval.py', ['--init_from=run', "--tasks=['lambada']", '--lambada=numbers.jsonl', '--device=cpu'],
     'numbers.jsonl:2'),
    ('eval.py', ['--init_from=run', "--tasks=['wikitext']", '--wikitext=empty_wiki.raw'], 'empty_wiki.raw'),
    ('eval.py', ['--init_from=run', "--tasks=['lambada']", '--lambada=empty_lambada.jsonl'], 'empty_lambada.jsonl'),
    ('eval.py', ['--init_from=run', "--tasks=['wikitext']", '--tokenizer=gpt2'], '50257'),
    ('eval.py', ['--init_from=run', '--max_length=4096'], 'exceeds the model'),
    ('eval.py', ['--init_from=damaged', "--tasks=['val']"], 'damaged (checksum mismatch)'),
    ('eval.py', ['--init_from=odd_rotary', "--tasks=['val']", D], 'rotary'),
    ('eval.py', ['--init_from=run', "--tasks=['val']", D, '--out_json=ro/e.json'], 'read-only'),
    # experiment.py
    ('experiment.py', ['exp_no_r1.py', '--exp_dir=e'], "must name 'recipe1'"),
    ('experiment.py', ['exp_ok.py', '--exp_dir=e', '--parallel=0'], 'parallel=0'),
    ('experiment.py', ['exp_list_arm.py', '--exp_dir=e'], "arm 'recipe1': give dict(args="),
    ('experiment.py', ['exp_seed64.py', '--exp_dir=e'], 'give distinct integers in [0, 2**63)'),
    ('experiment.py', ['exp_dup_seed.py', '--exp_dir=e'], 'seeds=[1, 1]'),
    ('experiment.py', ['exp_empty_grid.py', '--exp_dir=e'], 'grid key learning_rate'),
    ('experiment.py', ['exp_grid_seed.py', '--exp_dir=e'], 'grid key seed'),
    ('experiment.py', ['exp_out_dir.py', '--exp_dir=e'], "'--out_dir=x'"),
    ('experiment.py', ['exp_no_file.py', '--exp_dir=e'], 'config/nowhere.py does not exist'),
    ('experiment.py', ['exp_bad_name.py', '--exp_dir=e'], "arm name 'bad/name'"),
    ('experiment.py', ['exp_small_both.py', '--exp_dir=e'], 'set one of small'),
    ('experiment.py', ['exp_small_none.py', '--exp_dir=e'], 'set one of small'),
    ('experiment.py', ['exp_common.py', '--exp_dir=e'], 'common takes --key=value arguments only'),
    ('experiment.py', ['exp_launcher.py', '--exp_dir=e'], "launcher 'no-such-launcher'"),
    ('experiment.py', ['exp_ok.py', '--exp_dir=a_file'], 'exp_dir a_file is a file'),
    ('experiment.py', ['exp_ok.py', '--exp_dir=exp_damaged'], 'exp_damaged/commands.json is damaged'),
    ('experiment.py', ['exp_ok.py', '--exp_dir=exp_foreign'], 'holds a run this experiment did not record'),
    ('experiment.py', ['exp_ok.py', '--exp_dir=exp_bad_tc', '--plot_only=True'], 'train_config.json is damaged'),
    ('experiment.py', ['exp_ok.py', '--exp_dir=exp_bad_metrics', '--plot_only=True'], 'metrics.jsonl:1'),
    ('experiment.py', ['exp_ok.py', '--exp_dir=ro/e'], 'read-only'),
    ('experiment.py', ['exp_ok.py', '--exp_dir=e', "--only=['recipe9']"], "only=['recipe9']: give a list of arm names"),
    ('experiment.py', ["--compare=['nowhere']", '--exp_dir=e'], 'nowhere/summary.json not found'),
    ('experiment.py', ["--compare=[3]", '--exp_dir=e'], 'must be a list of exp_dirs'),
]


@pytest.mark.parametrize('script, args, fragment', BAD, ids=[f'{s}:{" ".join(a)[:60]}' for s, a, _ in BAD])
def test_bad_input_is_one_line_and_changes_nothing(ws, script_runner, script, args, fragment):
    before = snapshot(ws)
    status, _, err = script_runner(script, *args, cwd=ws, patch=READ_ONLY)
    lines = err.strip().splitlines()
    assert status in (1, 2) and len(lines) == 1 and lines[0].startswith('error: '), err[-3000:]
    assert fragment in lines[0], lines[0]
    assert snapshot(ws) == before


def test_battery_size_and_exit_convention(ws, script_runner):
    """At least 140 cases over all six scripts; 2 for a setting, 1 for a file found wanting at run time."""
    assert len(BAD) >= 140 and len({s for s, _, _ in BAD}) == 6
    assert script_runner('train.py', D, R, '--batch_size=0', cwd=ws)[0] == 2
    assert script_runner('train.py', '--data_dir=bad_json', R, cwd=ws)[0] == 1


# ------------------------------------------------------------------ nothing lost
def start_train(out, data, *args):
    # SIGINT as a terminal delivers it: a suite started in the background (cmd &) ignores SIGINT, children inherit it
    return subprocess.Popen([sys.executable, os.path.join(REPO, 'train.py'), *TINY, f'--data_dir={data}',
                             f'--out_dir={out}', *args], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(path, proc, timeout=120):
    t0 = time.time()
    while not os.path.exists(path):
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() - t0 < timeout
        time.sleep(0.02)


def load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def test_two_runs_started_at_once_one_proceeds(ws, tmp_path):
    """Two fresh runs started on one out_dir at the same moment: exactly one trains, the other refuses with one
    line before writing anything, and metrics.jsonl holds one run's records, never interleaved."""
    out = str(tmp_path / 'out')
    ps = [start_train(out, ws / 'data', '--max_iters=6', '--eval_interval=3') for _ in range(2)]
    res = [(p.wait(timeout=300), p.communicate()[1]) for p in ps]
    assert sorted(r for r, _ in res) == [0, 1], res
    err = next(e for r, e in res if r == 1)
    assert err.count('\n') == 1 and ('in use' in err or 'already holds a run' in err), err
    rows = [json.loads(line) for line in open(os.path.join(out, 'metrics.jsonl'))]
    assert [r['iter'] for r in rows if 'val_loss' in r] == [0, 3, 6]


def test_busy_out_dir_then_stale_lock_and_ctrl_c(ws, tmp_path):
    """A second train.py on a running out_dir refuses (the lock names the pid); after a SIGKILL the stale lock is
    taken over and resume works; Ctrl-C stops a run with one line and status 130, no temp file, a loadable
    checkpoint, no lock."""
    out = str(tmp_path / 'out')
    p = start_train(out, ws / 'data', '--max_iters=100000', '--eval_interval=5')
    wait_for(os.path.join(out, 'ckpt.pt'), p)
    r = run('train.py', *TINY, f'--data_dir={ws / "data"}', f'--out_dir={out}', '--init_from=resume',
            '--max_iters=100000', '--eval_interval=5')
    assert r.returncode == 1 and f'in use by pid {p.pid}' in r.stderr and r.stderr.count('\n') == 1
    p.send_signal(signal.SIGKILL)
    p.communicate()
    assert os.path.exists(os.path.join(out, 'train.lock'))  # SIGKILL: nothing could clean up
    p = start_train(out, ws / 'data', '--init_from=resume', '--max_iters=100000', '--eval_interval=5')
    before = load(os.path.join(out, 'ckpt.pt'))['iter_num']
    t0 = time.time()
    while load(os.path.join(out, 'ckpt.pt'))['iter_num'] <= before:
        assert p.poll() is None and time.time() - t0 < 120
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and err.count('\n') == 1 and 'interrupted at iteration' in err, err
    assert sorted(os.listdir(out)) == ['ckpt.pt', 'metrics.jsonl', 'train_config.json']  # no temp file, no lock
    load(os.path.join(out, 'ckpt.pt'))


def test_ctrl_c_inside_torch_save_is_the_ctrl_c(ws, tmp_path):
    """Ctrl-C inside torch.save makes its zip writer raise a RuntimeError of its own while the interrupt unwinds (seen
    in a real run): still status 130 with train.py's one line, and the previous checkpoint kept."""
    out = str(tmp_path / 'out')
    common = [*TINY, f'--data_dir={ws / "data"}', f'--out_dir={out}', '--eval_interval=2']
    run('train.py', *common, '--max_iters=2', check=0)
    before = open(os.path.join(out, 'ckpt.pt'), 'rb').read()
    r = train_patched("import torch\n"
                      "def save(obj, f, *a, **k):\n"
                      "    try:\n"
                      "        f.write(b'PK half'); raise KeyboardInterrupt\n"
                      "    finally:\n"
                      "        raise RuntimeError('[enforce fail at inline_container.cc:672] . unexpected pos')\n"
                      "torch.save = save\n", *common, '--max_iters=4', '--init_from=resume')
    assert r.returncode == 130 and r.stderr.count('\n') == 1 and 'interrupted at iteration 4' in r.stderr, r.stderr
    assert open(os.path.join(out, 'ckpt.pt'), 'rb').read() == before and not [f for f in os.listdir(out) if '.tmp' in f]


@pytest.mark.parametrize('code', [errno.ENOSPC, errno.EROFS])
def test_full_disk_or_read_only_keeps_the_last_checkpoint(ws, tmp_path, code):
    out = str(tmp_path / 'out')
    common = [*TINY, f'--data_dir={ws / "data"}', f'--out_dir={out}', '--eval_interval=2']
    run('train.py', *common, '--max_iters=2', check=0)
    before = load(os.path.join(out, 'ckpt.pt'))
    r = train_patched("import os, torch\n"
                      "def failing_save(obj, f, *a, **k):\n"
                      "    f.write(b'PK half a checkpoint'); f.flush()\n"
                      f"    raise OSError({code}, os.strerror({code}))\n"
                      "torch.save = failing_save\n", *common, '--max_iters=4', '--init_from=resume')
    assert r.returncode == 1 and r.stderr.count('\n') == 1, r.stderr[-2000:]
    assert ('the disk is full' if code == errno.ENOSPC else 'read-only') in r.stderr
    assert 'still holds the previous checkpoint' in r.stderr and not [f for f in os.listdir(out) if '.tmp' in f]
    after = load(os.path.join(out, 'ckpt.pt'))
    assert after['iter_num'] == 2 and all(torch.equal(after['model'][k], v) for k, v in before['model'].items())


def test_full_disk_during_the_export_keeps_the_run(ws, tmp_path):
    """A full disk while save_hf writes out_dir/model: one line, the checkpoint of the finished run kept, no
    half-written model folder."""
    out = str(tmp_path / 'out')
    r = train_patched("import errno, os, safetensors.torch as st\n"
                      "def full(*a, **k):\n"
                      "    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))\n"
                      "st.save_file = full\n", *TINY, f'--data_dir={ws / "data"}', f'--out_dir={out}',
                      '--max_iters=2', '--eval_interval=2', '--save_hf=True')
    assert r.returncode == 1 and r.stderr.count('\n') == 1 and 'the disk is full' in r.stderr, r.stderr[-2000:]
    assert load(os.path.join(out, 'ckpt.pt'))['iter_num'] == 2 and not os.path.exists(os.path.join(out, 'model'))
    assert not [f for f in os.listdir(tmp_path) if f.startswith('.')]  # no temporary model folder left beside


def test_torn_metrics_line_is_cut_not_merged(ws, tmp_path):
    """A metrics.jsonl whose last line lost its end (a crash mid-write): the resumed run's records follow on their
    own lines; every line is a record."""
    out = str(tmp_path / 'out')
    common = [*TINY, f'--data_dir={ws / "data"}', f'--out_dir={out}', '--eval_interval=2']
    run('train.py', *common, '--max_iters=2', check=0)
    with open(os.path.join(out, 'metrics.jsonl'), 'a') as f:
        f.write('{"iter": 3, "tokens": 38')
    run('train.py', *common, '--max_iters=4', '--init_from=resume', check=0)
    rows = [json.loads(line) for line in open(os.path.join(out, 'metrics.jsonl'))]
    assert [r['iter'] for r in rows if 'train_loss' in r] == [1, 2, 3, 4]


def stop(target):  # a patch: `target` (module.function or module.Class.method) raises KeyboardInterrupt
    module, attr = target.split('.', 1)
    owner, name = (f"{module}.{attr.rsplit('.', 1)[0]}", attr.rsplit('.', 1)[1]) if '.' in attr else (module, attr)
    return f"import {module}\ndef _stop(*a, **k):\n    raise KeyboardInterrupt\nsetattr({owner}, {name!r}, _stop)\n"


CTRL_C = [('eval.py', ['--init_from=run', "--tasks=['val']", D, '--out_json=e.json'], 'data.estimate_loss'),
          ('data/prepare.py', ['--input=good.jsonl', '--out_dir=d', '--tokenizer=char', '--val_fraction=0.1'],
           'files.write_json'),
          ('sample.py', ['--init_from=run', '--max_new_tokens=5', '--start=the'], 'model.GPT.generate'),
          ('experiment.py', ['exp_ok.py', '--exp_dir=e'], 'files.write_json')]


@pytest.mark.parametrize('script, args, where', CTRL_C, ids=[c[0] for c in CTRL_C])
@pytest.mark.parametrize('when', ['start-up', 'work'])
def test_ctrl_c_anywhere_is_130_and_one_line(ws, script, args, where, when):
    """Ctrl-C while the script imports torch, or in the middle of its work (the call named): status 130, one line,
    no traceback, and the workspace as it was (nothing half-written)."""
    patch = STOP_AT_IMPORT if when == 'start-up' else stop(where)
    before = snapshot(ws)
    r = train_patched(patch, *args, script=script, cwd=ws)
    assert r.returncode == 130 and len(r.stderr.strip().splitlines()) == 1, r.stderr[-2000:]
    assert 'Traceback' not in r.stderr and snapshot(ws) == before


# ------------------------------------------------------------------ the rest of what a run promises
def test_resume_frees_the_loaded_checkpoint(ws, tmp_path):
    out = str(tmp_path / 'out')
    common = [*TINY, f'--data_dir={ws / "data"}', f'--out_dir={out}', '--eval_interval=2']
    run('train.py', *common, '--max_iters=2', check=0)
    r = train_patched("import gc, weakref, torch\n"
                      "class Ckpt(dict): pass\n"
                      "refs, real_load = [], torch.load\n"
                      "def load(*a, **k):\n"
                      "    r = real_load(*a, **k)\n"
                      "    if isinstance(r, dict) and 'optimizer' in r:\n"
                      "        r = Ckpt(r); refs.append(weakref.ref(r))\n"
                      "    return r\n"
                      "torch.load = load\n"
                      "real_clip = torch.nn.utils.clip_grad_norm_\n"
                      "def clip(*a, **k):\n"
                      "    gc.collect()\n"
                      "    print('alive', [r() is not None for r in refs])\n"
                      "    return real_clip(*a, **k)\n"
                      "torch.nn.utils.clip_grad_norm_ = clip\n", *common, '--max_iters=3', '--init_from=resume')
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'alive [False, False]' in r.stdout  # at the first training step nothing holds a loaded checkpoint


def test_ranks_draw_different_dropout_and_resume_exactly(ws, tmp_path):
    """Each rank seeds seed + rank (the data order stays a function of (seed, iteration)); every rank's RNG state is
    checkpointed, so 2 ranks x (2 + 4 iterations) with dropout equal 6 straight, bit for bit."""
    a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
    common = [*TINY, f'--data_dir={ws / "data"}', '--eval_interval=2', '--dropout=0.2',
              '--gradient_accumulation_steps=2', '--log_interval=3']
    tr = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
          os.path.join(REPO, 'train.py')]
    for args in ([f'--out_dir={a}', '--max_iters=2'], [f'--out_dir={a}', '--max_iters=6', '--init_from=resume'],
                 [f'--out_dir={b}', '--max_iters=6']):
        r = subprocess.run(tr + common + args, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
    ca, cb = load(os.path.join(a, 'ckpt.pt')), load(os.path.join(b, 'ckpt.pt'))
    assert len(cb['rng_ranks']) == 2 and not torch.equal(cb['rng_ranks'][0]['torch'], cb['rng_ranks'][1]['torch'])
    assert all(torch.equal(ca['model'][k], v) for k, v in cb['model'].items())


def test_eval_lr_and_which_weights_save_hf_wrote(ws, tmp_path):
    """An eval line's lr is that of the last iteration run, as on the train lines; with always_save_checkpoint=False
    the export says it holds the last weights and ckpt.pt the best, at best_iter."""
    out = str(tmp_path / 'out')
    run('train.py', *TINY, f'--data_dir={ws / "data"}', f'--out_dir={out}', '--max_iters=6', '--eval_interval=2',
        '--always_save_checkpoint=False', '--save_hf=True', '--learning_rate=0.3', check=0)
    rows = [json.loads(line) for line in open(os.path.join(out, 'metrics.jsonl'))]
    train_lr = {r['iter']: r['lr'] for r in rows if 'train_loss' in r}
    evals = [r for r in rows if 'val_loss' in r]
    assert evals[0]['lr'] is None and all(r['lr'] == train_lr[r['iter']] for r in evals[1:])
    best = min(evals[1:], key=lambda r: r['val_loss'])
    record = json.loads(open(os.path.join(out, 'model', 'config.json')).read())['growing_sparse']
    ckpt = load(os.path.join(out, 'ckpt.pt'))
    assert record['weights'] == 'last' and record['iter_num'] == 6
    assert record['best_iter'] == best['iter'] == ckpt['iter_num'] and record['best_val_loss'] == best['val_loss']


def test_peak_flops_per_h100_variant():
    from model import peak_flops_of
    assert peak_flops_of('NVIDIA H100 80GB HBM3') == 989e12 and peak_flops_of('NVIDIA H100 PCIe') == 756e12
    assert peak_flops_of('NVIDIA H100 NVL') == 835e12 and peak_flops_of('NVIDIA H200') == 989e12
    assert peak_flops_of('NVIDIA A100-SXM4-80GB') == 312e12 and peak_flops_of('NVIDIA GeForce GTX 1080') is None


def test_hub_download_fetches_one_weight_format(monkeypatch, tmp_path):
    import huggingface_hub
    from hf_io import resolve_model_dir
    asked = []
    monkeypatch.setattr(huggingface_hub, 'snapshot_download',
                        lambda repo, allow_patterns: asked.append(allow_patterns) or str(tmp_path))
    (tmp_path / 'config.json').write_text('{}')
    monkeypatch.setattr(huggingface_hub, 'list_repo_files',
                        lambda repo: ['config.json', 'model.safetensors', 'pytorch_model.bin', 'tokenizer.json'])
    resolve_model_dir('org/both-formats')
    monkeypatch.setattr(huggingface_hub, 'list_repo_files', lambda repo: ['config.json', 'pytorch_model.bin'])
    resolve_model_dir('org/bin-only')
    assert '*.safetensors' in asked[0] and not any('.bin' in p for p in asked[0])
    assert 'pytorch_model*.bin' in asked[1] and '*.safetensors' not in asked[1]


def test_pruned_model_keeps_its_zeros_when_continued(ws, tmp_path):
    """A one-shot (Wanda) export, a pruning run's export and a pruning run's ckpt.pt, each trained on without
    pruning: the pruned weights are still exactly 0 afterwards (masks start from the model's zeros)."""
    from hf_io import load_model
    common = [*[a for a in TINY if not a.startswith('--n_')], f'--data_dir={ws / "data"}']
    run('train.py', *common, f'--out_dir={tmp_path / "pruned"}', f'--init_from={ws / "run"}', '--max_iters=0',
        '--final_sparsity=0.6', '--score=wanda', '--calib_batches=2', '--save_hf=True', check=0)
    for i, src in enumerate(map(str, (tmp_path / 'pruned' / 'model', ws / 'run' / 'model', ws / 'run' / 'ckpt.pt'))):
        before = {n: w == 0 for n, w in load_model(src)[0].linear_weights().items()}
        out = str(tmp_path / f'cont{i}')
        run('train.py', *common, f'--out_dir={out}', f'--init_from={src}', '--max_iters=3', '--eval_interval=3',
            check=0)
        after = load_model(out)[0].linear_weights()
        assert sum(int(z.sum()) for z in before.values()) > 0
        assert all(bool((w[before[n]] == 0).all()) for n, w in after.items()), src


def test_first_log_line_excludes_compile_time(ws, tmp_path):
    """The first training iteration (where torch.compile compiles) is not timed: a first forward made to take 3 s
    does not show in the first log line's ms/iter."""
    out = str(tmp_path / 'out')
    r = train_patched("import time, model\n"
                      "real, slow = model.GPT.forward, [True]\n"
                      "def forward(self, *a, **k):\n"
                      "    if self.training and slow:\n"
                      "        slow.clear(); time.sleep(3)\n"
                      "    return real(self, *a, **k)\n"
                      "model.GPT.forward = forward\n", *TINY, f'--data_dir={ws / "data"}', f'--out_dir={out}',
                      '--max_iters=4', '--log_interval=2', '--eval_interval=4')
    assert r.returncode == 0, r.stderr[-2000:]
    speeds = [row['tok_per_sec'] for row in map(json.loads, open(os.path.join(out, 'metrics.jsonl')))
              if 'train_loss' in row]
    assert speeds[0] is not None and speeds[0] > 0.5 * speeds[1]

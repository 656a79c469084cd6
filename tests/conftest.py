"""Shared test set-up: the offline data beside the repo, no hub access, and a tiny prepared dataset."""
import os
import random
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.environ.get('SHARED_DATA', os.path.join(os.path.dirname(REPO), 'shared', 'data'))
sys.path.insert(0, REPO)
if os.path.isdir(os.path.join(SHARED_DATA, 'tiktoken_cache')):
    os.environ.setdefault('TIKTOKEN_CACHE_DIR', os.path.join(SHARED_DATA, 'tiktoken_cache'))
os.environ.setdefault('HF_HUB_OFFLINE', '1')  # a test that reaches for the hub fails fast instead of hanging
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
    """A prepared character-level dataset (train.bin, val.bin, meta.json) of 400 random sentences."""
    from data.prepare import char_alphabet, write_dataset
    from data.tokenizer import get_tokenizer
    rng = random.Random(0)
    words = ['the', 'sparse', 'model', 'grows', 'wider', 'and', 'deeper', 'while', 'pruning', 'weights']
    docs = [' '.join(rng.choice(words) for _ in range(rng.randint(20, 60))) + '.' for _ in range(400)]
    d = str(tmp_path_factory.mktemp('chars'))
    write_dataset(d, docs, get_tokenizer('char', chars=char_alphabet(docs)), source='test', val_fraction=0.1,
                  num_proc=1)
    return d


def train_patched(patch, *args, timeout=120, script='train.py', cwd=REPO):
    """A script (train.py) run as a user runs it, after `patch` (Python source) has run in the same process: how a
    test injects a crash mid-save, a full disk, Ctrl-C at a chosen point, or watches what the script does."""
    import subprocess
    driver = (f"import sys\nsys.path.insert(0, {REPO!r})\n" + patch + "\nimport runpy\n"
              f"sys.argv = [{script!r}] + sys.argv[1:]\nrunpy.run_path({os.path.join(REPO, script)!r}, "
              "run_name='__main__')\n")
    return subprocess.run([sys.executable, '-c', driver, *args], cwd=cwd, env=dict(os.environ, OMP_NUM_THREADS='1'),
                          capture_output=True, text=True, timeout=timeout)


# a patch for train_patched: Ctrl-C lands in the script's first `import torch` or `import numpy`, after configurator
# (the interpreter's start is not ours); raised there, not sent by a timer, whose signal can arrive after start-up on a
# fast machine or vanish in a bare except
STOP_AT_IMPORT = ("import builtins\nimport configurator\n_import = builtins.__import__\n"
                  "def _stop(name, *a, **k):\n    if name in ('torch', 'numpy'):\n        raise KeyboardInterrupt\n"
                  "    return _import(name, *a, **k)\nbuiltins.__import__ = _stop\n")


SERVER = r'''
import atexit, json, os, runpy, signal, sys, tempfile, traceback
sys.path.insert(0, sys.argv[1])
import configurator, numpy, torch, transformers, safetensors, tokenizers  # noqa: the imports every case shares
import files, model, hf_io, prune, expand, data, data.tokenizer, data.prepare, byte_pool  # noqa
for line in sys.stdin:
    case = json.loads(line)
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    pid = os.fork()
    if pid == 0:  # the child runs the script as `python script args` would, then exits with its status
        code = 1
        try:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            signal.alarm(case['timeout'])
            os.chdir(case['cwd'])
            os.environ.update(case['env'])
            atexit._clear()
            sys.argv = [case['script']] + case['args']
            exec(case['patch'], {})
            try:
                runpy.run_path(os.path.join(case['repo'], case['script']), run_name='__main__')
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 0 if e.code is None else (
                    print(e.code, file=sys.stderr) or 1)
            except BaseException:
                sys.excepthook(*sys.exc_info())
            atexit._run_exitfuncs()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    out.seek(0), err.seek(0)
    print(json.dumps(dict(status=status, stdout=out.read().decode(errors='replace'),
                          stderr=err.read().decode(errors='replace'))), flush=True)
'''


_server = []  # the one server process, started by the first run_script


def run_script(script, *args, cwd=REPO, patch='', env=None, timeout=300):
    """`python script args` as a user runs it (cwd, env added to this process's), in a child forked from one server
    process that has imported torch and the project once, so a run costs no start-up (~3 s of imports each): a
    subprocess.CompletedProcess. patch: Python run in the child first (a full disk, a read-only place)."""
    import atexit
    import json
    import subprocess
    if not _server:
        _server.append(subprocess.Popen([sys.executable, '-c', SERVER, REPO], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True,
                                        env=dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')))
        atexit.register(lambda: (_server[0].stdin.close(), _server[0].wait(timeout=30)))
    proc = _server[0]
    proc.stdin.write(json.dumps(dict(script=script, args=list(args), cwd=str(cwd), patch=patch, env=env or {},
                                     timeout=timeout, repo=REPO)) + '\n')
    proc.stdin.flush()
    r = json.loads(proc.stdout.readline())
    return subprocess.CompletedProcess([script, *args], r['status'], r['stdout'], r['stderr'])


@pytest.fixture(scope='session')
def script_runner():
    """run(script, *args, cwd=..., patch='', env=None) -> (status, stdout, stderr), through run_script."""
    def run(*args, timeout=120, **kw):
        r = run_script(*args, timeout=timeout, **kw)
        return r.returncode, r.stdout, r.stderr
    return run

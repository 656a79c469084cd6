"""files: claim (one owner per folder, and what a killed owner left behind) and append_jsonl (a torn line cut)."""
import os
import subprocess
import sys

import files


def test_claim_takes_over_a_stale_lock_and_removes_its_temp_files(tmp_path):
    """A run killed mid-write (SIGKILL: no cleanup) leaves its lock and a ckpt.pt.tmp<pid>; the next run takes the
    lock over and removes that pid's temp files, and only those; a live holder is refused."""
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True,
                          text=True).stdout.strip()
    out = tmp_path / 'out'
    (out / 'model').mkdir(parents=True)
    (out / 'train.lock').write_text(f"{dead} {os.uname().nodename}\n")
    for name in (f'ckpt.pt.tmp{dead}', f'model/model.safetensors.tmp{dead}', f'ckpt.pt.tmp{dead}0', 'ckpt.pt'):
        (out / name).write_text('x')
    assert files.claim(str(out)) is None
    assert (out / 'train.lock').read_text().split()[0] == str(os.getpid())
    assert sorted(os.listdir(out)) == ['ckpt.pt', f'ckpt.pt.tmp{dead}0', 'model', 'train.lock']
    assert os.listdir(out / 'model') == []
    live = tmp_path / 'live'
    live.mkdir()
    (live / 'train.lock').write_text(f"{os.getppid()} {os.uname().nodename}\n")
    assert f'in use by pid {os.getppid()}' in files.claim(str(live))


def test_append_jsonl_cuts_a_torn_last_line_of_any_length(tmp_path):
    """A last line without its newline (a crash mid-write) is cut back to the last newline before the next record,
    however long it is (one longer than a read-back window was once merged); a whole file is appended to as it is."""
    path = str(tmp_path / 'metrics.jsonl')
    for torn in ('', '{"iter": 3, "tok', '{"iter": 3, "text": "' + 'x' * 100_000):
        with open(path, 'w') as f:
            f.write('{"iter": 1}\n{"iter": 2}\n' + torn)
        files.append_jsonl(path, {'iter': 4})
        assert open(path).read() == '{"iter": 1}\n{"iter": 2}\n{"iter": 4}\n', torn[:20]
    open(path, 'w').write('x' * 70_000)  # nothing but a torn line: nothing to keep
    files.append_jsonl(path, {'iter': 1})
    assert open(path).read() == '{"iter": 1}\n'

"""files.claim: one owner per folder, and what a killed owner left behind."""
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
